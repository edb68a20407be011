"""Seeded, vectorised bootstrap confidence intervals for accuracy, macro-F1 and Cohen's kappa."""

from __future__ import annotations

from typing import Any

import numpy as np

from bloodcell.errors import DataError

_CHUNK_ELEMENTS = 4_000_000  # resampled indices held in memory at once


def _counts(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, idx: np.ndarray):
    """Per resample (rows of ``idx``): true, predicted and true-positive counts per class."""
    n_boot = idx.shape[0]
    offset = (np.arange(n_boot) * num_classes)[:, None]
    t = y_true[idx] + offset
    p = y_pred[idx] + offset
    size = n_boot * num_classes
    true_counts = np.bincount(t.ravel(), minlength=size).reshape(n_boot, num_classes)
    pred_counts = np.bincount(p.ravel(), minlength=size).reshape(n_boot, num_classes)
    hit = (y_true == y_pred)[idx]
    tp = np.bincount(t[hit], minlength=size).reshape(n_boot, num_classes)
    return true_counts, pred_counts, tp


def _statistics(true_counts, pred_counts, tp, n: int) -> dict[str, np.ndarray]:
    accuracy = tp.sum(axis=1) / n
    denom = true_counts + pred_counts
    f1 = np.divide(2 * tp, denom, out=np.zeros(tp.shape, dtype=np.float64), where=denom > 0)
    present = true_counts > 0
    macro_f1 = (f1 * present).sum(axis=1) / present.sum(axis=1)
    expected = (true_counts * pred_counts).sum(axis=1) / float(n) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(expected < 1, (accuracy - expected) / (1 - expected), np.nan)
    return {"accuracy": accuracy, "macro_f1": macro_f1, "kappa": kappa}


def bootstrap_ci(
    y_true,
    y_pred,
    num_classes: int,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap intervals for accuracy, macro-F1 and kappa.

    Samples are resampled with replacement ``n_boot`` times with ``numpy.random.default_rng(seed)``.
    Macro-F1 in each resample averages over the classes present in that resample, as the point
    estimate does. Returns ``{metric: {"estimate", "low", "high"}, "n_boot", "confidence", "seed"}``;
    a bound is None when the statistic is undefined in too many resamples (kappa of one class).

    When every prediction is right (or every one wrong), every resample is too and the percentile
    interval collapses onto the estimate, which would claim certainty from any number of images:
    accuracy then gets the Clopper-Pearson interval of a binomial proportion (``"method"`` says so;
    16 of 16 right gives [79.4, 100] %), and macro-F1 and kappa get no bounds.
    """
    yt = np.asarray(y_true).astype(np.int64, copy=False).reshape(-1)
    yp = np.asarray(y_pred).astype(np.int64, copy=False).reshape(-1)
    n = yt.shape[0]
    if n == 0 or yp.shape[0] != n:
        raise DataError(f"bootstrap needs equal, non-empty label arrays (got {n} and {yp.shape[0]})")
    if not 0 < confidence < 1 or n_boot < 1:
        raise DataError("bootstrap needs 0 < confidence < 1 and n_boot >= 1")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    parts: dict[str, list[np.ndarray]] = {"accuracy": [], "macro_f1": [], "kappa": []}
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        for key, values in _statistics(*_counts(yt, yp, num_classes, idx), n).items():
            parts[key].append(values)
    point = _statistics(*_counts(yt, yp, num_classes, np.arange(n)[None, :]), n)
    alpha = (1 - confidence) / 2
    out: dict[str, Any] = {"n_boot": int(n_boot), "confidence": float(confidence), "seed": int(seed)}
    right = int((yt == yp).sum())
    if right in (0, n):
        low, high = _clopper_pearson(right, n, alpha)
        out["accuracy"] = {"estimate": right / n, "low": low, "high": high, "method": "clopper-pearson"}
        for key in ("macro_f1", "kappa"):
            estimate = float(point[key][0])
            out[key] = {"estimate": estimate if np.isfinite(estimate) else None, "low": None, "high": None}
        return out
    for key, chunks in parts.items():
        values = np.concatenate(chunks)
        finite = values[np.isfinite(values)]
        estimate = float(point[key][0])
        if len(finite) < 0.9 * len(values) or not np.isfinite(estimate):
            out[key] = {"estimate": estimate if np.isfinite(estimate) else None, "low": None, "high": None}
            continue
        low, high = np.quantile(finite, [alpha, 1 - alpha])
        out[key] = {"estimate": estimate, "low": float(low), "high": float(high)}
    return out


def _clopper_pearson(right: int, n: int, alpha: float) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of ``right`` successes in ``n`` trials, ``alpha`` in each tail."""
    from scipy.stats import beta

    low = 0.0 if right == 0 else float(beta.ppf(alpha, right, n - right + 1))
    high = 1.0 if right == n else float(beta.ppf(1 - alpha, right + 1, n - right))
    return low, high
