"""The one model registry: ``create_model(name, num_classes, pretrained=...)`` builds every model.

Registered entries (paper reproductions, classical ``sk/...`` pipelines) carry their own
data config; any other name is looked up in timm. Every torch model returned carries a
``data_config`` attribute (a :class:`DataConfig`) and ``model_name``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bloodcell.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig:
    """What a model expects as input: square size, normalisation, resize interpolation, classes."""

    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    class_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataConfig":
        return cls(
            input_size=int(data["input_size"]),
            mean=tuple(float(v) for v in data.get("mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in data.get("std", IMAGENET_STD)),
            interpolation=str(data.get("interpolation", "bilinear")),
            class_names=tuple(data.get("class_names", ())),
        )

    def with_classes(self, class_names) -> "DataConfig":
        return replace(self, class_names=tuple(class_names))


@dataclass(frozen=True)
class ModelEntry:
    """A registry entry. ``kind`` is ``"torch"`` (a cell classifier), ``"sklearn"`` or ``"detector"``."""

    name: str
    builder: Callable[..., Any]
    data_config: DataConfig
    kind: str = "torch"
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


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
):
    """Decorator registering ``builder(num_classes, pretrained, **kwargs)`` under ``name``."""

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
        )
        return builder

    return decorator


def _load_entries() -> None:
    """Import the modules that register models (kept lazy so importing bloodcell stays cheap)."""
    from bloodcell.models import backbones, classical, papers  # noqa: F401
    from bloodcell.smear import centernet  # noqa: F401  (the learned smear detector)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; timm names get a generic entry on the fly."""
    _load_entries()
    if name in _REGISTRY:
        return _REGISTRY[name]
    from bloodcell.models.backbones import timm_entry

    entry = timm_entry(name)
    if entry is None:
        raise ConfigError(
            f"unknown model {name!r}; run 'bloodcell models list' to see the registered names "
            "(any timm model name is accepted too)"
        )
    return entry


def list_models() -> list[ModelEntry]:
    """All registered entries, sorted by name."""
    _load_entries()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool | str = False,
    class_names=None,
    input_size: int | None = None,
    **kwargs,
):
    """Build model ``name`` with ``num_classes`` outputs.

    ``pretrained`` is ``False``, ``True`` (offline weights from an installed package where one
    exists, else timm's download), or a path to a local weights file. ``input_size`` overrides the entry's default.
    """
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    if class_names is not None and len(class_names) != num_classes:
        raise ConfigError(f"{len(class_names)} class names given for {num_classes} classes")
    entry = get_model_entry(name)
    data_config = entry.data_config
    if input_size is not None:
        data_config = replace(data_config, input_size=int(input_size))
    if class_names is not None:
        data_config = data_config.with_classes(class_names)
    model = entry.builder(num_classes=num_classes, pretrained=pretrained, input_size=data_config.input_size, **kwargs)
    model.data_config = data_config
    model.model_name = name
    return model
