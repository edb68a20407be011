"""Selective prediction and bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score

from bloodcell.metrics import (
    accuracy_at_coverage,
    bootstrap_ci,
    coverage_curve,
    threshold_for_accuracy,
)


@pytest.fixture
def synthetic():
    rng = np.random.default_rng(3)
    n, c = 5000, 8
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += rng.uniform(0, 6, n)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


@pytest.mark.parametrize("target", [0.95, 0.99, 0.998])
def test_threshold_reaches_requested_accuracy(synthetic, target):
    y, p = synthetic
    res = threshold_for_accuracy(y, p, target=target)
    assert res["reached"]
    accepted = p.max(1) >= res["threshold"]
    assert accepted.mean() == pytest.approx(res["coverage"])
    achieved = (p.argmax(1) == y)[accepted].mean()
    assert achieved == pytest.approx(res["accuracy"]) and achieved >= target
    # the threshold is the lowest that works: accepting one more confidence level fails
    lower = p.max(1)[p.max(1) < res["threshold"]]
    if len(lower):
        wider = p.max(1) >= lower.max()
        assert (p.argmax(1) == y)[wider].mean() < target


def test_unreachable_target_reports_not_reached():
    y = np.array([1, 0])
    p = np.array([[0.9, 0.1], [0.8, 0.2]])  # most confident is wrong
    res = threshold_for_accuracy(y, p, target=0.99)
    assert res == {"target": 0.99, "reached": False, "threshold": None, "coverage": None, "accuracy": None}


def test_coverage_curve_is_monotone_and_ties_grouped():
    y = np.array([0, 1, 0, 1])
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    curve = coverage_curve(y, p)
    assert list(curve["coverage"]) == [0.5, 0.75, 1.0]  # the two 0.9s come together
    assert list(curve["accuracy"]) == [0.5, 2 / 3, 0.75]


def test_accuracy_at_coverage(synthetic):
    y, p = synthetic
    full = accuracy_at_coverage(y, p, 1.0)
    assert full["accuracy"] == pytest.approx((p.argmax(1) == y).mean())
    r98 = accuracy_at_coverage(y, p, 0.98)
    assert r98["accepted"] == 4900
    order = np.argsort(-p.max(1), kind="stable")[:4900]
    assert r98["accuracy"] == pytest.approx((p.argmax(1) == y)[order].mean())
    assert r98["accuracy"] >= full["accuracy"]


def test_bootstrap_contains_estimate_and_is_reproducible(synthetic):
    y, p = synthetic
    pred = p.argmax(1)
    a = bootstrap_ci(y, pred, 8, n_boot=300, seed=7)
    b = bootstrap_ci(y, pred, 8, n_boot=300, seed=7)
    c = bootstrap_ci(y, pred, 8, n_boot=300, seed=8)
    assert a == b and a != c
    assert a["accuracy"]["estimate"] == pytest.approx((pred == y).mean())
    assert a["macro_f1"]["estimate"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert a["kappa"]["estimate"] == pytest.approx(cohen_kappa_score(y, pred))
    for key in ("accuracy", "macro_f1", "kappa"):
        assert a[key]["low"] < a[key]["estimate"] < a[key]["high"]
        assert a[key]["high"] - a[key]["low"] < 0.05


def test_bootstrap_interval_matches_binomial_width():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    pred = np.where(rng.random(2000) < 0.9, y, 1 - y)
    ci = bootstrap_ci(y, pred, 2, n_boot=1000, seed=0)["accuracy"]
    acc = (pred == y).mean()
    half = 1.96 * np.sqrt(acc * (1 - acc) / 2000)
    assert (ci["high"] - ci["low"]) / 2 == pytest.approx(half, rel=0.15)


@pytest.mark.parametrize("right", [16, 0])
def test_a_set_all_right_or_all_wrong_gets_the_exact_binomial_interval_not_a_collapsed_one(right):
    """The percentile bootstrap of 16/16 right is [100, 100]: certainty from 16 images. The exact interval is not."""
    from scipy.stats import binomtest

    truth = np.arange(16) % 4
    predicted = truth if right else (truth + 1) % 4
    ci = bootstrap_ci(truth, predicted, 4, n_boot=200)
    exact = binomtest(right, 16).proportion_ci(0.95, method="exact")
    assert ci["accuracy"]["method"] == "clopper-pearson" and ci["accuracy"]["estimate"] == right / 16
    assert ci["accuracy"]["low"] == pytest.approx(exact.low) and ci["accuracy"]["high"] == pytest.approx(exact.high)
    assert ci["accuracy"]["high"] - ci["accuracy"]["low"] > 0.2
    assert ci["macro_f1"]["low"] is None and ci["kappa"]["low"] is None
    one_wrong = bootstrap_ci(truth, np.where(np.arange(16) == 0, 1, truth), 4, n_boot=200)
    assert "method" not in one_wrong["accuracy"] and one_wrong["accuracy"]["low"] < 15 / 16
