"""BCCD's typed white cells: the smears of ``wbc_labels.csv`` with their white-cell boxes, and the
frozen split of those smears that typing, fine-tuning and adaptation measurements share.

``wbc_labels.csv`` names the main white cell of 293 smears; each smear's largest annotated WBC
box is that cell. :func:`held_out_split` keeps 30 % of the smears (stratified by type, seeded)
out of every fitting, so figures on them stay honest. Those labels are not all right: a review of
each main cell (:func:`read_type_review`, ``image_id,label,reviewed_as``) says which a person can confirm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bloodcell.data.boxes import Box
from bloodcell.data.locate import dataset_root
from bloodcell.data.tables import read_csv
from bloodcell.data.voc import parse_voc
from bloodcell.errors import DataError

#: White-cell types of ``wbc_labels.csv`` (all of them PBC classes).
BCCD_TYPES = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")


@dataclass(frozen=True)
class TypedSmear:
    """A BCCD smear whose main white cell has a type; ``boxes`` are its WBC boxes, largest first."""

    image_id: str
    wbc_type: str
    path: Path
    boxes: tuple[Box, ...]

    @property
    def main_box(self) -> Box:
        return self.boxes[0]


def read_wbc_labels(path: str | Path) -> list[tuple[str, str]]:
    """``(image_id, wbc_type)`` rows of a BCCD ``wbc_labels.csv``."""
    return [(row["image_id"].strip(), (row["wbc_type"] or "").strip().lower())
            for row in read_csv(path, "WBC label file", ("image_id", "wbc_type"))[1] if row["image_id"]]


#: ``reviewed_as`` of a cell whose type a reviewer could not tell from the image.
UNCLEAR = "unclear"


def read_type_review(path: str | Path) -> dict[str, tuple[str, str]]:
    """``{image_id: (label, reviewed_as)}`` of a review of BCCD's white-cell types: ``reviewed_as`` is the type
    the reviewer sees (the label itself when it is confirmed) or :data:`UNCLEAR`."""
    review: dict[str, tuple[str, str]] = {}
    for line, row in enumerate(read_csv(path, "label review file", ("image_id", "label", "reviewed_as"))[1], start=2):
        image_id, label, seen = (str(row[k] or "").strip() for k in ("image_id", "label", "reviewed_as"))
        if label not in BCCD_TYPES or seen not in (*BCCD_TYPES, UNCLEAR):
            raise DataError(f"{path}, line {line}: label {label!r} and reviewed_as {seen!r} must be BCCD "
                            f"types ({', '.join(BCCD_TYPES)}), or reviewed_as {UNCLEAR!r}")
        if not image_id or image_id in review:
            raise DataError(f"{path}, line {line}: missing or repeated image_id {image_id!r}")
        review[image_id] = (label, seen)
    return review


def typed_smears(data_root: str | Path | None = None) -> tuple[list[TypedSmear], list[tuple[str, str]]]:
    """The labelled BCCD smears with at least one WBC box, and the (image id, reason) of those left out."""
    root = dataset_root("bccd", data_root)
    smears, skipped = [], []
    for image_id, wbc_type in read_wbc_labels(root / "wbc_labels.csv"):
        if wbc_type not in BCCD_TYPES:
            skipped.append((image_id, f"unknown wbc_type {wbc_type!r}"))
            continue
        xml = root / "Annotations" / f"{image_id}.xml"
        if not xml.is_file():
            skipped.append((image_id, "no annotation file"))
            continue
        boxes = sorted((b for b in parse_voc(xml).boxes if b.label == "WBC"), key=lambda b: -b.width * b.height)
        if not boxes:
            skipped.append((image_id, "no WBC box"))
            continue
        smears.append(TypedSmear(image_id, wbc_type, root / "JPEGImages" / f"{image_id}.jpg", tuple(boxes)))
    if not smears:
        raise DataError(f"{root}: no labelled BCCD smear with a WBC box")
    return smears, skipped


def held_out_split(truth: list[str], seed: int = 0, test_fraction: float = 0.3) -> np.ndarray:
    """Boolean mask of held-out smears, stratified by type (classes with one smear stay in train)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(truth), bool)
    for name in sorted(set(truth)):
        index = np.flatnonzero(np.array(truth) == name)
        rng.shuffle(index)
        held[index[: int(round(test_fraction * len(index))) if len(index) > 1 else 0]] = True
    return held


def held_out_ids(smears: list[TypedSmear], seed: int = 0) -> set[str]:
    """Image ids of the held-out smears (never used to fit heads, to fine-tune or to adapt)."""
    held = held_out_split([s.wbc_type for s in smears], seed)
    return {s.image_id for s, h in zip(smears, held) if h}
