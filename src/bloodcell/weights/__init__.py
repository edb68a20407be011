"""Bundled models shipped inside the package (``bloodcell/weights/<file>``): names -> files and cards.

``resolve(spec)`` turns a bundled name (``pbc8``, ``pbc8-int8``, ``pbc11``, ``smear-detector``) or a path into
an existing file; it is the only place that knows where bundled files live. Each bundled model
may have a model card (``<name>.md``) that ``bloodcell models info NAME`` shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from bloodcell.errors import CheckpointError, WeightsUnavailableError

WEIGHTS_DIR = Path(str(files(__name__)))
#: Model file suffixes accepted as paths.
MODEL_SUFFIXES = (".safetensors", ".onnx")


@dataclass(frozen=True)
class BundledModel:
    """A model file shipped with the package."""

    name: str
    filename: str
    kind: str  # "classifier" | "detector"
    description: str
    exported_from: str | None = None  # for an exported (.onnx) model: the bundled checkpoint it was made from

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename

    @property
    def card(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.md"


BUNDLED = {
    model.name: model
    for model in (
        BundledModel("pbc8", "pbc8.safetensors", "classifier", "8 PBC peripheral blood cell classes"),
        BundledModel("pbc8-int8", "pbc8-int8.onnx", "classifier",
                     "pbc8 quantized to int8 for onnxruntime: its network twice as fast on a CPU, `predict` 1.5x; "
                     "pbc8's classes and guard", exported_from="pbc8"),
        BundledModel("pbc11", "pbc11.safetensors", "classifier",
                     "11 PBC classes: band/segmented neutrophils and promyelocyte/myelocyte/metamyelocyte"),
        BundledModel("smear-detector", "smear-detector.safetensors", "detector",
                     "smear photo cell detector: red cells, white cells and platelets"),
    )
}
DEFAULT_CLASSIFIER = "pbc8"
DEFAULT_DETECTOR = "smear-detector"


def bundled(name: str) -> BundledModel:
    """The bundled model ``name``; WeightsUnavailableError naming the known ones otherwise."""
    if name not in BUNDLED:
        raise WeightsUnavailableError(f"no bundled model named {name!r} (bundled models: {', '.join(BUNDLED)})")
    return BUNDLED[name]


def exported_from(path: Path) -> str | None:
    """The bundled checkpoint a bundled exported model file was made from (None for any other file)."""
    return next((model.exported_from for model in BUNDLED.values() if model.path == path), None)


def not_a_checkpoint(path: Path) -> str:
    """Why an exported ONNX model cannot serve where a .safetensors checkpoint is needed, and what to use instead."""
    source = exported_from(path)
    use = f"use {source}, the checkpoint it was exported from" if source else \
        "use the .safetensors checkpoint it was exported from"
    return (f"{path.name} is an exported ONNX model, which classifies but cannot be adapted, calibrated, trained "
            f"from or exported again: {use}")


def resolve(spec: str | Path | None, default: str = DEFAULT_CLASSIFIER) -> Path:
    """The file of a bundled model name (``None``: ``default``) or of a model path that exists."""
    name = str(spec) if spec is not None else default
    if name in BUNDLED:
        path = BUNDLED[name].path
        if not path.is_file():
            raise WeightsUnavailableError(
                f"the bundled model {name!r} is not installed ({path.name} is missing): install a bloodcell release "
                "that ships it, or train a checkpoint with 'bloodcell train' and pass its path with --model")
        return path
    path = Path(name)
    if path.suffix not in MODEL_SUFFIXES:
        raise CheckpointError(f"{name}: not a bundled model ({', '.join(BUNDLED)}) nor a .safetensors or .onnx file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a model file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file, and not a bundled model name ({', '.join(BUNDLED)})")
    return path
