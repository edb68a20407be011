"""A classifier's last layer: finding it, and the gated head ``bloodcell adapt`` writes.

An adapted model refits its last layer on a lab's cells (:mod:`bloodcell.train.head`). A class the lab gave
no cells may be *gated*: a cell the model's own layer types as that class stays typed so, whatever the
adapted layer says, so adapting cannot lose the class's cells. :class:`GatedHead` holds both layers and
returns one logits tensor: the adapted layer's, or, where the own layer's top class is gated, the own
layer's logits times ``scale`` (the adapted temperature over the model's own, so that the adapted
checkpoint's temperature turns them into the model's own calibrated probabilities). The checkpoint says
so in its model options (:data:`GATE_OPTIONS`), which :func:`bloodcell.models.create_model` takes for any
torch classifier, so the one loader rebuilds the head and ONNX exports it (``Where`` on an ``ArgMax``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bloodcell.errors import ConfigError

#: The model options of a gated head: the gated class indices (comma-separated) and the own layer's scale.
GATE_OPTIONS = ("gated_classes", "gated_scale")


class GatedHead(nn.Module):
    """``adapted`` decides, except where ``own``'s top class is one of ``gated`` (indices): then ``own * scale``."""

    def __init__(self, adapted: nn.Module, own: nn.Module, gated: list[int], num_classes: int, scale: float) -> None:
        super().__init__()
        self.adapted, self.own = adapted, own
        mask = torch.zeros(num_classes, dtype=torch.bool)
        mask[list(gated)] = True
        self.register_buffer("gated", mask, persistent=False)  # rebuilt from the model options, not stored
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        own = self.own(x)
        kept = self.gated[own.argmax(dim=1, keepdim=True)]
        return torch.where(kept, own * self.scale, self.adapted(x))


def classifier_layer(model: nn.Module) -> nn.Module:
    """The final classification layer: a :class:`GatedHead`, timm's ``get_classifier()`` or else the last
    ``nn.Linear`` (or ``nn.Conv2d``)."""
    gated = [m for m in model.modules() if isinstance(m, GatedHead)]
    if gated:
        return gated[-1]
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return head
    linears = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not linears:
        raise TypeError(f"{type(model).__name__} has no Linear/Conv2d classifier layer")
    return linears[-1]


def gated_indices(gated_classes: str, num_classes: int) -> list[int]:
    """Class indices of a comma-separated list (``"1,9"``): some, not all, of ``num_classes``; ConfigError else."""
    try:
        indices = sorted({int(part) for part in str(gated_classes).split(",")})
    except ValueError:
        indices = []
    if not indices or indices[0] < 0 or indices[-1] >= num_classes or len(indices) == num_classes:
        raise ConfigError(f"gated_classes must list some, not all, class indices below {num_classes}; "
                          f"got {str(gated_classes)[:40]!r}")
    return indices


def gate_classifier(model: nn.Module, num_classes: int, gated_classes: str, gated_scale: float) -> GatedHead:
    """Put a :class:`GatedHead` where ``model``'s last layer is (that layer becomes its ``adapted`` layer, a copy
    its ``own``); the weights of both are then loaded or set."""
    if not 0.01 <= float(gated_scale) <= 100:
        raise ConfigError(f"gated_scale must be between 0.01 and 100, got {gated_scale}")
    layer = classifier_layer(model)
    if isinstance(layer, GatedHead):
        raise ConfigError("the model's last layer is gated already")
    head = GatedHead(layer, copy.deepcopy(layer), gated_indices(gated_classes, num_classes), num_classes,
                     float(gated_scale))
    name = next(n for n, m in model.named_modules() if m is layer)
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, head)
    return head
