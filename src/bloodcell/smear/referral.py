"""Which white cells of a counted photo are meant for a person, and why: the one count of referred cells.

A white cell is referred when the classifier typed it below the referral threshold, or when the detector
is not sure it is a white cell (score below :data:`DOUBTFUL_WBC_SCORE`). The sample's ``wbc_referred``,
the report's ``referred``, report.md's table, the review items and the store's referral reasons all
count these cells. Light on imports: the store and the CLI's sample commands use it.
"""

from __future__ import annotations

import math
from typing import Any

#: White-cell boxes the detector scored below this are doubtful: a person checks them.
DOUBTFUL_WBC_SCORE = 0.5


def has_box_xyxy(box: dict[str, Any]) -> bool:
    return all(isinstance(box.get(k), (int, float)) and math.isfinite(box[k]) for k in ("x1", "y1", "x2", "y2"))


def box_xyxy(box: dict[str, Any]) -> tuple[float, float, float, float]:
    return float(box["x1"]), float(box["y1"]), float(box["x2"]), float(box["y2"])


def referred_reasons(entry: dict[str, Any]) -> dict[int, str]:
    """Box index -> the classifier's reason, for the white cells of a photo it referred."""
    listed = {box_xyxy(r): r.get("reason") for r in entry.get("referred", []) if has_box_xyxy(r)}
    reasons = {}
    for index, box in enumerate(entry.get("boxes", [])):
        if box.get("label") == "WBC" and has_box_xyxy(box) and not box.get("reviewed") and (
                box.get("referred") or box_xyxy(box) in listed):
            reasons[index] = listed.get(box_xyxy(box)) or "referred by the classifier"
    return reasons


#: Why a white cell neither referred nor doubtful is reviewed (:func:`review_targets` with ``every_cell``).
EVERY_CELL = "every white cell is reviewed (a lab the model does not know, or building its cell bank)"


def review_targets(entry: dict[str, Any], every_cell: bool = False) -> list[tuple[int, str]]:
    """(box index, reason) of each white-cell box of a photo meant for a person (referred by the classifier, or
    doubtful as a detection), in box order: the one count of referred cells; with ``every_cell``, every white-cell
    box not reviewed yet (:data:`EVERY_CELL` where nothing else is the reason)."""
    referred = referred_reasons(entry)
    targets = []
    for index, box in enumerate(entry.get("boxes", [])):
        if box.get("label") != "WBC" or not has_box_xyxy(box) or box.get("reviewed"):
            continue
        reasons = [referred[index]] if index in referred else []
        score = box.get("score")
        if isinstance(score, (int, float)) and score < DOUBTFUL_WBC_SCORE:
            reasons.append(f"the detector is not sure this is a white cell (score {score:.2f})")
        if reasons or every_cell:
            targets.append((index, "; ".join(reasons) or EVERY_CELL))
    return targets
