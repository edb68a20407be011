"""The one rule for a lab's name, shared by the CLI (``adapt --lab``, ``detector adapt --lab``), the service (the
``lab`` fields of the page and the API) and the store: spaces around it are dropped, then at most
:data:`MAX_LAB` characters of any kind (letters of any script, digits, punctuation, spaces, a no-break space, a
zero-width non-joiner) except those that cannot be shown on one line or stored safely: control characters (tab, line
break, NUL and the rest of Unicode category Cc), line and paragraph separators (Zl, Zp) and lone surrogates (Cs).
The empty name stands for the samples kept without a lab name.

The rule is checked where a new name is written (:func:`check_lab`: a sample counted into the store under a lab, an
adapting job started, a lab's classifier chosen). A name the store already holds, kept before the rule, is still
looked up as it is (:func:`look_up_lab`: listing, a lab's cell bank, its audit trail, ending its jobs,
adapting a detector from its samples, ``detector adapt --store``)."""

from __future__ import annotations

import unicodedata

from bloodcell.errors import ConfigError
from bloodcell.wording import shown

#: So that the audit trail's target for a lab ("lab:" and the name) fits the store's 200 characters, as the name
#: fits the labs' own columns (a sample's lab, an adapting job's, a lab's chosen classifier: 200 each).
MAX_LAB = 196
#: Unicode categories a lab's name may not hold: controls (NUL included), line and paragraph separators, surrogates.
REFUSED = frozenset({"Cc", "Zl", "Zp", "Cs"})
#: The store's columns for a lab's name: any name up to this long may have been kept before the rule.
MAX_STORED_LAB = 200
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


def look_up_lab(lab: object) -> str:
    """``lab`` without the spaces around it, to look up a lab the store may hold whether or not its name follows the
    rule (one kept before it); ConfigError when the name is longer than any the store holds."""
    if isinstance(lab, str) and len(lab.strip()) <= MAX_STORED_LAB:
        return lab.strip()
    raise ConfigError(f"no lab is named {shown(lab)}: a lab's name in the store has at most {MAX_STORED_LAB} "
                      "characters")
