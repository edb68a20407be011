"""Training of scikit-learn registry entries (``sk/...``): features once, a tiny grid scored on validation,
the best pipeline saved as ``best.skops``."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss
from sklearn.pipeline import Pipeline

from bloodcell._version import __version__
from bloodcell.errors import ConfigError, DataError
from bloodcell.metrics.calibration import fit_temperature
from bloodcell.models import get_model_entry
from bloodcell.models.classical.features import CellFeatureExtractor
from bloodcell.models.classical.persistence import save_classical
from bloodcell.models.classical.pipelines import PARAM_GRIDS
from bloodcell.train.engine import RunResult

#: Fewest training images per class (the SVM's Platt scaling uses 3 folds).
MIN_PER_CLASS = 3


def _features(images: np.ndarray, n_jobs: int) -> tuple[np.ndarray, list[tuple[int, str]], float]:
    extractor = CellFeatureExtractor(n_jobs=n_jobs)
    start = time.perf_counter()
    features = extractor.transform(images)
    return features, extractor.failures_, time.perf_counter() - start


def _check_labels(train_labels: np.ndarray, class_names: list[str]) -> None:
    counts = Counter(int(y) for y in train_labels)
    if any(y < 0 or y >= len(class_names) for y in counts):
        raise DataError(f"training labels must be class indices in 0..{len(class_names) - 1}")
    if len(counts) < 2:
        raise DataError("the training split needs images of at least 2 classes")
    scarce = [class_names[y] for y, n in sorted(counts.items()) if n < MIN_PER_CLASS]
    if scarce:
        raise DataError(f"classes with fewer than {MIN_PER_CLASS} training images: {', '.join(scarce)}")


def _validation_scores(tail: Pipeline, features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    probs = tail.predict_proba(features)
    classes = tail.classes_
    predicted = classes[probs.argmax(1)]
    known = np.isin(labels, classes)
    scores = {"val_acc": float(accuracy_score(labels, predicted)),
              "val_balanced_acc": float(balanced_accuracy_score(labels, predicted))}
    if known.any():
        scores["val_loss"] = float(log_loss(labels[known], probs[known], labels=classes))
    return scores


def _temperature(tail: Pipeline, features: np.ndarray, labels: np.ndarray) -> float:
    """Temperature of the log-probabilities fitted on validation images of classes seen in training."""
    known = np.isin(labels, tail.classes_)
    if known.sum() < 2:
        return 1.0
    logits = np.log(np.clip(tail.predict_proba(features[known]), 1e-12, None))
    return float(fit_temperature(logits, np.searchsorted(tail.classes_, labels[known])))


def train_classical(model_name: str, train_images: np.ndarray, train_labels: np.ndarray,
                    val_images: np.ndarray, val_labels: np.ndarray, class_names: list[str], out_path: str | Path,
                    n_jobs: int = 1, meta: dict[str, Any] | None = None) -> tuple[Pipeline, dict[str, Any]]:
    """Fit ``sk/...`` pipeline ``model_name`` on uint8 (N, S, S, 3) train images and save it to ``out_path``.

    Features are extracted once; each point of the model's small grid is fitted on train and
    scored on validation only (accuracy), the best is kept, its temperature fitted on
    validation. ``meta`` (e.g. train_config, manifest_sha256, taxonomy, dataset) is stored
    with the computed metadata. Returns the fitted pipeline and its metrics.
    """
    entry = get_model_entry(model_name)
    if entry.kind != "sklearn":
        raise ConfigError(f"{model_name} is not a scikit-learn (sk/...) model")
    train_labels, val_labels = np.asarray(train_labels, dtype=np.int64), np.asarray(val_labels, dtype=np.int64)
    if len(train_images) != len(train_labels) or len(val_images) != len(val_labels):
        raise DataError("the number of images and labels differ")
    _check_labels(train_labels, list(class_names))
    input_size = int(np.asarray(train_images[0]).shape[0])
    start = time.perf_counter()
    train_x, train_failures, feature_seconds = _features(train_images, n_jobs)
    val_x, val_failures, _ = _features(val_images, n_jobs) if len(val_images) else (None, [], 0.0)

    grid = PARAM_GRIDS.get(model_name, [{}])
    trials, best = [], None
    for params in grid if val_x is not None else grid[:1]:
        pipeline = entry.builder(num_classes=len(class_names), pretrained=False, input_size=input_size,
                                 n_jobs=n_jobs, **params)
        tail = pipeline[1:].fit(train_x, train_labels)  # the extractor is stateless: fit the rest on features
        scores = _validation_scores(tail, val_x, val_labels) if val_x is not None else {}
        trials.append({"params": params, **scores})
        if best is None or scores.get("val_acc", 0.0) > best[1].get("val_acc", 0.0):
            best = (pipeline, scores, params)
    pipeline, scores, params = best
    temperature = _temperature(pipeline[1:], val_x, val_labels) if val_x is not None else 1.0
    metrics = {**scores, "n_train": int(len(train_labels)), "n_val": int(len(val_labels)),
               "train_seconds": time.perf_counter() - start,
               "feature_images_per_second": len(train_labels) / max(feature_seconds, 1e-9),
               "segmentation_failures_train": len(train_failures), "segmentation_failures_val": len(val_failures),
               "temperature": temperature}
    data_config = entry.data_config.__class__(input_size, entry.data_config.mean, entry.data_config.std,
                                              entry.data_config.interpolation, tuple(class_names))
    saved = {**(meta or {}), "model_name": model_name, "class_names": list(class_names), "input_size": input_size,
             "data_config": data_config.to_dict(), "metrics": metrics, "temperature": temperature,
             "best_params": params, "grid": trials, "bloodcell_version": __version__,
             "segmentation_failures": {"train": train_failures[:50], "val": val_failures[:50]}}
    save_classical(out_path, pipeline, saved)
    return pipeline, metrics


def fit_classical(model_name: str, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                  class_names: list[str], run_dir: Path, *, n_jobs: int = 1,
                  meta: dict[str, Any] | None = None) -> RunResult:
    """Train the pipeline of ``model_name`` on uint8 (N, S, S, 3) training images, choose on the validation
    images and write ``run_dir/best.skops`` (``meta``: train_config, manifest_sha256, taxonomy, dataset)."""
    out_path = Path(run_dir) / "best.skops"
    _, metrics = train_classical(model_name, train_x, train_y, val_x, val_y, class_names, out_path,
                                           n_jobs=n_jobs, meta=meta)
    return RunResult(Path(run_dir), out_path, [], None, dict(metrics), metrics["temperature"], "completed")
