"""Selective prediction: accuracy as the least confident cases are referred to a human.

A prediction is accepted when its confidence (top-class probability) is at least a
threshold; the rest are referred. Coverage is the accepted share of samples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bloodcell.errors import DataError


def _sorted(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(y_prob, dtype=np.float64)
    y = np.asarray(y_true).astype(np.int64, copy=False).reshape(-1)
    if p.ndim != 2 or p.shape[0] != y.shape[0] or p.shape[0] == 0:
        raise DataError(f"y_prob must be (N, C) with N = len(y_true) >= 1, got {p.shape} for {y.shape[0]} labels")
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    order = np.argsort(-confidence, kind="stable")
    return confidence[order], correct[order]


def coverage_curve(y_true, y_prob) -> dict[str, np.ndarray]:
    """Operating points ``threshold -> (coverage, accuracy)`` for every distinct confidence.

    Points are ordered by decreasing threshold (increasing coverage); ties in confidence are
    accepted or referred together, as a threshold would do.
    """
    confidence, correct = _sorted(y_true, y_prob)
    n = len(confidence)
    hits = np.cumsum(correct)
    # last index of each run of equal confidence
    ends = np.flatnonzero(np.append(confidence[1:] != confidence[:-1], True))
    accepted = ends + 1
    return {
        "threshold": confidence[ends],
        "coverage": accepted / n,
        "accuracy": hits[ends] / accepted,
    }


def threshold_for_accuracy(y_true, y_prob, target: float = 0.998) -> dict[str, Any]:
    """Lowest confidence threshold whose accepted predictions reach ``target`` accuracy.

    Returns ``{"target", "reached", "threshold", "coverage", "accuracy"}``; when no threshold
    reaches the target, ``reached`` is False and threshold/coverage/accuracy are None. A
    threshold chosen on the split it is measured on is optimistic: choose deployment
    thresholds on validation data.
    """
    curve = coverage_curve(y_true, y_prob)
    ok = np.flatnonzero(curve["accuracy"] >= target)
    if len(ok) == 0:
        return {"target": float(target), "reached": False, "threshold": None, "coverage": None, "accuracy": None}
    i = int(ok[-1])
    return {
        "target": float(target),
        "reached": True,
        "threshold": float(curve["threshold"][i]),
        "coverage": float(curve["coverage"][i]),
        "accuracy": float(curve["accuracy"][i]),
    }


def accuracy_at_coverage(y_true, y_prob, coverage: float = 0.98) -> dict[str, Any]:
    """Accuracy on the ``ceil(coverage * N)`` most confident samples and the threshold it implies."""
    if not 0 < coverage <= 1:
        raise DataError(f"coverage must be in (0, 1], got {coverage}")
    confidence, correct = _sorted(y_true, y_prob)
    n = len(confidence)
    k = max(1, math.ceil(coverage * n - 1e-9))
    return {
        "coverage": float(coverage),
        "accepted": int(k),
        "threshold": float(confidence[k - 1]),
        "accuracy": float(correct[:k].mean()),
    }
