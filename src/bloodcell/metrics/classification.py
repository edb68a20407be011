"""Classification metrics and the one JSON-ready ``classification_report``.

Undefined values are None, never NaN, and every one is explained in ``notes``:
- a class with no predictions has precision 0 (nothing it predicted was right);
- a class with no samples has recall, F1 and AUC None and is left out of the macro and
  weighted averages (predictions into it still count as errors in accuracy and in the
  precision of no scored class).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    cohen_kappa_score,
    confusion_matrix,
    matthews_corrcoef,
    roc_auc_score,
    roc_curve,
)

from bloodcell.errors import DataError
from bloodcell.metrics.bootstrap import bootstrap_ci
from bloodcell.metrics.calibration import (
    brier_score,
    expected_calibration_error,
    reliability_curve,
)
from bloodcell.metrics.selective import (
    accuracy_at_coverage,
    coverage_curve,
    threshold_for_accuracy,
)

#: Most points kept per curve in the report (curves are thinned evenly, end points kept).
MAX_CURVE_POINTS = 300
DEFAULT_COVERAGES = (0.9, 0.95, 0.98, 0.99)
DEFAULT_TARGETS = (0.99, 0.995, 0.998)


def check_inputs(y_true, y_prob, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to ``(int64 labels (N,), float64 probabilities (N, C))``."""
    y = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    if y.ndim != 1 or len(y) == 0:
        raise DataError("y_true must be a non-empty 1-D array of class indices")
    if p.ndim != 2 or p.shape != (len(y), len(class_names)):
        raise DataError(f"y_prob must have shape ({len(y)}, {len(class_names)}), got {p.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(class_names):
        raise DataError(f"y_true must hold class indices in 0..{len(class_names) - 1}")
    if not np.isfinite(p).all():
        raise DataError("y_prob contains NaN or infinite values")
    return y.astype(np.int64), p


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _thin(arrays: dict[str, np.ndarray], limit: int = MAX_CURVE_POINTS) -> dict[str, list[float]]:
    n = len(next(iter(arrays.values())))
    keep = np.unique(np.linspace(0, n - 1, limit).round().astype(int)) if n > limit else np.arange(n)
    return {k: [float(x) for x in v[keep]] for k, v in arrays.items()}


def per_class_metrics(y_true, y_pred, num_classes: int) -> list[dict[str, Any]]:
    """Support, predicted count, precision, recall (sensitivity), specificity and F1 per class."""
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))
    n = int(cm.sum())
    rows = []
    for k in range(num_classes):
        tp = int(cm[k, k])
        support = int(cm[k].sum())
        predicted = int(cm[:, k].sum())
        fp = predicted - tp
        tn = n - support - fp
        precision = _ratio(tp, predicted)
        if precision is None and support > 0:
            precision = 0.0
        recall = _ratio(tp, support)
        f1 = None
        if recall is not None:
            f1 = 0.0 if (precision or 0) + recall == 0 else 2 * precision * recall / (precision + recall)
        rows.append(
            {
                "support": support,
                "predicted": predicted,
                "precision": precision,
                "recall": recall,
                "specificity": _ratio(tn, tn + fp),
                "f1": f1,
            }
        )
    return rows


def _averages(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    scored = [r for r in rows if r["support"] > 0]
    total = sum(r["support"] for r in scored)
    macro, weighted = {}, {}
    for key in ("precision", "recall", "specificity", "f1"):
        values = [(r[key], r["support"]) for r in scored if r[key] is not None]
        macro[key] = float(np.mean([v for v, _ in values])) if values else None
        weighted[key] = float(sum(v * s for v, s in values) / total) if values and total else None
    return macro, weighted


def roc_per_class(y_true, y_prob) -> list[dict[str, Any]]:
    """One-vs-rest ROC AUC and curve points per class (None when the class or its rest is absent)."""
    out = []
    for k in range(y_prob.shape[1]):
        positive = y_true == k
        if positive.all() or not positive.any():
            out.append({"auc": None, "fpr": [], "tpr": []})
            continue
        fpr, tpr, _ = roc_curve(positive, y_prob[:, k])
        out.append({"auc": float(roc_auc_score(positive, y_prob[:, k])), **_thin({"fpr": fpr, "tpr": tpr})})
    return out


def confusion(y_true, y_pred, num_classes: int) -> dict[str, list[list[float]]]:
    """Counts (rows = true class) and the row-normalised matrix (rows of absent classes are 0)."""
    counts = confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))
    sums = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, sums, out=np.zeros(counts.shape, dtype=np.float64), where=sums > 0)
    return {"counts": counts.tolist(), "normalized": normalised.round(6).tolist()}


