"""Label-free statistics of a classifier's predictions on unlabelled cells (pure functions).

They compare an adapted model's class probabilities with the unadapted model's on the same cells, so that a rule
can decide without labels whether to keep the adaptation: how unsure the calls are (mean entropy), how varied
they are (entropy of the mean prediction: it falls towards 0 when the calls collapse onto one class), and how
many calls stayed the same (agreement).
"""

from __future__ import annotations

import numpy as np


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of probabilities (..., C)."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return -(probs * np.log(probs)).sum(axis=-1)


def prediction_statistics(probs: np.ndarray, reference: np.ndarray | None = None) -> dict[str, float]:
    """``mean_entropy``, ``spread`` (entropy of the mean prediction), ``mean_confidence`` and, against the
    ``reference`` probabilities of the same cells, ``agreement`` (share of cells given the same class)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or not len(probs):
        raise ValueError("probabilities must be a non-empty (N, C) array")
    out = {"mean_entropy": float(entropy(probs).mean()), "spread": float(entropy(probs.mean(axis=0))),
           "mean_confidence": float(probs.max(axis=1).mean())}
    if reference is not None:
        out["agreement"] = float((np.asarray(reference).argmax(axis=1) == probs.argmax(axis=1)).mean())
    return out
