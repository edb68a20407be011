"""Training configuration, one mechanism for every trainer: defaults -> run being resumed -> config file
(JSON or TOML) -> command-line flags.

:class:`RunConfig` is the base of :class:`TrainConfig` (classifier) and
:class:`~bloodcell.train.detector.DetectorTrainConfig` (smear detector): a flat dataclass of options whose
``resolve(config_file, overrides, resume=...)`` reads a file through :func:`read_config_file`, refuses unknown
options in one sentence, converts JSON/TOML scalars to the fields' types, layers the flags the user gave and, on
``--resume``, starts from the run folder's saved ``config.json`` (changing only the ``RESUMABLE`` options when a
trainer names them).
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import tomllib

from bloodcell.checkpoint import MAX_INPUT_SIZE
from bloodcell.errors import ConfigError
from bloodcell.resources import config_path
from bloodcell.train.run import SCHEDULES
from bloodcell.transforms import AUGMENTATIONS, FRAMINGS, RESIZES
from bloodcell.writing import write_json

C = TypeVar("C", bound="RunConfig")
#: The saved configuration in a run folder (what ``--resume`` starts from).
CONFIG_FILE = "config.json"


class RunConfig:
    """Base of the trainers' configurations (dataclasses of flat options; see the module doc).

    ``LABEL`` names the options in messages ("unknown training option(s): ..."); ``FLAGS`` spells the options
    whose command-line flag is not ``--<name-with-dashes>``; ``RESUMABLE`` lists the options a resumed run may
    change (``None``: any, the trainer checking what it must keep itself).
    """

    LABEL: ClassVar[str] = "training"
    FLAGS: ClassVar[dict[str, str]] = {"out": "--output", "time_budget_s": "--time-budget"}
    RESUMABLE: ClassVar[tuple[str, ...] | None] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def flag(cls, name: str) -> str:
        """The command-line flag of option ``name``."""
        return cls.FLAGS.get(name, f"--{name.replace('_', '-')}")

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from a mapping, rejecting unknown keys and converting JSON/TOML scalars."""
        options = coerce(cls, data)
        for f in fields(cls):
            if f.default is MISSING and f.default_factory is MISSING and f.name not in options:
                raise ConfigError(f"no {f.name} given; pass {cls.flag(f.name)} or set {f.name} in the config file")
        return cls(**options)

    @classmethod
    def resolve(cls: type[C], config_file: str | Path | None = None, overrides: dict[str, Any] | None = None, *,
                resume: bool = False) -> C:
        """Layer the defaults < config file < ``overrides`` (``None`` values ignored: flags not given).

        With ``resume`` the bottom layer is the saved config of the run folder named by ``out`` (flag or file),
        and only ``RESUMABLE`` options may differ from it.
        """
        layers = read_config_file(config_file, cls) if config_file is not None else {}
        layers.update(coerce(cls, {k: v for k, v in (overrides or {}).items() if v is not None}))
        saved = read_run_config(layers.get("out"), cls) if resume else {}
        if resume:
            _check_resumable(cls, saved, layers)
        return cls.from_dict({**saved, **layers})


def _check_resumable(cls: type[RunConfig], saved: dict[str, Any], changes: dict[str, Any]) -> None:
    if cls.RESUMABLE is None:
        return
    for key, value in changes.items():
        if key not in cls.RESUMABLE and value != saved.get(key):
            raise ConfigError(f"{cls.flag(key)} differs from the run being resumed ({saved.get(key)!r}); "
                              f"only {', '.join(cls.RESUMABLE)} may change on --resume")


OPTIMIZERS = ("adamw", "adam", "sgd")


@dataclass
class TrainConfig(RunConfig):
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
        if self.input_size is not None and int(self.input_size) > MAX_INPUT_SIZE:
            raise ConfigError(f"input_size must be at most {MAX_INPUT_SIZE} pixels (what a checkpoint may record), "
                              f"got {self.input_size}")
        if self.pretrained_weights and not self.pretrained:
            raise ConfigError("pretrained_weights needs pretrained: true (they are the weights it loads)")
        for name in ("time_budget_s", "checkpoint_every_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be positive when given, got {value}")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _kind(f) -> str:
    """A field's type as written (``int | None``, ``tuple[float, float]``, ``list[str]``)."""
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def _items(value: Any, item: str) -> list[Any]:
    """A list or tuple option from a sequence or a comma-separated string, its items as ``item`` (float or str)."""
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or any(isinstance(v, (bool, dict, list)) for v in items):
        raise ValueError
    if item != "float":
        return [str(v) for v in items]
    numbers = [float(v) for v in items]
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError
    return numbers


def coerce(cls: type[RunConfig], data: dict[str, Any]) -> dict[str, Any]:
    """``data``'s options converted to ``cls``'s field types; ConfigError (one sentence) for an unknown option or
    a value of the wrong type (a number that is not finite included)."""
    kinds = {f.name: _kind(f) for f in fields(cls)}
    unknown = sorted(set(data) - set(kinds))
    if unknown:
        raise ConfigError(f"unknown {cls.LABEL} option(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        kind = kinds[key]
        if value is None:
            if "None" not in kind:
                raise ConfigError(f"{cls.LABEL} option {key} cannot be empty")
            out[key] = None
            continue
        try:
            if kind.startswith("bool"):
                if not isinstance(value, bool):
                    raise ValueError
                out[key] = value
            elif kind.startswith("int"):
                if isinstance(value, bool) or not math.isfinite(float(value)) or float(value) != int(value):
                    raise ValueError
                out[key] = int(value)
            elif kind.startswith("float"):
                if isinstance(value, bool) or not math.isfinite(float(value)):
                    raise ValueError  # TOML's inf and nan, or flags "nan": never a silently wrong option
                out[key] = float(value)
            elif kind.startswith(("list[", "tuple[")):
                items = _items(value, "float" if "[float" in kind else "str")
                out[key] = items if kind.startswith("list[") else tuple(items)
            else:
                if isinstance(value, (dict, list, tuple)):
                    raise ValueError
                out[key] = str(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{cls.LABEL} option {key} has an invalid value {value!r} (expected {kind})") from None
    return out


def _read_table(path: Path) -> dict[str, Any]:
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            raise ConfigError(f"{path}: config files must be .json or .toml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot parse config file ({exc})") from exc
    except RecursionError:
        raise ConfigError(f"{path}: cannot parse config file (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config file must hold a table of options")
    return data


def read_config_file(path: str | Path, cls: type[RunConfig] | None = None) -> dict[str, Any]:
    """Options of ``cls`` (default :class:`TrainConfig`) from a ``.json`` or ``.toml`` file (a flat table), or a
    shipped config's name."""
    return coerce(cls or TrainConfig, _read_table(config_path(path)))


def read_run_config(out: str | Path | None, cls: type[RunConfig] | None = None) -> dict[str, Any]:
    """The options saved in run folder ``out``'s config.json (the run ``--resume`` continues)."""
    if out is None:
        raise ConfigError("--resume needs --output DIR pointing at the run to continue")
    path = Path(out) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{out} holds no {CONFIG_FILE} to resume from; start a new run without --resume")
    return coerce(cls or TrainConfig, _read_table(path))


def resolve_config(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None, *,
                   resume: bool = False) -> TrainConfig:
    """:meth:`RunConfig.resolve` of a :class:`TrainConfig` (the library's and the recipes' short form)."""
    return TrainConfig.resolve(config_file, overrides, resume=resume)


def save_config(config: RunConfig, path: str | Path) -> Path:
    """Write the resolved config as JSON (loadable again with ``--config``, and by ``--resume``)."""
    return write_json(path, config.to_dict())
