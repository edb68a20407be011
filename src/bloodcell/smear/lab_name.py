"""The one rule for a lab's name, shared by the CLI (``adapt --lab``, ``detector adapt --lab``, ``samples lab-audit``),
the service (every ``lab`` field of the page and the API) and the store: spaces around it are dropped, then at most
:data:`MAX_LAB` characters of any kind (letters of any script, digits, punctuation, spaces, a no-break space, a
zero-width non-joiner) except those that cannot be shown on one line or stored safely: control characters (tab, line
break, NUL and the rest of Unicode category Cc), line and paragraph separators (Zl, Zp) and lone surrogates (Cs).
The empty name stands for the samples kept without a lab name."""

from __future__ import annotations

import unicodedata

from bloodcell.errors import ConfigError
from bloodcell.wording import shown

#: So that the audit trail's target for a lab ("lab:" and the name) fits the store's 200 characters, as the name
#: fits the labs' own columns (a sample's lab, an adapting job's, a lab's chosen classifier: 200 each).
MAX_LAB = 196
#: Unicode categories a lab's name may not hold: controls (NUL included), line and paragraph separators, surrogates.
REFUSED = frozenset({"Cc", "Zl", "Zp", "Cs"})
RULE = (f"use at most {MAX_LAB} characters, none of them a control character (such as a tab, a line break or NUL), "
        "a line or paragraph separator or a lone surrogate")


def lab_problem(lab: object) -> str | None:
    """Why ``lab`` (spaces around it dropped) is not a lab's name (one sentence naming the rule), or None."""
    if (isinstance(lab, str) and len(lab.strip()) <= MAX_LAB
            and not any(unicodedata.category(char) in REFUSED for char in lab.strip())):
        return None
    return f"the lab name {shown(lab)} cannot be used: {RULE}"


def check_lab(lab: str) -> str:
    """``lab`` without the spaces around it, if it follows the rule (ConfigError with the rule otherwise)."""
    problem = lab_problem(lab)
    if problem:
        raise ConfigError(problem)
    return lab.strip()
