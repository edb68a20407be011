"""Batched scoring of image files by a torch or a classical (scikit-learn) checkpoint.

Unreadable images are skipped and listed, never fatal. Scores are kept as logits per view
so that probabilities can be computed at any temperature: ``Scores.probabilities(T)``.
A classical pipeline's probabilities are stored as log-probabilities (their softmax at
T = 1 gives the probabilities back); its images are resized and centre-cropped to the
model's input size as in training (``resize_center_crop``) and passed as one uint8
(N, S, S, 3) array.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bloodcell.data.images import read_image
from bloodcell.errors import ImageError
from bloodcell.metrics.calibration import apply_temperature
from bloodcell.progress import track


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


def _decode(paths: Sequence[Path], start: int, transform, skipped: list[tuple[str, str]]):
    tensors, indices = [], []
    for offset, path in enumerate(paths):
        try:
            tensors.append(transform(read_image(path)))
        except ImageError as exc:
            skipped.append((str(path), str(exc)))
            continue
        indices.append(start + offset)
    return tensors, indices


def tta_views(batch: torch.Tensor) -> Iterator[torch.Tensor]:
    """The 8 dihedral views of an NCHW batch, one at a time, as the predictor's TTA uses them."""
    from bloodcell.inference.predictor import DIHEDRAL_VIEWS

    for k, flip in DIHEDRAL_VIEWS:
        view = torch.rot90(batch, k, dims=(2, 3))
        yield view.flip(-1) if flip else view


def score_torch(model: torch.nn.Module, data_config, paths: Sequence[Path], *, batch_size: int = 32,
                tta: bool = False, description: str = "evaluating") -> Scores:
    """Logits of every readable image (eval transform, channels_last, inference mode)."""
    from bloodcell.transforms import create_transform

    transform = create_transform(data_config, is_training=False)
    model = model.eval().to(memory_format=torch.channels_last)
    skipped: list[tuple[str, str]] = []
    parts: list[np.ndarray] = []
    indices: list[int] = []
    start_time = time.perf_counter()
    starts = range(0, len(paths), batch_size)
    with torch.inference_mode():
        for start in track(starts, description, total=len(starts)):
            tensors, batch_indices = _decode(paths[start:start + batch_size], start, transform, skipped)
            if not tensors:
                continue
            batch = torch.stack(tensors)
            views = tta_views(batch) if tta else [batch]
            logits = [model(v.contiguous(memory_format=torch.channels_last)).float().numpy() for v in views]
            parts.append(np.stack(logits))
            indices.extend(batch_indices)
    seconds = time.perf_counter() - start_time
    logits = np.concatenate(parts, axis=1) if parts else np.zeros((1, 0, len(data_config.class_names)))
    return Scores(logits.astype(np.float64), indices, skipped, seconds)


def classical_batch(images, input_size: int) -> np.ndarray:
    """Decoded images as the uint8 (N, S, S, 3) array classical pipelines are trained on."""
    from bloodcell.data.dataset import resize_center_crop

    return np.stack([np.asarray(resize_center_crop(image, input_size), dtype=np.uint8) for image in images])


def align_columns(probs: np.ndarray, classes, class_names: Sequence[str]) -> np.ndarray:
    """Reorder ``predict_proba`` columns (in ``classes_`` order: indices or names) to ``class_names``."""
    names = list(class_names)
    columns = [int(c) if isinstance(c, (int, np.integer)) else names.index(str(c)) for c in classes]
    full = np.zeros((probs.shape[0], len(names)), dtype=np.float64)
    full[:, columns] = probs
    return full


def score_classical(pipeline, paths: Sequence[Path], class_names: Sequence[str], input_size: int, *,
                    batch_size: int = 64, description: str = "evaluating") -> Scores:
    """Log-probabilities of every readable image from a scikit-learn pipeline.

    Images are resized and centre-cropped to ``input_size`` exactly as for training.
    """
    skipped: list[tuple[str, str]] = []
    parts: list[np.ndarray] = []
    indices: list[int] = []
    start_time = time.perf_counter()
    starts = range(0, len(paths), batch_size)
    for start in track(starts, description, total=len(starts)):
        images, batch_indices = _decode(paths[start:start + batch_size], start, lambda image: image, skipped)
        if not images:
            continue
        probs = np.asarray(pipeline.predict_proba(classical_batch(images, input_size)), dtype=np.float64)
        parts.append(np.log(np.clip(align_columns(probs, pipeline.classes_, class_names), 1e-12, None)))
        indices.extend(batch_indices)
    seconds = time.perf_counter() - start_time
    logits = np.concatenate(parts)[None] if parts else np.zeros((1, 0, len(class_names)))
    return Scores(logits, indices, skipped, seconds)
