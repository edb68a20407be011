"""A classifier's last layer: finding it, and the gated head ``bloodcell adapt`` writes.

An adapted model refits its last layer on a lab's cells (:mod:`bloodcell.train.head`). A class the lab gave
no cells may be *gated*: a cell the model's own layer types as that class stays typed so, whatever the
adapted layer says, so adapting cannot lose the class's cells. :class:`GatedHead` holds both layers and
returns one logits tensor: the adapted layer's, or, where the own layer's top class is gated, the own
layer's logits times ``scale`` (the adapted temperature over the model's own, so that the adapted
checkpoint's temperature turns them into the model's own calibrated probabilities). A gated class may have a
*floor*: its cells are kept only where the own layer's confidence in it is above the floor (a type the lab sees but
gave fewer than 5 cells of, kept on the user's word: ``bloodcell adapt --keep``). The confidence is the top class's
log-odds, its logit less the log-sum-exp of the others' (the log of p / (1 - p) at temperature 1), which, unlike a
probability, does not round to 1 in float32 when the model is very sure. The checkpoint says
so in its model options (:data:`GATE_OPTIONS`, and :data:`GATE_FLOORS` where a class has a floor), which
:func:`bloodcell.models.create_model` takes for any torch classifier, so the one loader rebuilds the head and ONNX
exports it (``Where`` on an ``ArgMax``).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from bloodcell.errors import ConfigError

#: The model options of a gated head: the gated class indices (comma-separated) and the own layer's scale...
GATE_OPTIONS = ("gated_classes", "gated_scale")
#: ... and, optionally, the floors of some gated classes ("index:floor", comma-separated).
GATE_FLOORS = "gated_floors"


class GatedHead(nn.Module):
    """``adapted`` decides, except where ``own``'s top class is one of ``gated`` (indices) and its log-odds are above
    that class's floor (``floors``, index to floor; none: any): then ``own * scale``."""

    def __init__(self, adapted: nn.Module, own: nn.Module, gated: list[int], num_classes: int, scale: float,
                 floors: dict[int, float] | None = None) -> None:
        super().__init__()
        self.adapted, self.own = adapted, own
        mask = torch.zeros(num_classes, dtype=torch.bool)
        mask[list(gated)] = True
        floor = torch.full((num_classes,), float("-inf"))
        for index, value in (floors or {}).items():
            floor[index] = float(value)
        self.register_buffer("gated", mask, persistent=False)  # rebuilt from the model options, not stored
        self.register_buffer("floor", floor, persistent=False)
        self.register_buffer("classes", torch.arange(num_classes), persistent=False)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        own = self.own(x)
        top = own.argmax(dim=1, keepdim=True)
        others = own.masked_fill(self.classes == top, float("-inf"))
        log_odds = own.gather(1, top) - torch.logsumexp(others, dim=1, keepdim=True)
        kept = self.gated[top] & (log_odds > self.floor[top])
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


def parse_floors(floors: str, gated: list[int]) -> dict[int, float]:
    """Floors of a comma-separated ``"index:floor"`` list (``"1:2.5"``, log-odds): each a gated class, once, at a
    finite floor; ConfigError else."""
    parsed: dict[int, float] = {}
    for part in str(floors).split(","):
        index, _, value = part.partition(":")
        try:
            key, floor = int(index), float(value)
        except ValueError:
            key, floor = -1, math.nan
        if key not in gated or key in parsed or not math.isfinite(floor):
            raise ConfigError(f"gated_floors must give gated classes, once each, a finite floor as index:floor; "
                              f"got {str(floors)[:60]!r}")
        parsed[key] = floor
    return parsed


def gate_classifier(model: nn.Module, num_classes: int, gated_classes: str, gated_scale: float,
                    gated_floors: str | None = None) -> GatedHead:
    """Put a :class:`GatedHead` where ``model``'s last layer is (that layer becomes its ``adapted`` layer, a copy
    its ``own``); the weights of both are then loaded or set."""
    if not 0.01 <= float(gated_scale) <= 100:
        raise ConfigError(f"gated_scale must be between 0.01 and 100, got {gated_scale}")
    layer = classifier_layer(model)
    if isinstance(layer, GatedHead):
        raise ConfigError("the model's last layer is gated already")
    gated = gated_indices(gated_classes, num_classes)
    floors = parse_floors(gated_floors, gated) if gated_floors is not None else None
    head = GatedHead(layer, copy.deepcopy(layer), gated, num_classes, float(gated_scale), floors)
    name = next(n for n, m in model.named_modules() if m is layer)
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, head)
    return head