def _named_rows(y: np.ndarray, p: np.ndarray, y_pred: np.ndarray, class_names: list[str],
                notes: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-class rows (with names and AUCs) and ROC curves; a note for each class without samples or calls."""
    rows = per_class_metrics(y, y_pred, len(class_names))
    rocs = roc_per_class(y, p)
    for name, row, roc in zip(class_names, rows, rocs):
        row["name"] = name
        row["auc"] = roc["auc"]
        if row["support"] == 0:
            notes.append(
                f"class {name!r} has no samples: recall, F1 and AUC are undefined (None) and it is left out of "
                f"the macro and weighted averages; {row['predicted']} sample(s) were predicted as it (errors)"
            )
        elif row["predicted"] == 0:
            notes.append(f"class {name!r} was never predicted: its precision is reported as 0")
    return rows, rocs


def _agreement(y: np.ndarray, y_pred: np.ndarray, num_classes: int, notes: list[str]) -> tuple[float | None, float | None]:
    """Cohen's kappa and Matthews' correlation (None where undefined, with a note)."""
    with warnings.catch_warnings():  # undefined values become None with a note below
        warnings.simplefilter("ignore")
        kappa = _clean(cohen_kappa_score(y, y_pred, labels=np.arange(num_classes)))
        mcc = _clean(matthews_corrcoef(y, y_pred))
    if kappa is None:
        notes.append("Cohen's kappa is undefined here (a single class in truth and prediction)")
    return kappa, mcc


def _calibration(y: np.ndarray, p: np.ndarray, n_bins: int) -> dict[str, Any]:
    return {
        "n_bins": n_bins,
        "ece": expected_calibration_error(y, p, n_bins),
        "brier": brier_score(y, p),
        "nll": float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean()),
        "mean_confidence": float(p.max(axis=1).mean()),
        "reliability": reliability_curve(y, p, n_bins),
    }


def _selective(y: np.ndarray, p: np.ndarray, coverages: Sequence[float], targets: Sequence[float]) -> dict[str, Any]:
    return {
        "curve": _thin(coverage_curve(y, p)),
        "accuracy_at_coverage": [accuracy_at_coverage(y, p, c) for c in coverages],
        "threshold_for_accuracy": [threshold_for_accuracy(y, p, t) for t in targets],
        "note": "thresholds here are chosen on the evaluated split itself (optimistic); "
        "pick deployment thresholds on validation data",
    }


def classification_report(
    y_true,
    y_prob,
    class_names: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = 15,
    coverages: Sequence[float] = DEFAULT_COVERAGES,
    targets: Sequence[float] = DEFAULT_TARGETS,
) -> dict[str, Any]:
    """Everything about a set of predictions as one JSON-serialisable dict.

    ``y_prob`` are (calibrated) class probabilities; the prediction is their argmax.
    """
    class_names = [str(c) for c in class_names]
    y, p = check_inputs(y_true, y_prob, class_names)
    num_classes = len(class_names)
    y_pred = p.argmax(axis=1)
    notes: list[str] = []
    rows, rocs = _named_rows(y, p, y_pred, class_names, notes)
    macro, weighted = _averages(rows)
    scored = [r["auc"] for r in rows if r["auc"] is not None]
    kappa, mcc = _agreement(y, y_pred, num_classes, notes)
    return {
        "n_samples": int(len(y)),
        "class_names": class_names,
        "accuracy": float((y_pred == y).mean()),
        "balanced_accuracy": macro["recall"],
        "macro": macro,
        "weighted": weighted,
        "cohen_kappa": kappa,
        "matthews_corrcoef": mcc,
        "macro_auc": float(np.mean(scored)) if scored else None,
        "per_class": [
            {k: row[k] for k in ("name", "support", "predicted", "precision", "recall", "specificity", "f1", "auc")}
            for row in rows
        ],
        "confusion_matrix": confusion(y, y_pred, num_classes),
        "roc": [{"name": name, **roc} for name, roc in zip(class_names, rocs)],
        "calibration": _calibration(y, p, n_bins),
        "bootstrap": bootstrap_ci(y, y_pred, num_classes, n_boot=n_boot, seed=seed),
        "selective": _selective(y, p, coverages, targets),
        "notes": notes,
    }
