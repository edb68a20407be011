"""Refit a classifier's last layer on a few labelled cells of a new lab (the engine of ``bloodcell adapt``).

The new layer minimises the cross-entropy on the given cells' features plus
``strength * (||W - A||^2 + ||b - a||^2)`` (scaled by the number of cells), by L-BFGS, where the
anchor ``(A, a)`` is either the model's own layer (L2-SP, Li et al. 2018: the layer is pulled back
towards what the model knew) or zero (a fresh ridge-penalised logistic regression on the model's
features, which forgets the model's layer for the given classes). On BCCD with pbc11, which never
saw it, the model's own layer alone is a poor prior (``benchmarks/new_lab.py``); neither anchor wins
on every draw of cells, so which anchor, and the strength, are chosen by stratified cross-validation over the
given cells (all views of a cell on one side), whose out-of-fold predictions of each held-out
cell's plain view also give the accuracy estimate and the temperature (ties in accuracy go to the
lower out-of-fold log-loss; the choice is made on the same folds, so the estimate is slightly
optimistic; with 5-20 cells per class there are too few for a nested split). Features
come as views (V, N, D): the 8 quarter turns and mirrors of each cell, so a few cells train the
layer as eight times as many rotated copies.

Adapting must not break what it was not shown. The rows of classes given no cells keep the model's
own weights, and their biases move with the given classes' (:func:`restore_unshown`), so that on the
lab's cells their logits stand about where they stood against the given classes before adapting.
Out of fold such a class can only take cells (it has none there), so its share of that standing is chosen class
by class: each keeps as much as it can while all of them together take at most :data:`STEAL_TOLERANCE` of the
given cells out of fold (the classes that took fewest first). A type the lab did not show keeps its standing;
the model's classes that mistake the lab's cells lose theirs (measured in ``benchmarks/new_lab.py``). A class
given only a few cells takes part with them.

A restored row is still outvoted on some of its cells by the given classes' refitted rows, so some classes given no
cells are also *gated* (:func:`choose_gated`; the checkpoint holds both layers,
:class:`bloodcell.models.heads.GatedHead`): a cell the model's own layer types as a gated class keeps that type,
whatever the refitted layer says, so the class keeps at least its unadapted recall. Its cost, the given cells the
model's own layer types as it (they stay wrong), is known exactly on all the given cells (the model's own typing
needs no folds): the classes that take fewest are gated first, while together they take at most
:data:`GATE_TOLERANCE` of them, so the model's classes that mistake the lab's cells are not gated. A gated class's row
is restored all the same (leaving it as fitted let the model's classes that mistake the lab's cells take the
standing budget: BCCD's accuracy fell), and the out-of-fold accuracy scores the cells the gate takes by the model's
own typing (an error for a class given no cells).
On BCCD with pbc11 (``benchmarks/new_lab.py``, confirmed labels) the gate lifted a left-out type's kept recall to
108 % for neutrophils (82 % restored only) but not eosinophils (75 %): the model's own layer calls more than 5 % of
the other given types eosinophils, so they are seldom gated. Where the model's confusions are rare among the given
cells but not in the lab (pbc11's erythroblast row, given 3 lymphocytes), a gated class keeps cells it should lose.
A class given no cells and not gated is *at risk* (:attr:`HeadFit.at_risk`): nothing holds its recall, and where its
standing could not be kept it is lost (a BCCD-only model adapted to PBC without eosinophils found 4 % of them), which
``bloodcell adapt`` and the page say, with the share of the given cells the model's own layer typed as it.

Which of those classes the lab has, the cells cannot tell (a gate for every one of them, held above the model's
mistakes among the given cells, still lowered BCCD's accuracy with every type given: tried, not kept), but the user
can: a class they *keep* (``keep``: a type the lab sees but gave fewer than 5 cells of) that the gate does not hold is
gated with a *floor*, just above the own layer's highest confidence (log-odds) in it among the given cells of other
types it calls so (none when it calls none so): a cell the own layer types as that class more confidently than any of
those mistakes keeps the type. The floor is set on the plain view, as cells are typed by default; with ``--tta`` a
turned view of such a mistake may pass it, and the mean over the views decides. Left out and kept, BCCD's confirmed
eosinophils keep 98 % of their recall under pbc11 (75 % not kept), PBC's eosinophils 39 % under a BCCD-only model
(4 %).

The temperature fitted on so few out-of-fold logits is unreliable (folds
separated perfectly drive it towards 0, so the adapted model would be sure of everything): it is
shrunk towards the model's own and bounded (:func:`bounded_temperature`). It is fitted on the cells the gate leaves
to the refitted layer; a cell the gate keeps gets the model's own probabilities (the head scales the own layer's
logits by the adapted temperature over the model's own).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import logsumexp
from sklearn.model_selection import StratifiedKFold

from bloodcell.metrics.calibration import fit_temperature

#: Strengths of the pull towards the model's own layer tried by cross-validation...
STRENGTHS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
#: ... and of the pull towards zero (a fresh layer; 0.5 is scikit-learn's LogisticRegression at C=1).
FRESH_STRENGTHS = (0.05, 0.15, 0.5, 1.5, 5.0)
#: The anchors of :func:`fit_head`: the model's own layer, or zero.
MODEL, FRESH = "model", "fresh"
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
    #: :data:`MODEL` (pulled towards the model's own layer) or :data:`FRESH` (pulled towards zero).
    anchor: str
    #: Per class given no cells (index), the share of its standing restored (:func:`restore_unshown`; None: the
    #: fitted row).
    restored: dict[int, float | None]
    #: The classes whose cells, as the model's own layer types them, keep its typing: given no cells and chosen by
    #: :func:`choose_gated`, or kept on the user's word (``floors``), by index.
    gated: list[int]
    cv_accuracy: float
    cv_accuracy_before: float
    temperature: float
    folds: int
    #: Per class given no cells (index), the share of the given cells the model's own layer types as it
    #: (:func:`own_shares`).
    own_share: dict[int, float]
    #: Per class kept on the user's word (index; :func:`keep_floors`), the own layer's log-odds its gate needs (not
    #: the calibrated confidence a user sees); None where the gate holds all its cells.
    floors: dict[int, float | None] = field(default_factory=dict)

    @property
    def at_risk(self) -> list[int]:
        """The classes given no cells that are not gated: nothing holds their recall, and where the model's own layer
        calls many of the given cells so, their standing cannot be kept and the adapted layer may miss their cells."""
        return sorted(set(self.restored) - set(self.gated))

    @property
    def worse_than_unadapted(self) -> bool:
        """Whether the adapted layer types the given cells worse, out of fold, than the model's own layer does."""
        return self.cv_accuracy < self.cv_accuracy_before


