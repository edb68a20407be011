"""Single cell or smear field? Decided by what the cell detector finds on the photo, never by its size.

A single-cell image (a CellaVision-style crop such as PBC's 360x363) is centred on one cell: the
detector finds one white cell (or one platelet, for a platelet crop) near the middle, often among
red cells. A smear field shows no cell in the middle on its own, or several white cells, or red
cells alone. The rule (:func:`photo_kind`): a *single cell* when the detector finds exactly one
white cell whose centre lies within :data:`CENTRE` of the photo's side from the photo's centre, or,
with no white cell, exactly one platelet there; a *smear field* otherwise, and also when the photo
holds no cell the detector knows at all but :data:`MIN_FIELD_CELLS` or more red cells.
A photo with nothing the detector finds is a single cell (the classifier's guard then says whether
it is a cell at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bloodcell.data.cell_types import SMEAR_LABELS

#: A single cell's centre lies within this fraction of the photo's side from the photo's centre.
CENTRE = 0.2
#: Red cells alone: a field when the detector finds at least this many.
MIN_FIELD_CELLS = 2
KINDS = ("cell", "smear")
SWITCH = {"cell": "choose 'smear photos' to count it as a smear field instead",
          "smear": "choose 'single cells' to classify it as one cell instead"}


@dataclass(frozen=True)
class PhotoKind:
    """What a photo was taken for (``kind``: "cell" or "smear"), why in one sentence, and the cells found."""

    kind: str
    reason: str
    cells: dict[str, int]


def _centred(box: dict[str, Any], width: int, height: int) -> bool:
    cx, cy = (box["x1"] + box["x2"]) / 2, (box["y1"] + box["y2"]) / 2
    return abs(cx - width / 2) <= CENTRE * width and abs(cy - height / 2) <= CENTRE * height


def _found(cells: dict[str, int]) -> str:
    names = {"RBC": ("red cell", "red cells"), "WBC": ("white cell", "white cells"),
             "Platelets": ("platelet", "platelets")}
    parts = [f"{n} {names[label][n != 1]}" for label, n in cells.items() if n]
    return ", ".join(parts) or "no cell"


def photo_kind(counts: dict[str, int], boxes: Sequence[dict[str, Any]], width: int, height: int) -> PhotoKind:
    """Single cell or smear field from what the detector found on a ``width`` x ``height`` photo: its ``counts``
    per label and its ``boxes`` (dicts with label, x1, y1, x2, y2); see the module's rule."""
    cells = {label: int(counts.get(label, 0)) for label in SMEAR_LABELS}
    found = f"the detector found {_found(cells)}"
    white = [box for box in boxes if box["label"] == "WBC"]
    platelets = [box for box in boxes if box["label"] == "Platelets"]
    if cells["WBC"] == 1 and len(white) == 1 and _centred(white[0], width, height):
        kind, why = "cell", f"{found}, one white cell in the middle"
    elif not cells["WBC"] and cells["Platelets"] == 1 and len(platelets) == 1 and _centred(platelets[0], width, height):
        kind, why = "cell", f"{found}, one platelet in the middle"
    elif cells["WBC"] > 1:
        kind, why = "smear", f"{found}: more than one white cell"
    elif cells["WBC"] or cells["Platelets"]:
        kind, why = "smear", f"{found}, none alone in the middle"
    elif cells["RBC"] >= MIN_FIELD_CELLS:
        kind, why = "smear", f"{found}: a field of red cells"
    else:
        kind, why = "cell", f"{found}"
    return PhotoKind(kind, f"taken as {'a single cell' if kind == 'cell' else 'a smear field'}: {why}; "
                     f"{SWITCH[kind]}", cells)


def too_small(width: int, height: int) -> PhotoKind:
    """A photo too small for the detector is a single cell."""
    return PhotoKind("cell", f"taken as a single cell: a {width}x{height} image is too small for a smear field",
                     dict.fromkeys(SMEAR_LABELS, 0))
