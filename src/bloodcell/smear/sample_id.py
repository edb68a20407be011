"""The one rule for a sample id, shared by the CLI (``count --samples``), the service and the store: 1 to
:data:`MAX_SAMPLE_ID` letters of any script, digits, '.', '_', '-' or spaces between them, not starting with '.'.
Such an id is kept, opened again by its address (``/v1/samples/{id}``) and named in files as it is."""

from __future__ import annotations

import unicodedata

from bloodcell.errors import ConfigError
from bloodcell.wording import shown

#: So that an audit entry's target ("sample:" and the id) fits the store's 200 characters.
MAX_SAMPLE_ID = 190
PUNCTUATION = "._-"
RULE = (f"use 1 to {MAX_SAMPLE_ID} letters (of any script), digits, '.', '_', '-' or spaces between them, "
        "not starting with '.'")


def _allowed(char: str) -> bool:
    return char.isalnum() or char in PUNCTUATION or char == " " or unicodedata.category(char)[0] == "M"


def sample_id_problem(sample_id: object) -> str | None:
    """Why ``sample_id`` is not a sample id (one sentence naming the rule), or None when it is one."""
    if (isinstance(sample_id, str) and 0 < len(sample_id) <= MAX_SAMPLE_ID and all(map(_allowed, sample_id))
            and sample_id == sample_id.strip() and not sample_id.startswith(".")
            and unicodedata.category(sample_id[0])[0] != "M"):
        return None
    return f"the sample id {shown(sample_id)} cannot be used: {RULE}"


def check_sample_id(sample_id: str) -> str:
    """``sample_id`` if it follows the rule (ConfigError with the rule otherwise)."""
    problem = sample_id_problem(sample_id)
    if problem:
        raise ConfigError(problem)
    return sample_id
