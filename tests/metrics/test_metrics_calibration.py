"""Temperature scaling, ECE and the reliability curve."""

from __future__ import annotations

import numpy as np
import pytest

from bloodcell.metrics.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_curve,
)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_known_temperature(temperature):
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(6000, 8)) * 3
    probs = apply_temperature(true_logits, 1.0)
    labels = (probs.cumsum(1) > rng.random((6000, 1))).argmax(1)  # sample from softmax
    observed = true_logits * temperature  # over/under-confident network
    fitted = fit_temperature(observed, labels)
    assert fitted == pytest.approx(temperature, rel=0.08)
    assert nll(observed, labels, fitted) <= nll(observed, labels, 1.0) + 1e-9


def test_fit_temperature_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 1, 1, 0])
    assert fit_temperature(logits, labels) > 1.0  # half wrong: soften


def test_apply_temperature_rows_sum_to_one_and_flatten():
    logits = np.array([[3.0, 1.0, 0.0]])
    p1, p3 = apply_temperature(logits, 1.0), apply_temperature(logits, 3.0)
    assert p1.sum() == pytest.approx(1.0) and p3.sum() == pytest.approx(1.0)
    assert p3.max() < p1.max() and p3.argmax() == p1.argmax()


def test_ece_hand_computed():
    # confidences 0.95, 0.95 (bin 15, one right) and 0.5, 0.5 (bin 8, both right)
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.5, 0.5], [0.5, 0.5]])
    y = np.array([0, 1, 0, 0])
    # bin (14/15, 1]: acc 0.5, conf 0.95 -> 0.45 ; bin (7/15, 8/15]: acc 1, conf 0.5 -> 0.5
    assert expected_calibration_error(y, probs) == pytest.approx(0.5 * 0.45 + 0.5 * 0.5)
    bins = reliability_curve(y, probs)
    assert len(bins) == 15
    assert [b["count"] for b in bins if b["count"]] == [2, 2]
    assert bins[14]["accuracy"] == 0.5 and bins[14]["confidence"] == pytest.approx(0.95)
    assert bins[0]["accuracy"] is None


def test_ece_zero_for_perfectly_calibrated_bins():
    probs = np.tile([[0.75, 0.25]], (4, 1))
    y = np.array([0, 0, 0, 1])
    assert expected_calibration_error(y, probs) == pytest.approx(0.0)
