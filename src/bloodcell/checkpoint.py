"""Self-describing checkpoints: one ``.safetensors`` file whose metadata holds everything else.

The header metadata key ``bloodcell`` is a JSON document with the model name, class names,
data config, model kwargs, training config, metrics, temperature and package version, so
``load_checkpoint(path)`` needs nothing but the file. A readable ``.json`` copy of the
metadata is written beside it for people; it is never needed for loading.

Nothing read from a file is trusted: the metadata is validated against :class:`CheckpointMeta`'s
schema (types, bounds, consistency, model kwargs the model's builder really takes) before a
model is built, and a failure is one :class:`~bloodcell.errors.CheckpointError` sentence.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from bloodcell._version import __version__
from bloodcell.errors import CheckpointError, ConfigError
from bloodcell.models import create_model, get_model_entry
from bloodcell.models.heads import GATE_FLOORS, GATE_OPTIONS
from bloodcell.transforms import DataConfig
from bloodcell.weights import not_a_checkpoint, resolve
from bloodcell.writing import write_failed, write_json

FORMAT = "bloodcell-checkpoint/1"
#: Largest square input a checkpoint may ask for (a 1024x1024 batch of 32 is already 400 MB of floats).
MAX_INPUT_SIZE = 1024
MAX_CLASSES = 1000
#: Training options that name places on the machine that trained; a checkpoint keeps only their file name.
MACHINE_PATHS = ("manifest", "data_root", "out", "cache_dir", "init_from", "extra_train", "style_bank")

Name = Annotated[str, Field(min_length=1, max_length=200)]
#: A class name becomes a folder name (``cells/<class>/``): no path separators, not ``.`` or ``..``.
ClassName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^/\\\x00]+$")]
Finite = Annotated[float, Field(allow_inf_nan=False, ge=-1e3, le=1e3)]
Positive = Annotated[float, Field(allow_inf_nan=False, gt=1e-6, le=1e3)]


class DataConfigSchema(BaseModel):
    """The data config as stored: bounded sizes, finite statistics, a known interpolation, framing and resize."""

    model_config = ConfigDict(extra="forbid")
    input_size: int = Field(ge=8, le=MAX_INPUT_SIZE)
    mean: tuple[Finite, Finite, Finite] = DataConfig.__dataclass_fields__["mean"].default
    std: tuple[Positive, Positive, Positive] = DataConfig.__dataclass_fields__["std"].default
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bilinear"
    class_names: list[Name] = []
    framing: Literal["none", "cell"] = "none"
    resize: Literal["crop", "squash"] = "crop"


class MetaSchema(BaseModel):
    """The checkpoint document: required fields typed and bounded, other sections kept as they are."""

    model_config = ConfigDict(extra="allow", strict=False)
    format: Literal["bloodcell-checkpoint/1"]
    model_name: Name
    num_classes: int = Field(ge=2, le=MAX_CLASSES)
    class_names: list[ClassName] = Field(min_length=2, max_length=MAX_CLASSES)
    data_config: DataConfigSchema
    model_kwargs: dict[Name, Any] = {}
    train_config: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    temperature: Positive = 1.0

    @field_validator("class_names")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("class names repeat")
        if {".", ".."} & set(names):
            raise ValueError("a class name cannot be '.' or '..'")
        return names

    @field_validator("model_kwargs")
    @classmethod
    def _small_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """A model option is a flag, a small count, a bounded number or a short word: a file cannot size a
        model with it (``hidden_layers: 1000000000``)."""
        for key, value in options.items():
            if not (value is None or isinstance(value, bool)
                    or (isinstance(value, int) and abs(value) <= MAX_INPUT_SIZE)
                    or (isinstance(value, float) and math.isfinite(value) and abs(value) <= 1e3)
                    or (isinstance(value, str) and len(value) <= 200)):
                raise ValueError(f"model option {key} = {str(value)[:40]} is not a flag, a count up to "
                                 f"{MAX_INPUT_SIZE}, a number up to 1000 or a short word")
        return options

    @model_validator(mode="after")
    def _consistent(self) -> "MetaSchema":
        if self.num_classes != len(self.class_names):
            raise ValueError(f"num_classes is {self.num_classes} but {len(self.class_names)} class names are listed")
        if self.data_config.class_names and self.data_config.class_names != self.class_names:
            raise ValueError("the data config's class names differ from the checkpoint's")
        return self


def _printable(text: str) -> str:
    """``text`` as is when printable, else quoted with its control characters escaped (a key read from a file
    may hold a line break, and the message must stay one line)."""
    return text if text.isprintable() else repr(text)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(_printable(str(p)) for p in error.get("loc", ())) or "metadata"
    return f"{where}: {_printable(str(error.get('msg', 'invalid')))}"


def validate_meta(raw: Any, source: str | Path) -> dict[str, Any]:
    """The checkpoint document ``raw`` after schema validation; CheckpointError with the first problem."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source}: checkpoint metadata is not a JSON object")
    try:
        checked = MetaSchema.model_validate(raw)
    except ValidationError as exc:
        raise CheckpointError(f"{source}: invalid checkpoint metadata ({_first_error(exc)})") from None
    _check_model_kwargs(checked.model_name, checked.model_kwargs, source)
    meta = dict(raw)
    meta.update(checked.model_dump(include={"model_name", "num_classes", "class_names", "data_config",
                                            "model_kwargs", "temperature"}))
    meta["data_config"]["class_names"] = meta["class_names"]
    return meta


