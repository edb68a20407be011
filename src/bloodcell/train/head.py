"""Refit a classifier's last layer on a few labelled cells of a new lab (the engine of ``bloodcell adapt``).

The new layer starts from the model's own weights and is pulled back towards them (L2-SP,
Li et al. 2018): it minimises the cross-entropy on the given cells' features plus
``strength * ||W - W0||^2 + ||b - b0||^2`` (per class, scaled by the number of cells), by L-BFGS.
Classes that are not among the given cells keep weights close to the model's, so the adapted
model can still name them; but the given classes' moved weights can take their cells over (on BCCD,
monocytes left out of adapting from 20 cells per class were mostly called something else). The
pull's strength is chosen by stratified cross-validation over the given cells (all views of a
cell on one side), whose out-of-fold predictions of each held-out cell's plain view also give the
accuracy estimate and the temperature (the strength is chosen on the same folds, so the estimate
is slightly optimistic; with 5-20 cells per class there are too few for a nested split). Features
come as views (V, N, D): the 8 quarter turns and mirrors of each cell, so a few cells train the
layer as eight times as many rotated copies.

Adapting must not break what it was not shown. The rows of classes given no cells keep the model's
own weights, and their biases move with the given classes' (:func:`keep_unshown`), so that on the
lab's cells their logits stand about where they stood against the given classes before adapting
(as far as that takes none of the given cells): a left-out type is still found (measured in
``benchmarks/new_lab.py``). A class given only a few cells
takes part with them. The temperature fitted on so few out-of-fold logits is unreliable (folds
separated perfectly drive it towards 0, so the adapted model would be sure of everything): it is
shrunk towards the model's own and bounded (:func:`bounded_temperature`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedKFold

from bloodcell.metrics.calibration import fit_temperature

#: Strengths of the pull towards the model's own layer tried by cross-validation.
STRENGTHS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
MAX_ITER = 200
#: The fitted temperature is shrunk towards the model's own in log space by n / (n + this), n the cells given...
TEMPERATURE_PRIOR = 50
#: ... and kept within this factor of the model's own.
TEMPERATURE_RANGE = 3.0


@dataclass
class HeadFit:
    """The refitted layer, the chosen strength and the cross-validated figures on the given cells."""

    weight: np.ndarray
    bias: np.ndarray
    strength: float
    cv_accuracy: float
    cv_accuracy_before: float
    temperature: float
    folds: int


def fit_head(features: np.ndarray, labels: np.ndarray, weight0: np.ndarray, bias0: np.ndarray,
             strength: float) -> tuple[np.ndarray, np.ndarray]:
    """The layer (weight (C, D), bias (C,)) fitted on ``features`` (N, D) and class indices ``labels``."""
    x = torch.as_tensor(features, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.int64)
    w0, b0 = torch.as_tensor(weight0, dtype=torch.float64), torch.as_tensor(bias0, dtype=torch.float64)
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=MAX_ITER, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + strength * (((w - w0) ** 2).sum() + ((b - b0) ** 2).sum()) / len(x)
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32)


def _views(features: np.ndarray, labels: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (V * n, D) features and labels of every view of the chosen ``cells``."""
    return features[:, cells].reshape(-1, features.shape[-1]), np.tile(labels[cells], features.shape[0])


def _out_of_fold(features: np.ndarray, labels: np.ndarray, weight0, bias0, strength: float,
                 folds: StratifiedKFold) -> np.ndarray:
    logits = np.zeros((len(labels), len(bias0)))
    for train, test in folds.split(features[0], labels):
        w, b = fit_head(*_views(features, labels, train), weight0, bias0, strength)
        logits[test] = features[0, test] @ w.T + b
    return logits


#: Shares of the unshown classes' standing restored by :func:`keep_unshown`, tried from the whole down.
RESTORED = (1.0, 0.75, 0.5, 0.25, 0.0)
#: ... the largest whose layer gets right all but this share of the given cells that the best candidate gets right
#: (a lab's own labels are not all right: BCCD's "eosinophils" include neutrophils).
RESTORE_TOLERANCE = 0.1


