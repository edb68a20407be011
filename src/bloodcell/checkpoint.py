"""Self-describing checkpoints: one ``.safetensors`` file whose metadata holds everything else.

The header metadata key ``bloodcell`` is a JSON document with the model name, class names,
data config, model kwargs, training config, metrics, temperature and package version, so
``load_checkpoint(path)`` needs nothing but the file. A readable ``.json`` copy of the
metadata is written beside it for people; it is never needed for loading.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bloodcell import __version__
from bloodcell.errors import CheckpointError
from bloodcell.models.registry import DataConfig, create_model

FORMAT = "bloodcell-checkpoint/1"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model in eval mode and its metadata."""

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
            "train_config": self.train_config,
            "metrics": self.metrics,
            "temperature": float(self.temperature),
            "bloodcell_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **self.extra,
        }


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: CheckpointMeta) -> Path:
    """Write weights and metadata to ``path`` (``.safetensors``) and a ``.json`` copy beside it."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: checkpoint files must end in .safetensors")
    if not meta.data_config.class_names:
        raise CheckpointError("cannot save a checkpoint without class names")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    doc = meta.to_dict()
    tmp = path.with_suffix(".safetensors.tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT, "bloodcell": json.dumps(doc)})
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    return path


_STANDARD_KEYS = {"format", "model_name", "num_classes", "class_names", "data_config", "model_kwargs", "train_config",
                  "metrics", "temperature", "bloodcell_version", "created"}


def update_metadata(path: str | Path, **extra: Any) -> Path:
    """Rewrite the checkpoint at ``path`` in place with ``extra`` keys added to (or replacing) its metadata."""
    checkpoint = load_checkpoint(path)
    meta = checkpoint.meta
    kept = {k: v for k, v in meta.items() if k not in _STANDARD_KEYS}
    return save_checkpoint(path, checkpoint.model, CheckpointMeta(
        model_name=meta["model_name"], data_config=checkpoint.data_config, model_kwargs=meta.get("model_kwargs", {}),
        train_config=meta.get("train_config", {}), metrics=meta.get("metrics", {}),
        temperature=float(meta.get("temperature", 1.0)), extra={**kept, **extra}))


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """Metadata of a checkpoint without building the model."""
    path = _existing(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if raw.get("format") != FORMAT or "bloodcell" not in raw:
        raise CheckpointError(f"{path}: safetensors file carries no bloodcell metadata (format {raw.get('format')!r})")
    try:
        return json.loads(raw["bloodcell"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON") from exc


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> Checkpoint:
    """Rebuild the model from the registry by name and load its weights (strictly)."""
    path = _existing(path)
    meta = read_checkpoint_meta(path)
    try:
        state = load_file(str(path), device=map_location)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint weights are corrupt ({exc})") from exc
    model = create_model(
        meta["model_name"],
        num_classes=int(meta["num_classes"]),
        pretrained=False,
        class_names=meta["class_names"],
        input_size=int(meta["data_config"]["input_size"]),
        **meta.get("model_kwargs", {}),
    )
    model.data_config = DataConfig.from_dict(meta["data_config"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match model {meta['model_name']!r} ({first})") from exc
    model.eval()
    return Checkpoint(model=model, meta=meta, path=path)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    return path