def fit_head(features: np.ndarray, labels: np.ndarray, weight0: np.ndarray, bias0: np.ndarray,
             strength: float, anchor: str = MODEL) -> tuple[np.ndarray, np.ndarray]:
    """The layer (weight (C, D), bias (C,)) fitted on ``features`` (N, D) and class indices ``labels``, starting
    from the model's layer ``weight0``, ``bias0`` and pulled towards it (``anchor`` :data:`MODEL`) or towards zero
    (:data:`FRESH`)."""
    x = torch.as_tensor(features, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.int64)
    w0, b0 = torch.as_tensor(weight0, dtype=torch.float64), torch.as_tensor(bias0, dtype=torch.float64)
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    if anchor not in (MODEL, FRESH):
        raise ValueError(f"anchor must be {MODEL!r} or {FRESH!r}, got {anchor!r}")
    wa, ba = (w0, b0) if anchor == MODEL else (torch.zeros_like(w0), torch.zeros_like(b0))
    optimizer = torch.optim.LBFGS([w, b], max_iter=MAX_ITER, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, y) + strength * (((w - wa) ** 2).sum() + ((b - ba) ** 2).sum()) / len(x)
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32)


def _views(features: np.ndarray, labels: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (V * n, D) features and labels of every view of the chosen ``cells``."""
    return features[:, cells].reshape(-1, features.shape[-1]), np.tile(labels[cells], features.shape[0])


#: Shares of the unshown classes' standing restored by :func:`restore_unshown`, tried from the whole down
#: (``None``: the fitted rows, which adapting pushed down wherever the model mistook the lab's cells for them).
RESTORED = (1.0, 0.75, 0.5, 0.25, 0.0, None)
#: The unshown classes' shares are raised from their fitted rows one step at a time, the step that takes fewest more
#: given cells out of fold first, while together they take at most this share more of them. Out of fold, every cell an
#: unshown class takes is an error and none it finds counts, so one share for all of them, chosen on accuracy, dropped
#: them all (a type left out of BCCD kept 0-29 % of its recall); class by class, a type the lab has but did not show
#: (its row takes few of the other types' cells) keeps its standing, while the model's classes that mistake the lab's
#: cells (pbc11's erythroblast and platelet take BCCD's lymphocytes) stay down.
STEAL_TOLERANCE = 0.05


def restore_unshown(features: np.ndarray, labels: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                    weight0: np.ndarray, bias0: np.ndarray, share: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The fitted layer with each class given no cells back on the model's own row, its bias moved up with the
    given classes' by ``share`` of the mean change of their log-sum-exp over the given cells' plain view
    ``features`` (N, D): at 1, an unshown class stands against the given classes on the lab's cells about where
    it stood before adapting. ``share`` None: the fitted layer as it is."""
    shown = np.isin(np.arange(len(bias)), np.unique(labels))
    if shown.all() or share is None:
        return weight, bias

    def given(w, b):
        z = features @ w[shown].T + b[shown]
        top = z.max(axis=1, keepdims=True)
        return top[:, 0] + np.log(np.exp(z - top).sum(axis=1))

    shift = float(np.mean(given(weight, bias) - given(weight0, bias0)))
    w, b = weight.copy(), bias.copy()
    w[~shown], b[~shown] = weight0[~shown], bias0[~shown] + share * shift
    return w, b


def restore_each(features: np.ndarray, labels: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                 weight0: np.ndarray, bias0: np.ndarray, shares: dict[int, float | None]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`restore_unshown` with each unshown class (index) at its own share."""
    w, b = weight.copy(), bias.copy()
    for share in set(shares.values()):
        wr, br = restore_unshown(features, labels, weight, bias, weight0, bias0, share)
        rows = [c for c, s in shares.items() if s == share]
        w[rows], b[rows] = wr[rows], br[rows]
    return w, b


#: Classes given no cells are gated (a cell the model's own layer types as one of them keeps that type), the class
#: that takes fewest of the given cells first, while the model's own layer types at most this share of the given
#: cells as a gated class (each such cell stays wrong).
GATE_TOLERANCE = 0.05


def own_shares(features: np.ndarray, labels: np.ndarray, weight0: np.ndarray, bias0: np.ndarray) -> dict[int, float]:
    """Per class given no cells (index), the share of the given cells (plain view ``features``, N x D) that the model's
    own layer types as it: each is a cell that class's own row would take from the lab's types."""
    own = (features @ weight0.T + bias0).argmax(1)
    return {int(c): float(np.mean(own == c)) for c in np.setdiff1d(np.arange(len(bias0)), labels)}


def choose_gated(taken: dict[int, float], tolerance: float = GATE_TOLERANCE) -> list[int]:
    """The classes given no cells to gate, from the share of the given cells the model's own layer types as each
    (:func:`own_shares`): the model's own typing does not depend on folds, so what the gate costs is known exactly."""
    gated, total = [], 0.0
    for c in sorted(taken, key=lambda c: (taken[c], c)):
        if total + taken[c] > tolerance + 1e-12:
            break
        gated.append(c)
        total += taken[c]
    return sorted(gated)


def own_typing(features: np.ndarray, weight0: np.ndarray, bias0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's own layer's class and its log-odds (its logit less the log-sum-exp of the others'), per cell
    (``features``, N x D), as :class:`bloodcell.models.heads.GatedHead` reckons them."""
    logits = features @ weight0.T + bias0
    top = logits.argmax(1)
    rows = np.arange(len(top))
    others = logits.copy()
    others[rows, top] = -np.inf
    return top, logits[rows, top] - logsumexp(others, axis=1)


#: A floor stands this far (log-odds) above the highest confidence it must turn away, so that the deployed gate
#: (float32, torch or ONNX) turns it away too.
FLOOR_MARGIN = 1e-3


def keep_floors(features: np.ndarray, labels: np.ndarray, weight0: np.ndarray, bias0: np.ndarray,
                keep: Sequence[int]) -> dict[int, float | None]:
    """Per class to keep (index), :data:`FLOOR_MARGIN` above the own layer's highest log-odds for it among the given
    cells of other classes it types so (plain view ``features``, N x D; None: it types none so): a cell it types so
    more confidently is kept by the gate; none of the given cells of other classes is."""
    top, confidence = own_typing(features, weight0, bias0)
    floors: dict[int, float | None] = {}
    for c in keep:
        mistaken = confidence[(top == c) & (labels != c)]
        floors[int(c)] = float(mistaken.max()) + FLOOR_MARGIN if len(mistaken) else None
    return floors


def gate_keeps(features: np.ndarray, weight0: np.ndarray, bias0: np.ndarray, gated: Sequence[int],
               floors: dict[int, float | None]) -> np.ndarray:
    """Which cells the gate keeps (the own layer types them as a gated class, above its floor if it has one), as
    :class:`bloodcell.models.heads.GatedHead` decides."""
    top, confidence = own_typing(features, weight0, bias0)
    floor = np.array([-np.inf if floors.get(int(c)) is None else floors[int(c)] for c in top])
    return np.isin(top, gated) & (confidence > floor)


@dataclass
class _Candidate:
    """One anchor and strength, scored out of fold at the shares of :data:`RESTORED` it keeps."""

    anchor: str
    strength: float
    shares: dict[int, float | None]
    accuracy: float
    log_loss: float
    logits: np.ndarray


def _out_of_fold(features: np.ndarray, labels: np.ndarray, weight0, bias0, strength: float, anchor: str,
                 folds: StratifiedKFold, kept: np.ndarray, own: np.ndarray) -> _Candidate:
    """Out-of-fold logits at each share of :data:`RESTORED` (unshown rows restored from each fold's training
    cells); the shares of the unshown classes are raised greedily within :data:`STEAL_TOLERANCE`. The cells the gate
    keeps (``kept``, a mask) are scored by the model's own typing (``own``, its class per cell)."""
    logits = np.zeros((len(RESTORED), len(labels), len(bias0)))
    for train, test in folds.split(features[0], labels):
        w, b = fit_head(*_views(features, labels, train), weight0, bias0, strength, anchor)
        for i, share in enumerate(RESTORED):
            wr, br = restore_unshown(features[0, train], labels[train], w, b, weight0, bias0, share)
            logits[i, test] = features[0, test] @ wr.T + br
    unshown = np.setdiff1d(np.arange(len(bias0)), labels)
    rivals = np.delete(logits[-1], unshown, axis=1).max(axis=1)  # the given classes' rows are the same at every share
    taken = (logits[:, :, unshown] > rivals[None, :, None]).mean(axis=1)  # (shares, unshown): held-out cells taken
    steps = np.full(len(unshown), len(RESTORED) - 1)  # every unshown class starts on its fitted row
    while len(steps):  # raise the class whose next share takes fewest more cells, while the total stays within budget
        cost = [taken[i - 1, j] - taken[i, j] if i else np.inf for j, i in enumerate(steps)]
        j = int(np.argmin(cost))
        if not np.isfinite(cost[j]) or taken[steps, np.arange(len(steps))].sum() + cost[j] - taken[-1].sum() > STEAL_TOLERANCE:
            break
        steps[j] -= 1
    shares, chosen = {}, logits[-1].copy()
    for j, c in enumerate(unshown):
        shares[int(c)], chosen[:, c] = RESTORED[steps[j]], logits[steps[j], :, c]
    accuracy = float(np.where(kept, own == labels, chosen.argmax(1) == labels).mean())
    return _Candidate(anchor, strength, shares, accuracy, _log_loss(chosen, labels), chosen)


def _log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of ``labels`` at the temperature that fits ``logits`` best."""
    z = logits / fit_temperature(logits, labels)
    top = z.max(axis=1, keepdims=True)
    return float(np.mean(top[:, 0] + np.log(np.exp(z - top).sum(axis=1)) - z[np.arange(len(labels)), labels]))


def bounded_temperature(fitted: float, own: float, cells: int) -> float:
    """The out-of-fold temperature shrunk towards the model's ``own`` (weight cells / (cells + prior), log space)
    and kept within :data:`TEMPERATURE_RANGE` of it."""
    weight = cells / (cells + TEMPERATURE_PRIOR)
    shrunk = np.exp(weight * np.log(max(fitted, 1e-6)) + (1 - weight) * np.log(own))
    return float(np.clip(shrunk, own / TEMPERATURE_RANGE, own * TEMPERATURE_RANGE))


def adapt_head(features: np.ndarray, labels: np.ndarray, weight0: np.ndarray, bias0: np.ndarray,
               strengths: Sequence[float] = STRENGTHS, seed: int = 0, temperature0: float = 1.0,
               fresh_strengths: Sequence[float] = FRESH_STRENGTHS, keep: Sequence[int] = ()) -> HeadFit:
    """Choose the anchor and strength (``strengths`` towards the model's layer, ``fresh_strengths`` towards zero;
    empty: that anchor is not tried) by stratified k-fold cross-validation over the cells (k = min(5, the
    smallest class with at least 2 cells); a class with fewer cells than k takes part, missing from some folds),
    then refit on all of them. ``features`` are (V, N, D), view 0 the plain one; ``labels`` (N,).

    ``cv_accuracy`` is the out-of-fold accuracy at the chosen strength, ``cv_accuracy_before`` the
    unadapted model's accuracy on the same cells; the temperature is fitted on the out-of-fold logits and
    bounded (:func:`bounded_temperature`, around the model's own ``temperature0``). Classes given no cells
    keep the model's own rows (:func:`restore_unshown`, each class's share chosen out of fold), and some are gated
    (:func:`choose_gated`; the cells they keep are scored by the model's own typing in ``cv_accuracy`` and do not fit
    the temperature); the classes in ``keep`` that the gate does not hold are gated above their floors
    (:func:`keep_floors`).
    """
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels)[np.unique(labels)]
    k = int(min(5, max(2, counts[counts >= 2].min(initial=5))))  # initial: the cap when no class has 2 cells
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    candidates = [(MODEL, s) for s in strengths] + [(FRESH, s) for s in fresh_strengths]
    if not candidates:
        raise ValueError("adapt_head needs at least one strength to try")
    taken = own_shares(features[0], labels, weight0, bias0)
    if not set(keep) <= set(range(len(bias0))):
        raise ValueError(f"classes to keep must be indices below {len(bias0)}, got {sorted(keep)}")
    auto = choose_gated(taken)
    floors = dict(sorted({**keep_floors(features[0], labels, weight0, bias0, [c for c in keep if c not in auto]),
                          **{int(c): None for c in keep if c in auto}}.items()))  # one the gate holds keeps no floor
    gated = sorted(set(auto) | set(floors))
    kept = gate_keeps(features[0], weight0, bias0, gated, floors)
    own = (features[0] @ weight0.T + bias0).argmax(1)  # the model's own typing, once for every candidate
    with warnings.catch_warnings():  # a class with fewer cells than folds: sklearn warns, the folds still work
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        scored = [_out_of_fold(features, labels, weight0, bias0, strength, anchor, folds, kept, own)
                  for anchor, strength in candidates]
    best = max(scored, key=lambda c: (c.accuracy, -c.log_loss))  # ties: the lower log-loss
    weight, bias = fit_head(*_views(features, labels, np.arange(len(labels))), weight0, bias0, best.strength,
                            best.anchor)
    weight, bias = restore_each(features[0], labels, weight, bias, weight0, bias0, best.shares)
    before = float((own == labels).mean())
    fitted = fit_temperature(best.logits[~kept], labels[~kept]) if (~kept).any() else temperature0
    temperature = bounded_temperature(float(fitted), temperature0, int((~kept).sum()))
    return HeadFit(weight, bias, best.strength, best.anchor, best.shares, gated, best.accuracy, before, temperature, k,
                   taken, floors)
