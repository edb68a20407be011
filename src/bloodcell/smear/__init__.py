"""Smear-photo counting: classical detector, white-cell typing, differential report, evaluation."""

from __future__ import annotations

from bloodcell.smear.counting import annotate, count_smears, crop_cell

__all__ = ["annotate", "count_smears", "crop_cell"]