def _check_model_kwargs(model_name: str, kwargs: dict[str, Any], source: str | Path) -> None:
    """Refuse a model name the registry does not know and kwargs its builder does not name."""
    try:
        entry = get_model_entry(model_name)
    except ConfigError:
        raise CheckpointError(f"{source}: the checkpoint's model {model_name!r} is not a bloodcell model") from None
    if entry.kind == "sklearn":
        raise CheckpointError(f"{source}: model {model_name!r} is a classical pipeline, stored as .skops, "
                              "not in a .safetensors checkpoint")
    named = {name for name, p in inspect.signature(entry.builder).parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"num_classes", "pretrained", "input_size"}
    if entry.kind == "torch":
        named |= {*GATE_OPTIONS, GATE_FLOORS}  # any cell classifier's last layer may be gated (bloodcell.models.heads)
    unknown = sorted(set(kwargs) - named)
    if unknown:
        raise CheckpointError(f"{source}: model_kwargs {', '.join(unknown)} are not options of model {model_name!r}")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model in eval mode and its validated metadata."""

    model: torch.nn.Module
    meta: dict[str, Any]
    path: Path | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def data_config(self) -> DataConfig:
        return DataConfig.from_dict(self.meta["data_config"])

    @property
    def temperature(self) -> float:
        return float(self.meta.get("temperature", 1.0))


@dataclass
class CheckpointMeta:
    """Fields written into a checkpoint besides the weights."""

    model_name: str
    data_config: DataConfig
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    temperature: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model_name": self.model_name,
            "num_classes": len(self.data_config.class_names),
            "class_names": list(self.data_config.class_names),
            "data_config": self.data_config.to_dict(),
            "model_kwargs": self.model_kwargs,
            "train_config": portable_config(self.train_config),
            "metrics": self.metrics,
            "temperature": float(self.temperature),
            "bloodcell_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **self.extra,
        }


def portable_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the machine paths of :data:`MACHINE_PATHS` cut to their file names."""
    def name(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [name(v) for v in value]
        return Path(value).name if isinstance(value, str) and value else value

    return {k: name(v) if k in MACHINE_PATHS else v for k, v in config.items()}


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, infinity: not JSON, and refused when read) replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: CheckpointMeta) -> Path:
    """Write weights and metadata to ``path`` (``.safetensors``) and a ``.json`` copy beside it, atomically.

    A figure that could not be computed (NaN) is written as null, so that the metadata stays valid JSON."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: checkpoint files must end in .safetensors")
    if not meta.data_config.class_names:
        raise CheckpointError("cannot save a checkpoint without class names")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    doc = _json_safe(meta.to_dict())
    data = safetensors_bytes(state, metadata={"format": FORMAT, "bloodcell": json.dumps(doc, allow_nan=False)})
    tmp = path.with_name(f".{path.name}.tmp")
    try:  # written through Python, so that a full disk is an OSError: one sentence, no half file left
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failed(path, exc) from None
    write_json(path.with_suffix(".json"), doc)
    return path


_STANDARD_KEYS = {"format", "model_name", "num_classes", "class_names", "data_config", "model_kwargs", "train_config",
                  "metrics", "temperature", "bloodcell_version", "created"}


def update_metadata(path: str | Path, to: str | Path | None = None, **extra: Any) -> Path:
    """Rewrite the checkpoint at ``path`` (in place, or as ``to``) with ``extra`` keys added to (or replacing)
    its metadata, whole or not at all."""
    checkpoint = load_checkpoint(path)
    return save_checkpoint(path if to is None else to, checkpoint.model, derived_meta(checkpoint, extra))


def derived_meta(checkpoint: Checkpoint, extra: dict[str, Any], keep: tuple[str, ...] | None = None) -> CheckpointMeta:
    """``checkpoint``'s metadata with ``extra`` added (or replacing); of its other non-standard keys, all are kept,
    or only those in ``keep``."""
    meta = checkpoint.meta
    kept = {k: v for k, v in meta.items() if k not in _STANDARD_KEYS and (keep is None or k in keep)}
    return CheckpointMeta(
        model_name=meta["model_name"], data_config=checkpoint.data_config, model_kwargs=meta.get("model_kwargs", {}),
        train_config=meta.get("train_config", {}), metrics=meta.get("metrics", {}),
        temperature=float(meta.get("temperature", 1.0)), extra={**kept, **extra})


def read_checkpoint_meta(spec: str | Path) -> dict[str, Any]:
    """Validated metadata of a checkpoint (bundled name or path) without building the model."""
    path = resolve(spec)
    if path.suffix == ".onnx":
        raise CheckpointError(not_a_checkpoint(path))
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: expected a .safetensors checkpoint")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if raw.get("format") != FORMAT or "bloodcell" not in raw:
        raise CheckpointError(f"{path}: safetensors file carries no bloodcell metadata (format {raw.get('format')!r})")
    try:
        document = json.loads(raw["bloodcell"], parse_constant=refuse_json_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON (nested too deeply)") from None
    return validate_meta(document, path)


def refuse_json_constant(name: str) -> float:
    """``json.loads``' ``parse_constant``: NaN and Infinity are not numbers a file may give."""
    raise ValueError(f"{name} is not a number")


