"""Training configuration: defaults -> config file (JSON or TOML) -> command-line flags."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from bloodcell.errors import ConfigError
from bloodcell.resources import config_path
from bloodcell.train.run import SCHEDULES
from bloodcell.transforms import AUGMENTATIONS, FRAMINGS, RESIZES
from bloodcell.writing import write_json

OPTIMIZERS = ("adamw", "adam", "sgd")


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as ``config.json`` in the run folder.

    ``batch_size`` is per process (as in torchvision's references) when run under torchrun.
    ``input_size`` of ``None`` keeps the model's own input size; ``dataset`` of ``None`` takes
    the manifest's dataset. ``taxonomy`` is ``pbc8``, ``pbc11`` or ``labels`` (the manifest's own
    sorted labels, for a folder dataset with its own classes). Fine-tuning: ``init_from`` (a
    checkpoint path or bundled model name) gives the starting weights (over other classes: the
    backbone only), and the train splits of the ``extra_train`` manifests (each seen
    ``extra_repeat`` times per epoch) join the manifest's train split; validation stays on the
    manifest's val split. ``pretrained_weights`` is a local file of the ImageNet weights ``pretrained`` loads
    (instead of the offline package or timm's download). ``checkpoint_every_s`` also saves ``last.pt``
    within an epoch, every so many seconds (single-process runs), for epochs too long to lose. ``resize``
    is how images become the model's square input: ``crop`` (shorter
    side, then a centre crop) or ``squash`` (both sides, the aspect ratio not kept).
    """

    model: str = "resnet18"
    dataset: str | None = None
    taxonomy: str = "pbc8"
    manifest: str | None = None
    data_root: str | None = None
    out: str | None = None
    pretrained: bool = False
    pretrained_weights: str | None = None
    input_size: int | None = None
    epochs: int = 30
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    class_weights: bool = False
    augment: str = "flips"
    framing: str = "none"
    resize: str = "crop"
    style_bank: str | None = None
    freeze_epochs: int = 0
    early_stopping_patience: int | None = None
    seed: int = 0
    threads: int | None = None
    workers: int = 0
    cache: bool = True
    cache_dir: str | None = None
    channels_last: bool = True
    limit_train: int | None = None
    limit_val: int | None = None
    time_budget_s: float | None = None
    checkpoint_every_s: float | None = None
    ema: bool = False
    ema_decay: float = 0.999
    init_from: str | None = None
    extra_train: list[str] = field(default_factory=list)
    extra_repeat: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError with one sentence for the first invalid value."""
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("augment", self.augment, AUGMENTATIONS)
        _choice("framing", self.framing, FRAMINGS)
        _choice("resize", self.resize, RESIZES)
        for name in ("epochs", "batch_size", "extra_repeat"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr",):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "warmup_epochs", "freeze_epochs", "workers"):
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        for name in ("input_size", "limit_train", "limit_val", "early_stopping_patience", "threads"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ConfigError(f"{name} must be at least 1 when given, got {value}")
        if self.pretrained_weights and not self.pretrained:
            raise ConfigError("pretrained_weights needs pretrained: true (they are the weights it loads)")
        for name in ("time_budget_s", "checkpoint_every_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be positive when given, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping, rejecting unknown keys and converting JSON/TOML scalars."""
        return cls(**_coerce(data))


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


_FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def _coerce(data: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(data) - set(_FIELD_TYPES))
    if unknown:
        raise ConfigError(f"unknown training option(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        kind = str(_FIELD_TYPES[key])
        if value is None:
            if "None" not in kind:
                raise ConfigError(f"training option {key} cannot be empty")
            out[key] = None
            continue
        try:
            if kind.startswith("bool"):
                if not isinstance(value, bool):
                    raise ValueError
                out[key] = value
            elif kind.startswith("int"):
                if isinstance(value, bool) or float(value) != int(value):
                    raise ValueError
                out[key] = int(value)
            elif kind.startswith("float"):
                if isinstance(value, bool):
                    raise ValueError
                out[key] = float(value)
            elif kind.startswith("list"):
                items = [value] if isinstance(value, str) else value
                if not isinstance(items, (list, tuple)):
                    raise ValueError
                out[key] = [str(item) for item in items]
            else:
                out[key] = str(value)
        except (TypeError, ValueError):
            raise ConfigError(f"training option {key} has an invalid value {value!r} (expected {kind})") from None
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Options from a ``.json`` or ``.toml`` file (a flat table of TrainConfig fields), or a shipped config's name."""
    path = config_path(path)
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            raise ConfigError(f"{path}: config files must be .json or .toml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse config file ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config file must hold a table of options")
    return _coerce(data)


def resolve_config(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None,
                   base: dict[str, Any] | None = None) -> TrainConfig:
    """Layer ``base`` (defaults if None) < config file < overrides; ``None`` overrides are ignored."""
    merged = TrainConfig().to_dict() if base is None else TrainConfig.from_dict(base).to_dict()
    if config_file is not None:
        merged.update(read_config_file(config_file))
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig.from_dict(merged)


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write the resolved config as JSON (loadable again with ``--config``)."""
    return write_json(path, config.to_dict())
