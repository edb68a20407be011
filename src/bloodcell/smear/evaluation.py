"""Smear counting metrics: the pure functions of :mod:`bloodcell.metrics.detection` over the smear classes.

Kept for the importers that still use this module (``cli/count.py``, ``benchmarks/smear_eval.py``);
new code imports :mod:`bloodcell.metrics.detection` directly.
"""

from __future__ import annotations

from typing import Any

from bloodcell.data.boxes import SMEAR_LABELS
from bloodcell.metrics import detection
from bloodcell.metrics.detection import average_precision, iou, match

__all__ = ["average_precision", "evaluate_counts", "iou", "match"]


def evaluate_counts(entries: list[dict[str, Any]], annotations: list[list[tuple]]) -> dict[str, Any]:
    """:func:`bloodcell.metrics.detection.evaluate_counts` over the smear classes (RBC, WBC, Platelets)."""
    return detection.evaluate_counts(entries, annotations, SMEAR_LABELS)
