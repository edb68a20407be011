"""Differential flags only where enough white cells were counted: the whole exact binomial (Clopper-Pearson, Rümke)
95 % interval of a percentage outside the reference interval; otherwise a note says how many cells are needed."""

from __future__ import annotations

import pytest

from bloodcell.smear.differential import (cells_needed, differential, differential_notes, percent_interval,
                                          render_report)


def test_with_two_white_cells_nothing_is_flagged_and_the_notes_say_how_many_are_needed():
    diff = differential({"neutrophil": 1, "lymphocyte": 1})
    assert diff["flags"] == {}
    assert set(diff["unsupported"]) == {"lymphocyte", "monocyte", "eosinophil"}
    notes = " ".join(differential_notes(diff))
    assert "Not flagged: monocyte is below its reference interval, but with 2 white cells" in notes
    assert "about 183 white cells would be needed" in notes  # 0 monocytes: 95% upper limit < 2% from 183 cells


def test_a_large_count_far_outside_the_interval_is_flagged():
    diff = differential({"neutrophil": 90, "lymphocyte": 10, "monocyte": 4, "eosinophil": 2})
    assert diff["flags"] == {"neutrophil": "high", "lymphocyte": "low"}


def test_zero_eosinophils_among_100_cells_is_no_flag():
    diff = differential({"neutrophil": 60, "lymphocyte": 34, "monocyte": 6})
    assert "eosinophil" not in diff["flags"] and diff["unsupported"]["eosinophil"]["needed"] == 368


@pytest.mark.parametrize("k, n, low, high", [(0, 100, 0.0, 3.62), (1, 2, 1.26, 98.74), (50, 100, 39.83, 60.17)])
def test_the_interval_is_the_exact_binomial_one(k, n, low, high):
    # Rümke's table (CLSI H20-A2): 50% of 100 cells -> 40-60 %; 0 of 100 -> 0-4 %
    got = percent_interval(k, n)
    assert got == pytest.approx((low, high), abs=0.01)


def test_cells_needed_is_where_the_interval_first_leaves_the_reference_interval():
    n = cells_needed(0.80, 50, 70, "high")
    assert percent_interval(round(0.8 * n), n)[0] > 70 >= percent_interval(round(0.8 * (n - 1)), n - 1)[0]
    assert cells_needed(0.5, 50, 70, "low") is None  # at the limit itself: never


def test_report_md_has_no_flag_for_two_cells():
    doc = {"images": [], "errors": [], "sample": {"images": 1, "counts": {"WBC": 2}, "wbc_types": {"neutrophil": 1,
                                                                                                    "lymphocyte": 1}}}
    text = render_report(doc, "S")
    assert "| high |" not in text and "| low |" not in text and "**Not flagged**" in text
