"""The one model registry: entries registered by the model modules with :func:`register_model`.

Registered entries (paper reproductions, classical ``sk/...`` pipelines, backbones, detector
nets) carry their own data config. Building goes through :mod:`bloodcell.models.factory`
(``create_model``), which imports every module that registers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bloodcell.transforms import IMAGENET_MEAN, IMAGENET_STD, DataConfig


@dataclass(frozen=True)
class PaperInfo:
    """What a paper reproduction's source states, for ``bloodcell models info``.

    ``claims`` maps a figure's name to the paper's own wording of it (not our measurements);
    ``printed_params`` / ``printed_trainable_params`` are the counts of the paper's printed
    model summary for ``printed_num_classes`` outputs (``None`` where the paper prints none);
    ``input_note`` says where the input size comes from; ``choices`` lists every decision made
    where the paper is silent or contradicts itself; ``recipe`` names the training-recipe file as shipped
    in the package (``bloodcell/resources/configs/papers/NAME.json``).
    """

    citation: str
    claims: dict[str, str] = field(default_factory=dict)
    printed_params: int | None = None
    printed_trainable_params: int | None = None
    printed_num_classes: int | None = None
    input_note: str = ""
    choices: tuple[str, ...] = ()
    recipe: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    """A registry entry. ``kind`` is ``"torch"`` (a cell classifier), ``"sklearn"`` or ``"detector"``."""

    name: str
    builder: Callable[..., Any]
    data_config: DataConfig
    kind: str = "torch"
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    paper: PaperInfo | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    input_size: int,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    interpolation: str = "bilinear",
    kind: str = "torch",
    description: str = "",
    tags: tuple[str, ...] = (),
    paper: PaperInfo | None = None,
):
    """Decorator registering ``builder(num_classes, pretrained, **kwargs)`` under ``name``.

    ``paper`` (a :class:`PaperInfo`) documents a published model's source for ``models info``.
    """

    def decorator(builder):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = description or next(iter((builder.__doc__ or "").strip().splitlines()), "")
        _REGISTRY[name] = ModelEntry(
            name=name,
            builder=builder,
            data_config=DataConfig(input_size, tuple(mean), tuple(std), interpolation),
            kind=kind,
            description=doc,
            tags=tuple(tags),
            paper=paper,
        )
        return builder

    return decorator


def registered(name: str) -> ModelEntry | None:
    """The entry registered under ``name``, or None (see :func:`bloodcell.models.get_model_entry`)."""
    return _REGISTRY.get(name)


def registered_entries() -> list[ModelEntry]:
    """Every registered entry, sorted by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]
