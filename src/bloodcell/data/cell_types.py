"""One vocabulary of cell types: the detector's classes (RBC, WBC, Platelets), the white-cell types, and the
spellings people and other tools use for them.

A name is read case-insensitively, with ``_``/``-`` as spaces and a plural ``s`` allowed: ``platelet``,
``Platelets`` and ``PLT`` are the detector's ``Platelets`` (a platelet is never a white cell, even when a
classifier has a ``platelet`` class), ``rbc`` and ``red cell`` are ``RBC``, ``white cell`` is ``WBC`` (an
untyped white cell), and ``Neutrophils`` is the classifier's ``neutrophil``. Corrections CSVs, the service's
review and sample routes and the page all read names through :func:`cell_type`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: The smear classes, in the detector's output order.
SMEAR_LABELS = ("RBC", "WBC", "Platelets")
#: Spellings of the detector's classes (keys as :func:`spelling` writes them).
DETECTOR_ALIASES = {
    **dict.fromkeys(("rbc", "red cell", "red blood cell", "erythrocyte"), "RBC"),
    **dict.fromkeys(("wbc", "white cell", "white blood cell", "leukocyte", "leucocyte"), "WBC"),
    **dict.fromkeys(("platelet", "plt", "thrombocyte"), "Platelets"),
}


def spelling(name: str) -> str:
    """``name`` lower-cased, ``_`` and ``-`` as spaces, runs of spaces as one, and a final plural ``s`` dropped."""
    key = re.sub(r"[\s_-]+", " ", name).strip().lower()
    return key[:-1] if len(key) > 3 and key.endswith("s") and not key.endswith("ss") else key


def cell_type(name: str | None, classes: Iterable[str] = ()) -> str | None:
    """The vocabulary's name for ``name``: a detector class, else one of the classifier's ``classes``; None
    when it is neither."""
    if not name or not name.strip():
        return None
    key = spelling(name)
    if key in DETECTOR_ALIASES:
        return DETECTOR_ALIASES[key]
    return next((c for c in classes if spelling(c) == key), None)


def white_cell_types(classes: Iterable[str]) -> list[str]:
    """The classifier's classes a white-cell box may be given: those that are not detector classes (a
    classifier's ``platelet`` is the detector's ``Platelets``)."""
    return [c for c in classes if spelling(c) not in DETECTOR_ALIASES and c not in SMEAR_LABELS]


def reviewer_classes(classes: Iterable[str]) -> list[str]:
    """Every class a reviewer may give a cell, once each: the white-cell types, then RBC, WBC and Platelets."""
    return white_cell_types(classes) + list(SMEAR_LABELS)

