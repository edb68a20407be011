"""Saving and loading classical pipelines as one self-describing ``.skops`` file (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import skops.io as sio
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sklearn.calibration import _CalibratedClassifier, _SigmoidCalibration
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer
from sklearn.pipeline import Pipeline
from sklearn.tree._tree import Tree

from bloodcell.errors import CheckpointError
from bloodcell.models.classical.features import CellFeatureExtractor
from bloodcell.transforms import DataConfig
from bloodcell.writing import write_bytes

#: Types beyond skops' defaults that a bloodcell classical checkpoint may contain.
TRUSTED_TYPES = tuple(f"{cls.__module__}.{cls.__qualname__}" for cls in (
    CellFeatureExtractor, Tree, AdamOptimizer, SGDOptimizer, _CalibratedClassifier, _SigmoidCalibration))


def _json_default(value: Any):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, DataConfig):
        return value.to_dict()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"metadata value {value!r} is not JSON-serialisable")


def save_classical(path: str | Path, pipeline: Pipeline, meta: dict[str, Any]) -> Path:
    """Write ``pipeline`` and its JSON metadata (class names, data config, metrics...) into ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta_json = json.dumps(meta, default=_json_default, sort_keys=True)
    return write_bytes(path, sio.dumps({"pipeline": pipeline, "meta_json": meta_json}))


def load_classical(path: str | Path) -> tuple[Pipeline, dict[str, Any]]:
    """The pipeline and metadata stored by :func:`save_classical`; refuses unknown object types."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # skops raises assorted zip/JSON/key errors on foreign files
        raise CheckpointError(f"{path}: not a readable .skops checkpoint ({type(exc).__name__})") from exc
    unexpected = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if unexpected:
        raise CheckpointError(f"{path}: checkpoint contains untrusted object types: {', '.join(unexpected)}")
    try:
        content = sio.load(path, trusted=list(untrusted))
        pipeline, meta = content["pipeline"], json.loads(content["meta_json"])
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt .skops checkpoint ({type(exc).__name__})") from exc
    if not isinstance(pipeline, Pipeline) or not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the .skops file does not hold a bloodcell classical pipeline")
    meta = _validated(meta, path)
    if meta.get("data_config") is not None:
        pipeline.data_config = DataConfig.from_dict(meta["data_config"])
    pipeline.model_name = meta.get("model_name")
    return pipeline, meta


#: Largest square input a classical checkpoint may ask for (as for torch checkpoints).
MAX_INPUT_SIZE = 1024
_Name = Annotated[str, Field(min_length=1, max_length=200)]


class ClassicalMeta(BaseModel):
    """What scoring reads from a classical checkpoint's metadata, typed and bounded; other keys kept as they are."""

    model_config = ConfigDict(extra="allow")
    model_name: _Name | None = None
    class_names: list[_Name] = Field(min_length=2, max_length=1000)
    input_size: int | None = Field(None, ge=8, le=MAX_INPUT_SIZE)
    temperature: float = Field(1.0, gt=1e-6, le=1e3, allow_inf_nan=False)
    data_config: dict[str, Any] | None = None

    @field_validator("class_names")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("class names repeat")
        return names


def _validated(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """``meta`` with its read fields validated (nothing read from a file is trusted); CheckpointError otherwise."""
    try:
        checked = ClassicalMeta.model_validate(meta)
        if checked.data_config is not None:
            size = DataConfig.from_dict(checked.data_config).input_size
            if not 8 <= size <= MAX_INPUT_SIZE:
                raise ValueError(f"data_config.input_size {size} is not between 8 and {MAX_INPUT_SIZE}")
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error.get("loc", ())) or "metadata"
        raise CheckpointError(f"{path}: invalid classical checkpoint metadata ({where}: {error.get('msg')})") from None
    except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
        raise CheckpointError(f"{path}: invalid classical checkpoint metadata ({exc or type(exc).__name__})") from None
    return {**meta, **checked.model_dump(include={"model_name", "class_names", "input_size", "temperature"},
                                         exclude_none=True)}
