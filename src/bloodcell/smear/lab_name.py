"""The one rule for a lab's name, shared by the CLI (``adapt --lab``, ``detector adapt --lab``, ``samples lab-audit``),
the service (every ``lab`` field of the page and the API) and the store: spaces around it are dropped, then at most
:data:`MAX_LAB` printable characters (letters of any script, digits, punctuation, spaces; no tab, line break or
other control character). The empty name stands for the samples kept without a lab name."""

from __future__ import annotations

from bloodcell.errors import ConfigError
from bloodcell.wording import shown

#: So that the audit trail's target for a lab ("lab:" and the name) fits the store's 200 characters, as the name
#: fits the labs' own columns (a sample's lab, an adapting job's, a lab's chosen classifier: 200 each).
MAX_LAB = 196
RULE = f"use at most {MAX_LAB} printable characters (no tabs, line breaks or other control characters)"


def lab_problem(lab: object) -> str | None:
    """Why ``lab`` (spaces around it dropped) is not a lab's name (one sentence naming the rule), or None."""
    if isinstance(lab, str) and len(lab.strip()) <= MAX_LAB and lab.strip().isprintable():
        return None
    return f"the lab name {shown(lab)} cannot be used: {RULE}"


def check_lab(lab: str) -> str:
    """``lab`` without the spaces around it, if it follows the rule (ConfigError with the rule otherwise)."""
    problem = lab_problem(lab)
    if problem:
        raise ConfigError(problem)
    return lab.strip()
