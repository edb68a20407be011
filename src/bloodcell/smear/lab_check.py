"""A sample's lab check: do its white cells look like those of the labs the classifier learned from?

The classifier's guard marks each typed white cell whose stain or camera is unlike every lab the model
learned from (``unfamiliar_lab`` on its box, :meth:`~bloodcell.inference.ood.OODGuard.unfamiliar`). A sample
whose checked white cells are mostly such cells gets a warning with what to do; a known lab's sample (about
1 % of its cells fall outside the limits by chance) does not. Light on imports: the store and the page use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: A sample is from an unfamiliar lab when at least this share of its checked white cells are (and at least two).
UNFAMILIAR_SHARE = 0.5

#: What a sample from an unfamiliar lab tells its reader.
UNFAMILIAR_SAMPLE = ("{unfamiliar} of {checked} white cells look unlike the cells of every lab this classifier learned "
                     "from (stain, camera or magnification): its typing here is unmeasured and may be far off. Review "
                     "the cells, then adapt the classifier to your lab from the reviewed cells (`bloodcell adapt`) "
                     "and count with the adapted model.")
FAMILIAR_SAMPLE = "{familiar} of {checked} white cells look like those of a lab this classifier learned from."


def lab_check(boxes: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The lab check of a sample's boxes (None when no white cell was checked: no classifier or no guard)."""
    marks = [box["unfamiliar_lab"] for box in boxes if isinstance(box.get("unfamiliar_lab"), bool)]
    if not marks:
        return None
    checked, unfamiliar = len(marks), sum(marks)
    flagged = unfamiliar >= 2 and unfamiliar >= UNFAMILIAR_SHARE * checked
    message = (UNFAMILIAR_SAMPLE if flagged else FAMILIAR_SAMPLE).format(
        checked=checked, unfamiliar=unfamiliar, familiar=checked - unfamiliar)
    return {"checked": checked, "unfamiliar": unfamiliar, "unfamiliar_lab": flagged, "message": message}


def lab_check_text(check: dict[str, Any] | None) -> str:
    """A lab check (:func:`lab_check`'s dict) as one column of samples.csv and of the store's CSV export: its verdict
    and message ("" when no white cell was checked)."""
    if check is None:
        return ""
    return ("unfamiliar lab: " if check["unfamiliar_lab"] else "familiar: ") + check["message"]
