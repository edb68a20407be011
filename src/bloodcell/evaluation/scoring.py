"""What is evaluated and how it is scored: a torch classifier (through the predictor, the one
scoring path) or a classical scikit-learn pipeline, over image files.

Unreadable images are skipped and listed, never fatal. Scores are kept as logits per view so
that probabilities can be computed at any temperature: ``Scores.probabilities(T)``. A
classical pipeline's probabilities are stored as log-probabilities (their softmax at T = 1
gives them back); its images are resized and centre-cropped to the model's input size as in
training (``resize_center_crop``) and passed as one uint8 (N, S, S, 3) array.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bloodcell.checkpoint import read_checkpoint_meta
from bloodcell.data.dataset import resize_center_crop
from bloodcell.data.images import read_image
from bloodcell.errors import CheckpointError, ImageError
from bloodcell.inference.onnx import read_document
from bloodcell.inference.predictor import Classifier, load
from bloodcell.metrics.calibration import apply_temperature
from bloodcell.models import get_model_entry
from bloodcell.models.classical import load_classical
from bloodcell.progress import track
from bloodcell.weights import resolve


@dataclass
class Scores:
    """``logits`` (views, N, C) for the images at ``indices`` of the input list."""

    logits: np.ndarray
    indices: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def probabilities(self, temperature: float = 1.0) -> np.ndarray:
        """Class probabilities (N, C), averaged over the views (TTA) after temperature scaling."""
        return apply_temperature(self.logits, temperature).mean(axis=0)

    @property
    def images_per_second(self) -> float:
        return len(self.indices) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ScoringModel:
    """A loaded model with what evaluation needs: classes, temperature and a batch scoring function."""

    kind: str  # "torch" | "sklearn"
    model: Any  # a Classifier, or a scikit-learn pipeline
    model_name: str
    class_names: list[str]
    temperature: float
    meta: dict[str, Any]
    input_size: int
    path: Path | None = None

    @property
    def n_parameters(self) -> int | None:
        """Trainable + frozen parameters of a torch model; None for a classical pipeline."""
        if self.kind != "torch" or self.model.model is None:  # a classical pipeline, or the onnx engine
            return None
        return int(sum(p.numel() for p in self.model.model.parameters()))

    @property
    def file_kind(self) -> str:
        """What the model file is: "torch" (a checkpoint), "onnx" (an exported model) or "sklearn"."""
        return "onnx" if self.path is not None and self.path.suffix == ".onnx" else self.kind

    def logits(self, images: Sequence[Image.Image], tta: bool = False) -> np.ndarray:
        """Logits (V, N, C) of decoded images; a pipeline's log-probabilities (1, N, C), without TTA."""
        if self.kind == "torch":
            return self.model.score(self.model.pixels(images), tta)[0].astype(np.float64)
        batch = np.stack([np.asarray(resize_center_crop(image, self.input_size), dtype=np.uint8) for image in images])
        probs = np.asarray(self.model.predict_proba(batch), dtype=np.float64)
        return np.log(np.clip(align_columns(probs, self.model.classes_, self.class_names), 1e-12, None))[None]


def align_columns(probs: np.ndarray, classes, class_names: Sequence[str]) -> np.ndarray:
    """Reorder ``predict_proba`` columns (in ``classes_`` order: indices or names) to ``class_names``."""
    names = list(class_names)
    columns = [int(c) if isinstance(c, (int, np.integer)) else names.index(str(c)) for c in classes]
    full = np.zeros((probs.shape[0], len(names)), dtype=np.float64)
    full[:, columns] = probs
    return full


def load_scoring_model(spec: str | Path, engine: str = "torch", num_threads: int | None = None) -> ScoringModel:
    """Load a bundled name, a ``.safetensors`` (torch) or ``.skops`` (scikit-learn) checkpoint, or an exported
    ``.onnx`` model (always on onnxruntime); a torch checkpoint runs on ``engine`` (``num_threads`` as
    :func:`~bloodcell.inference.predictor.load` takes it)."""
    if str(spec).endswith(".skops"):
        return _classical(Path(spec))
    path = resolve(spec)
    if path.suffix not in (".safetensors", ".onnx"):
        raise CheckpointError(f"{path}: expected a .safetensors (torch), .onnx (exported) or .skops (classical) model")
    classifier: Classifier = load(path, engine=engine, num_threads=num_threads)
    meta = read_document(classifier.backend, path) if path.suffix == ".onnx" else read_checkpoint_meta(path)
    return ScoringModel("torch", classifier, meta["model_name"], classifier.class_names, classifier.temperature,
                        meta, classifier.data_config.input_size, path)


def _classical(path: Path) -> ScoringModel:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    pipeline, meta = load_classical(path)
    if not meta.get("class_names"):
        raise CheckpointError(f"{path}: classical checkpoint metadata lists no class names")
    name = str(meta.get("model_name", path.stem))
    size = meta.get("input_size") or (meta.get("data_config") or {}).get("input_size") \
        or get_model_entry(name).data_config.input_size
    return ScoringModel("sklearn", pipeline, name, [str(c) for c in meta["class_names"]],
                        float(meta.get("temperature", 1.0)), dict(meta), int(size), path)


def _score_batch(model: ScoringModel, paths: Sequence[Path], start: int, batch_size: int,
                 tta: bool) -> tuple[np.ndarray | None, list[int], list[tuple[str, str]]]:
    """Logits of the readable images of ``paths[start:start + batch_size]``, their indices, and the skipped ones."""
    images, indices, skipped = [], [], []
    for offset, path in enumerate(paths[start:start + batch_size]):
        try:
            images.append(read_image(path))
        except ImageError as exc:
            skipped.append((str(path), str(exc)))
            continue
        indices.append(start + offset)
    return (model.logits(images, tta) if images else None), indices, skipped


def score_paths(model: ScoringModel, paths: Sequence[Path], *, tta: bool = False, batch_size: int = 32,
                description: str = "scoring") -> Scores:
    """Logits of every readable image of ``paths``, in batches; unreadable ones are listed in ``skipped``.
    An engine that runs batches concurrently (onnx) works on as many batches at once as its classifier's workers."""
    tta = tta and model.kind == "torch"
    concurrent = model.kind == "torch" and getattr(model.model.backend, "concurrent", False)
    skipped: list[tuple[str, str]] = []
    parts: list[np.ndarray] = []
    indices: list[int] = []
    start_time = time.perf_counter()
    starts = range(0, len(paths), batch_size)
    with ThreadPoolExecutor(model.model.workers if concurrent else 1) as pool:
        outcomes = pool.map(partial(_score_batch, model, paths, batch_size=batch_size, tta=tta), starts)
        for logits, batch_indices, batch_skipped in track(outcomes, description, total=len(paths), unit="images",
                                                          size=lambda o: len(o[1]) + len(o[2])):
            skipped += batch_skipped
            indices += batch_indices
            if logits is not None:
                parts.append(logits)
    seconds = time.perf_counter() - start_time
    logits = np.concatenate(parts, axis=1) if parts else np.zeros((1, 0, len(model.class_names)))
    return Scores(logits, indices, skipped, seconds)
