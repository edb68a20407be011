"""Metrics: pure functions from ``(y_true, y_prob, class_names)`` to plain, JSON-ready data."""

from bloodcell.metrics.bootstrap import bootstrap_ci
from bloodcell.metrics.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from bloodcell.metrics.classification import classification_report, per_class_metrics
from bloodcell.metrics.selective import (
    accuracy_at_coverage,
    coverage_curve,
    threshold_for_accuracy,
)

__all__ = [
    "accuracy_at_coverage",
    "apply_temperature",
    "bootstrap_ci",
    "classification_report",
    "coverage_curve",
    "expected_calibration_error",
    "fit_temperature",
    "per_class_metrics",
    "reliability_curve",
    "threshold_for_accuracy",
]
