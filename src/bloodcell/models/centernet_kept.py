"""A CenterNet adapted to a lab beside the CenterNet it was adapted from, which keeps the classes the lab did not label.

``bloodcell detector adapt`` fine-tunes the detector on a lab's reviewed photos. A class with no
labelled example among them (a lab that boxes no platelets) must keep the original detector's
behaviour: its detections come from the original network, unchanged, and those of the other
classes from the adapted one. Registered as ``centernet-lite0-kept`` (kind ``detector``) so that
:func:`bloodcell.checkpoint.load_checkpoint` rebuilds it; ``kept`` names the original's classes.
Counting runs both networks (twice the time of one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from bloodcell.data.boxes import SMEAR_LABELS as LABELS
from bloodcell.data.boxes import Box
from bloodcell.errors import ConfigError
from bloodcell.models.backbones import normalisation
from bloodcell.models.centernet import BACKBONE, DEFAULT_INPUT_SIZE, CenterNet
from bloodcell.models.registry import register_model

MODEL_NAME = "centernet-lite0-kept"
#: A score threshold no heatmap probability reaches: the class is left to the other network.
NEVER = 2.0


def kept_indices(kept: str) -> tuple[int, ...]:
    """Class indices of a comma-separated list of smear class names (``"Platelets"``)."""
    names = [name.strip() for name in kept.split(",") if name.strip()]
    unknown = [name for name in names if name not in LABELS]
    if unknown or not names or len(names) == len(LABELS):
        raise ConfigError(f"kept classes must be some, not all, of {', '.join(LABELS)}; got {kept!r}")
    return tuple(sorted(LABELS.index(name) for name in set(names)))


class KeptClassesCenterNet(nn.Module):
    """``adapted`` detects every class but the ``kept`` ones, which ``original`` detects."""

    def __init__(self, num_classes: int, kept: Sequence[int], shared_head: bool = False) -> None:
        super().__init__()
        self.adapted = CenterNet(num_classes, shared_head=shared_head)
        self.original = CenterNet(num_classes, shared_head=shared_head)
        self.kept = tuple(kept)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The adapted network's outputs (its heatmaps of the kept classes are not used by :meth:`detect`)."""
        return self.adapted(x)

    @torch.no_grad()
    def detect(self, image: torch.Tensor, thresholds: Sequence[float], image_size: tuple[int, int]) -> list[Box]:
        own = [NEVER if i in self.kept else t for i, t in enumerate(thresholds)]
        theirs = [t if i in self.kept else NEVER for i, t in enumerate(thresholds)]
        return self.adapted.detect(image, own, image_size) + self.original.detect(image, theirs, image_size)


@register_model(MODEL_NAME, input_size=DEFAULT_INPUT_SIZE, kind="detector", tags=("detector", "smear", "adapted"),
                **normalisation(BACKBONE))
def centernet_lite0_kept(num_classes: int, pretrained: bool | str | Path = False, input_size: int | None = None,
                         shared_head: bool = False, kept: str = "Platelets") -> KeptClassesCenterNet:
    """An adapted smear detector whose unlabelled classes stay the original's (built from a checkpoint only)"""
    if pretrained:
        raise ConfigError(f"{MODEL_NAME} is made by 'bloodcell detector adapt', not trained from ImageNet weights")
    return KeptClassesCenterNet(num_classes, kept_indices(kept), shared_head=shared_head)
