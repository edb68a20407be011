"""The one rule for a lab's name (smear/lab_name.py): real names of any script are kept as written (a no-break
space, a narrow no-break space, the Persian zero-width non-joiner); only what cannot be shown on one line or stored
safely is refused (controls, NUL included; line and paragraph separators; lone surrogates), and the sentence says so."""

from __future__ import annotations

import pytest

from bloodcell.errors import ConfigError
from bloodcell.smear.lab_name import MAX_LAB, check_lab, lab_problem

PERSIAN = "آزمایشگاه می\u200cخواهم"  # "mi-khaham": the zero-width non-joiner (category Cf) is part of the spelling


@pytest.mark.parametrize("lab", [PERSIAN, "Labo\u00a0Saint-Louis", "Labo\u202f: nord", "Лаб 2", "x" * MAX_LAB,
                                 "ص" * (MAX_LAB - 1) + "\u200c"])
def test_real_names_of_any_script_are_lab_names(lab):
    assert lab_problem(lab) is None
    assert check_lab(f"  {lab} ") == lab


@pytest.mark.parametrize("lab", ["north\tsouth", "a\x00b", "north\u2028south", "north\u2029south", "a\nb", "a\x7fb",
                                 "a\x85b", "a\ud800b", "x" * (MAX_LAB + 1)])
def test_what_cannot_be_shown_on_one_line_or_stored_is_refused_saying_what(lab):
    problem = lab_problem(lab)
    assert problem is not None and problem.startswith("the lab name ") and "\n" not in problem
    assert problem.endswith(f"cannot be used: use at most {MAX_LAB} characters, none of them a control character "
                            "(such as a tab, a line break or NUL), a line or paragraph separator or a lone surrogate")
    assert "printable" not in problem
    with pytest.raises(ConfigError, match="cannot be used"):
        check_lab(lab)


def test_a_name_that_is_not_a_string_is_refused():
    assert lab_problem(None) is not None and lab_problem(7) is not None