def keep_unshown(features: np.ndarray, labels: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                 weight0: np.ndarray, bias0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fitted layer with each class given no cells back on the model's own row, its bias moved up with the
    given classes' (the mean change of their log-sum-exp over the given cells' plain view ``features`` (N, D)),
    so that an unshown class stands against the given classes on the lab's cells about where it stood before
    adapting; but only as far as it takes few of the given cells (the largest share of :data:`RESTORED` that
    loses at most :data:`RESTORE_TOLERANCE` of them; failing all, the fitted rows): where the model mistook
    the lab's cells for an unshown class, adapting keeps the fix."""
    shown = np.isin(np.arange(len(bias)), np.unique(labels))
    if shown.all():
        return weight, bias

    def given(w, b):
        z = features @ w[shown].T + b[shown]
        top = z.max(axis=1, keepdims=True)
        return top[:, 0] + np.log(np.exp(z - top).sum(axis=1))

    shift = float(np.mean(given(weight, bias) - given(weight0, bias0)))
    candidates = []
    for share in RESTORED:
        w, b = weight.copy(), bias.copy()
        w[~shown], b[~shown] = weight0[~shown], bias0[~shown] + share * shift
        candidates.append((int(((features @ w.T + b).argmax(1) == labels).sum()), w, b))
    candidates.append((int(((features @ weight.T + bias).argmax(1) == labels).sum()), weight, bias))
    best = max(right for right, _, _ in candidates)
    return next((w, b) for right, w, b in candidates if right >= best - RESTORE_TOLERANCE * len(labels))


def bounded_temperature(fitted: float, own: float, cells: int) -> float:
    """The out-of-fold temperature shrunk towards the model's ``own`` (weight cells / (cells + prior), log space)
    and kept within :data:`TEMPERATURE_RANGE` of it."""
    weight = cells / (cells + TEMPERATURE_PRIOR)
    shrunk = np.exp(weight * np.log(max(fitted, 1e-6)) + (1 - weight) * np.log(own))
    return float(np.clip(shrunk, own / TEMPERATURE_RANGE, own * TEMPERATURE_RANGE))


def adapt_head(features: np.ndarray, labels: np.ndarray, weight0: np.ndarray, bias0: np.ndarray,
               strengths: Sequence[float] = STRENGTHS, seed: int = 0, temperature0: float = 1.0) -> HeadFit:
    """Choose the strength by stratified k-fold cross-validation over the cells (k = min(5, the smallest class
    with at least 2 cells); a class with fewer cells than k takes part, missing from some folds), then refit on
    all of them. ``features`` are (V, N, D), view 0 the plain one; ``labels`` (N,).

    ``cv_accuracy`` is the out-of-fold accuracy at the chosen strength, ``cv_accuracy_before`` the
    unadapted model's accuracy on the same cells; the temperature is fitted on the out-of-fold logits and
    bounded (:func:`bounded_temperature`, around the model's own ``temperature0``). Classes given no cells
    keep the model's own rows (:func:`keep_unshown`).
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels)[np.unique(labels)]
    k = int(min(5, max(2, counts[counts >= 2].min(initial=2))))
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    scored = []
    with warnings.catch_warnings():  # a class with fewer cells than folds: sklearn warns, the folds still work
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for strength in strengths:
            logits = _out_of_fold(features, labels, weight0, bias0, strength, folds)
            scored.append((float((logits.argmax(1) == labels).mean()), strength, logits))
    accuracy, strength, logits = max(scored, key=lambda s: (s[0], s[1]))  # ties: the stronger pull
    weight, bias = fit_head(*_views(features, labels, np.arange(len(labels))), weight0, bias0, strength)
    weight, bias = keep_unshown(features[0], labels, weight, bias, weight0, bias0)
    before = float(((features[0] @ weight0.T + bias0).argmax(1) == labels).mean())
    temperature = bounded_temperature(float(fit_temperature(logits, labels)), temperature0, len(labels))
    return HeadFit(weight, bias, strength, accuracy, before, temperature, k)
