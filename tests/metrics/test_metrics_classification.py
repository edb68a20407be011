"""Classification metrics against scikit-learn and against small hand-computed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    matthews_corrcoef,
    precision_recall_fscore_support,
    roc_auc_score,
)

from bloodcell.errors import DataError
from bloodcell.metrics import classification_report


def _onehot_probs(pred, num_classes, confidence=0.9):
    p = np.full((len(pred), num_classes), (1 - confidence) / (num_classes - 1))
    p[np.arange(len(pred)), pred] = confidence
    return p


@pytest.fixture
def random_case():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, 400)
    logits = rng.normal(size=(400, 5))
    logits[np.arange(400), y] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


def test_matches_sklearn_on_random_predictions(random_case):
    y, p = random_case
    pred = p.argmax(1)
    r = classification_report(y, p, list("abcde"), n_boot=50)
    assert r["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert r["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert r["cohen_kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    assert r["matthews_corrcoef"] == pytest.approx(matthews_corrcoef(y, pred))
    for avg in ("macro", "weighted"):
        prec, rec, f1, _ = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        assert r[avg]["precision"] == pytest.approx(prec)
        assert r[avg]["recall"] == pytest.approx(rec)
        assert r[avg]["f1"] == pytest.approx(f1)
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=range(5), zero_division=0)
    for k, row in enumerate(r["per_class"]):
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (prec[k], rec[k], f1[k], support[k])
        )
        assert row["auc"] == pytest.approx(roc_auc_score(y == k, p[:, k]))
        # specificity = recall of the negative class
        assert row["specificity"] == pytest.approx(((pred != k) & (y != k)).sum() / (y != k).sum())


def test_hand_computed_with_unpredicted_and_absent_class():
    # classes: a, b, c, d.  c is never predicted, d has no samples but is predicted once.
    y = np.array([0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 0, 3])
    r = classification_report(y, _onehot_probs(pred, 4), ["a", "b", "c", "d"], n_boot=20)
    a, b, c, d = r["per_class"]
    assert r["accuracy"] == pytest.approx(4 / 7)
    assert (a["precision"], a["recall"]) == pytest.approx((2 / 3, 2 / 3))
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert (c["precision"], c["recall"], c["f1"], c["predicted"]) == (0.0, 0.0, 0.0, 0)
    assert d["support"] == 0 and d["predicted"] == 1
    assert d["recall"] is None and d["f1"] is None and d["auc"] is None
    assert d["specificity"] == pytest.approx(6 / 7)
    # macro over the three classes with samples only
    assert r["macro"]["recall"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert r["macro"]["f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert r["weighted"]["recall"] == pytest.approx((3 * 2 / 3 + 2 * 1 + 2 * 0) / 7)
    assert any("'c' was never predicted" in n for n in r["notes"])
    assert any("'d' has no samples" in n for n in r["notes"])
    assert r["confusion_matrix"]["counts"] == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]]
    assert r["confusion_matrix"]["normalized"][2] == [0.5, 0.0, 0.0, 0.5]
    assert r["confusion_matrix"]["normalized"][3] == [0.0, 0.0, 0.0, 0.0]
    json.dumps(r, allow_nan=False)  # no NaN anywhere


def test_single_class_truth_gives_none_not_nan():
    y = np.zeros(5, dtype=int)
    r = classification_report(y, _onehot_probs(np.zeros(5, dtype=int), 3), ["x", "y", "z"], n_boot=20)
    assert r["accuracy"] == 1.0
    assert r["cohen_kappa"] is None
    assert all(row["auc"] is None for row in r["per_class"])
    assert r["macro_auc"] is None
    json.dumps(r, allow_nan=False)


@pytest.mark.parametrize(
    "y, p, names",
    [
        (np.array([0, 1]), np.ones((2, 3)) / 3, ["a", "b"]),
        (np.array([0, 5]), np.ones((2, 3)) / 3, ["a", "b", "c"]),
        (np.array([]), np.ones((0, 3)), ["a", "b", "c"]),
        (np.array([0, 1]), np.array([[np.nan, 0.5, 0.5], [0.2, 0.3, 0.5]]), ["a", "b", "c"]),
    ],
)
def test_bad_inputs_raise_clear_errors(y, p, names):
    with pytest.raises(DataError):
        classification_report(y, p, names)
