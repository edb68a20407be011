"""The evaluation result of scored, labelled images: metrics, provenance, errors, thumbnails.

Split policy: the train split is refused outright (accuracy on training images says nothing
about new ones). The validation split needs ``allow_non_test=True`` and every output is then
labelled "VALIDATION — not a test result". The checkpoint's temperature is applied to the
probabilities used for calibration, selective prediction and confidences; the argmax (and so
accuracy) is the same at any temperature. With TTA, probabilities are averaged over the 8
dihedral views. Reading manifests and writing the report folder is the evaluate workflow's
job (:mod:`bloodcell.workflows.evaluate`).
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bloodcell._version import __version__
from bloodcell.data.images import read_image
from bloodcell.data.items import EvalItems
from bloodcell.errors import ConfigError, DataError, ImageError
from bloodcell.evaluation.scoring import Scores, ScoringModel
from bloodcell.metrics.calibration import expected_calibration_error
from bloodcell.metrics.classification import classification_report
from bloodcell.provenance import file_sha256, git_commit, now

TEST_LABEL = "TEST RESULT"
VALIDATION_LABEL = "VALIDATION — not a test result"
THUMBNAIL_SIZE = 160


@dataclass
class Evaluation:
    """The JSON-ready result, per-image predictions and the misclassified thumbnails."""

    result: dict[str, Any]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    gallery: list[dict[str, Any]] = field(default_factory=list)


def split_label(split: str, allow_non_test: bool) -> str:
    """The label every output carries; refuses the train split, and val unless allowed."""
    if split == "test":
        return TEST_LABEL
    if split == "train":
        raise ConfigError(
            "the train split is never evaluated: accuracy on training images says nothing about new images; "
            "use --split test (or --split val --allow-non-test for a validation check)"
        )
    if split == "val":
        if not allow_non_test:
            raise ConfigError("--split val is not a test result; add --allow-non-test to evaluate it anyway "
                              "(the report is then labelled VALIDATION)")
        return VALIDATION_LABEL
    raise ConfigError(f"unknown split {split!r}; choose test (or val with --allow-non-test)")


def _thumbnail(path: Path) -> bytes | None:
    try:
        image = read_image(path)
    except ImageError:
        return None
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def display_path(path: Path, root: Path | None) -> str:
    try:
        return str(path.relative_to(root)) if root is not None else str(path)
    except ValueError:
        return str(path)


def _predictions(model: ScoringModel, items: EvalItems, scores: Scores, probs: np.ndarray,
                 mapping: dict[str, str | None]):
    """Per-image records, the scored rows with their true class indices, and the unmapped calls."""
    pred = probs.argmax(axis=1)
    model_index = {name: i for i, name in enumerate(model.class_names)}
    scored, y_true, records = [], [], []
    unmapped: dict[str, Counter] = {}
    for row, index in enumerate(scores.indices):
        dataset_label = items.labels[index]
        target = mapping[dataset_label]
        predicted = model.class_names[pred[row]]
        records.append({
            "path": display_path(items.paths[index], items.root), "dataset_label": dataset_label,
            "true": target, "predicted": predicted, "confidence": float(probs[row, pred[row]]),
            "correct": None if target is None else target == predicted,
        })
        if target is None:
            unmapped.setdefault(dataset_label, Counter())[predicted] += 1
            continue
        scored.append(row)
        y_true.append(model_index[target])
    return records, scored, np.asarray(y_true, dtype=np.int64), unmapped


def build_evaluation(model: ScoringModel, items: EvalItems, scores: Scores, mapping: dict[str, str | None], *,
                     label: str, notes: list[str], provenance: dict[str, Any], n_boot: int = 1000, seed: int = 0,
                     gallery_size: int = 24) -> Evaluation:
    """Metrics (with bootstrap CIs), counts, misclassified images and provenance of ``scores``."""
    probs, raw = scores.probabilities(model.temperature), scores.probabilities(1.0)
    records, scored, y, unmapped = _predictions(model, items, scores, probs, mapping)
    skipped = [{"path": display_path(Path(p), items.root), "reason": r} for p, r in items.skipped + scores.skipped]
    if not scored:
        raise DataError(f"no image could be scored ({len(skipped)} unreadable, "
                        f"{sum(sum(c.values()) for c in unmapped.values())} of classes unknown to the model)")
    metrics = classification_report(y, probs[scored], model.class_names, n_boot=n_boot, seed=seed)
    errors = sorted((r for r in records if r["correct"] is False), key=lambda r: -r["confidence"])
    result = {
        "title": f"{model.model_name} on {items.dataset} / {items.split}",
        "label": label,
        "is_test_result": label.startswith(TEST_LABEL) and not provenance.get("limit"),  # a subset is a quick look
        "dataset": items.dataset, "split": items.split, "taxonomy": items.taxonomy,
        "provenance": {
            "checkpoint_sha256": file_sha256(model.path) if model.path else None,
            "model_name": model.model_name, "model_kind": model.file_kind, "n_parameters": model.n_parameters,
            "manifest_sha256": items.manifest_sha256, "temperature": model.temperature,
            "git_commit": git_commit(), "bloodcell_version": __version__, "created": now(), **provenance,
        },
        "counts": {"images": len(items.paths) + len(items.skipped), "scored": len(scored), "skipped": len(skipped),
                   "unmapped": len(records) - len(scored), **items.left_out},
        "class_mapping": mapping,
        "unmapped": {k: {"count": sum(c.values()), "predicted": dict(c)} for k, c in unmapped.items()},
        "metrics": metrics,
        "uncalibrated": {
            "ece": expected_calibration_error(y, raw[scored]),
            "nll": float(-np.log(np.clip(raw[scored][np.arange(len(y)), y], 1e-12, None)).mean()),
        },
        "speed": {"seconds": scores.seconds, "images_per_second": scores.images_per_second},
        "misclassified": errors, "skipped": skipped, "notes": notes,
    }
    gallery = []
    for record in errors[:gallery_size]:
        thumb = _thumbnail(items.root / record["path"] if items.root else Path(record["path"]))
        if thumb is not None:
            gallery.append({**record, "thumbnail": thumb})
    return Evaluation(result, records, gallery)