def _build_model(meta: dict[str, Any], state: dict[str, torch.Tensor], path: Path) -> torch.nn.Module:
    """The checkpoint's model, built for real only after a skeleton on the meta device (no memory) showed that
    the file's weights fit it: metadata naming a model far larger than its file (a paper CNN whose dense layer
    grows with the input size) is refused before it is allocated."""
    name = meta["model_name"]
    options = dict(num_classes=meta["num_classes"], pretrained=False, class_names=meta["class_names"],
                   input_size=meta["data_config"]["input_size"], **meta["model_kwargs"])
    try:
        with torch.device("meta"):
            skeleton = create_model(name, **options)
    except (NotImplementedError, RuntimeError) as exc:  # an op without meta support: the real build decides
        if "meta" not in str(exc) and not isinstance(exc, NotImplementedError):
            raise CheckpointError(f"{path}: model {name!r} cannot be built from the checkpoint's metadata "
                                  f"({type(exc).__name__})") from None
        skeleton = None
    except Exception as exc:  # noqa: BLE001 - any failure to build from a file's metadata is a bad checkpoint
        raise CheckpointError(f"{path}: model {name!r} cannot be built from the checkpoint's metadata "
                              f"({type(exc).__name__})") from None
    if skeleton is not None:
        expected = {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
        found = {key: tuple(value.shape) for key, value in state.items()}
        if expected != found:
            missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
            wrong = sorted(key for key in expected.keys() & found.keys() if expected[key] != found[key])
            detail = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected
                      else f"{wrong[0]} is {list(found[wrong[0]])} in the file, {list(expected[wrong[0]])} in the model")
            raise CheckpointError(f"{path}: weights do not match model {name!r} ({detail})")
    try:
        return create_model(name, **options)
    except Exception as exc:  # noqa: BLE001 - as above
        raise CheckpointError(f"{path}: model {name!r} cannot be built from the checkpoint's metadata "
                              f"({type(exc).__name__})") from None


def load_checkpoint(spec: str | Path, map_location: str = "cpu") -> Checkpoint:
    """Rebuild the model of a checkpoint (bundled name or path) from the registry and load its weights strictly."""
    path = resolve(spec)
    meta = read_checkpoint_meta(path)
    try:
        state = load_file(str(path), device=map_location)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint weights are corrupt ({exc})") from exc
    model = _build_model(meta, state, path)
    model.data_config = DataConfig.from_dict(meta["data_config"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match model {meta['model_name']!r} ({first})") from exc
    model.eval()
    return Checkpoint(model=model, meta=meta, path=path)

