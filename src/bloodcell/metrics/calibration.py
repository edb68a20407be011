"""Calibration: temperature scaling, expected calibration error and the reliability curve."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from bloodcell.errors import DataError

#: Search range of the temperature (log scale); wide enough for any sane network.
_LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


def _logits_and_labels(logits, labels) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise DataError(f"logits must be an (N, C) array with N >= 1 and C >= 2, got shape {z.shape}")
    if y.shape[0] != z.shape[0]:
        raise DataError(f"{z.shape[0]} logit rows but {y.shape[0]} labels")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise DataError(f"labels must lie in 0..{z.shape[1] - 1}")
    if not np.isfinite(z).all():
        raise DataError("logits contain NaN or infinite values")
    return z, y


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    z, y = _logits_and_labels(logits, labels)
    logp = log_softmax(z / temperature, axis=1)
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(logits, labels) -> float:
    """Temperature T > 0 minimising the NLL of ``softmax(logits / T)`` on held-out logits.

    Use validation logits, never test logits. The NLL is unimodal in log T, so a bounded
    scalar search on log T in [log 0.05, log 20] finds the optimum; a perfectly separated
    set drives T to the lower bound.
    """
    z, y = _logits_and_labels(logits, labels)
    rows = np.arange(len(y))

    def objective(log_t: float) -> float:
        logp = log_softmax(z * np.exp(-log_t), axis=1)
        return float(-logp[rows, y].mean())

    result = minimize_scalar(objective, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-5})
    return float(np.exp(result.x))


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """Class probabilities ``softmax(logits / temperature)`` as a float64 (N, C) array."""
    if not temperature > 0:
        raise DataError(f"temperature must be positive, got {temperature}")
    z = np.asarray(logits, dtype=np.float64)
    return softmax(z / float(temperature), axis=-1)


def _confidence_and_correct(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(y_prob, dtype=np.float64)
    y = np.asarray(y_true).astype(np.int64, copy=False).reshape(-1)
    if p.ndim != 2 or p.shape[0] != y.shape[0] or p.shape[0] == 0:
        raise DataError(f"y_prob must be (N, C) with N = len(y_true) >= 1, got {p.shape} for {y.shape[0]} labels")
    return p.max(axis=1), (p.argmax(axis=1) == y)


def reliability_curve(y_true, y_prob, n_bins: int = 15) -> list[dict[str, Any]]:
    """Per equal-width confidence bin ``(lower, upper]``: count, accuracy and mean confidence.

    Empty bins are listed with ``count`` 0 and ``accuracy``/``confidence`` None.
    """
    confidence, correct = _confidence_and_correct(y_true, y_prob)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    hits = np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    bins = []
    for b in range(n_bins):
        n = int(counts[b])
        bins.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": n,
                "accuracy": float(hits[b] / n) if n else None,
                "confidence": float(conf_sum[b] / n) if n else None,
            }
        )
    return bins


def expected_calibration_error(y_true, y_prob, n_bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins of ``|accuracy - confidence| * share of samples``."""
    bins = reliability_curve(y_true, y_prob, n_bins)
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def brier_score(y_true, y_prob) -> float:
    """Multi-class Brier score: mean over samples of the squared distance to the one-hot label."""
    p = np.asarray(y_prob, dtype=np.float64)
    y = np.asarray(y_true).astype(np.int64, copy=False).reshape(-1)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())
