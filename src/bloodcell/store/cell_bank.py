"""A lab's cell bank in the store: the white cells whose class a person confirmed or corrected, read where they lie.

The bank of a lab is every live white cell of its reviewed or signed samples whose class a reviewer vouched
for: confirmed, relabelled to a white-cell type, or added with its type (a decision taken back by an undo no
longer vouches; moving a box leaves the vouching as it was). Nothing is copied: :func:`bank_counts` counts the
cells per type, :func:`bank_crops` cuts each from its stored photo (checked against its SHA-256) with the
project's crop (:func:`bloodcell.framing.crop_around`). Adapting a classifier from a sample's cells is kept in
its audit trail (``adapt_classifier``: who, when, the model file, the cells used).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from bloodcell.data.images import read_image
from bloodcell.errors import ImageError
from bloodcell.framing import CONTEXT, crop_around
from bloodcell.smear.review import WANTED, still_needed
from bloodcell.store.adaptation import VOUCHED
from bloodcell.store.audit import record
from bloodcell.store.database import can_hold
from bloodcell.store.errors import NotFoundError, StoreError
from bloodcell.store.models import Cell, Decision, Photo, Sample
from bloodcell.store.samples import find

#: Whether a (not taken back) decision leaves the cell's class vouched for by a person; None: as it was (a move).
_VOUCHES = {"confirm": True, "relabel": True, "add": True, "platelet": False, "remove": False, "move": None}


@dataclass(frozen=True)
class BankCell:
    """One cell of the bank: its sample, its id in the store, its type as reviewed, its photo and box."""

    sample_id: str
    cell_id: int
    cell_class: str
    photo_sha256: str
    box: tuple[float, float, float, float]


@dataclass
class BankCrops:
    """The bank's cells cut from their photos (``ids``: sample id/cell id), what could not be cut and why, and
    the cells used per sample."""

    images: list[Image.Image] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    samples: dict[str, list[int]] = field(default_factory=dict)


def vouched(decisions: Iterable[Decision]) -> bool:
    """Whether a cell's decisions, oldest first, leave its class vouched for (each undo takes back the latest)."""
    state, taken = False, []
    for decision in decisions:
        if decision.undo:
            state = taken.pop() if taken else False
            continue
        taken.append(state)
        effect = _VOUCHES.get(decision.action, False)
        state = state if effect is None else effect and (decision.action != "add" or decision.after_class is not None)
    return state


def bank_cells(session: Session, lab: str) -> list[BankCell]:
    """The cells of ``lab``'s bank, by sample id then cell id."""
    if not can_hold(session, lab):
        return []
    rows = session.execute(
        select(Cell, Sample.sample_id, Photo.sha256).join(Sample, Cell.sample_pk == Sample.id)
        .join(Photo, Cell.photo_pk == Photo.id)
        .where(Sample.lab == lab, Sample.status.in_(VOUCHED), Cell.label == "WBC", Cell.removed.is_(False),
               Cell.cell_class.is_not(None))
        .order_by(Sample.sample_id, Cell.id)).all()
    decided: dict[int, list[Decision]] = {}
    if rows:
        query = (select(Decision).join(Sample, Decision.sample_pk == Sample.id)
                 .where(Sample.lab == lab, Sample.status.in_(VOUCHED)).order_by(Decision.id))
        for decision in session.scalars(query):
            decided.setdefault(decision.cell_pk, []).append(decision)
    return [BankCell(sample_id, cell.id, cell.cell_class, sha256, (cell.x1, cell.y1, cell.x2, cell.y2))
            for cell, sample_id, sha256 in rows if vouched(decided.get(cell.id, []))]


def bank_counts(session: Session, lab: str, types: Iterable[str] = ()) -> dict[str, int]:
    """Cells per type in ``lab``'s bank; each of ``types`` is listed, with 0 when the bank has none."""
    counts = Counter(cell.cell_class for cell in bank_cells(session, lab))
    return {**dict.fromkeys(types, 0), **dict(sorted(counts.items()))}


def bank_summary(session: Session, lab: str, types: Iterable[str] = ()) -> dict[str, Any]:
    """What the review shows of ``lab``'s bank: its cells per type (each of ``types`` listed), how many more each
    type needs to reach :data:`WANTED`, and :data:`WANTED` itself."""
    counts = bank_counts(session, lab, types)
    return {"lab": lab, "counts": counts, "needed": still_needed(counts), "wanted": WANTED}


def bank_crops(session: Session, photos, lab: str, context: float = CONTEXT) -> BankCrops:
    """The cells of ``lab``'s bank cut from their stored photos (``photos``: the store's photo folder), each
    photo decoded once; a photo missing, changed on disk or unreadable skips its cells, with the reason."""
    crops = BankCrops()
    cells = bank_cells(session, lab)
    by_photo: dict[str, list[BankCell]] = {}
    for cell in cells:
        by_photo.setdefault(cell.photo_sha256, []).append(cell)
    for sha256, kept in by_photo.items():
        try:
            image = read_image(photos.get(sha256))
        except (StoreError, NotFoundError, ImageError) as exc:
            crops.skipped += [(f"{c.sample_id}/cell {c.cell_id}", str(exc)) for c in kept]
            continue
        for cell in kept:
            crops.images.append(crop_around(image, cell.box, context))
            crops.labels.append(cell.cell_class)
            crops.ids.append(f"{cell.sample_id}/{cell.cell_id}")
            crops.samples.setdefault(cell.sample_id, []).append(cell.cell_id)
    return crops


def record_classifier_adaptation(session: Session, actor: str, classifier: dict[str, Any],
                                 used: dict[str, list[int]], classes: dict[str, str]) -> None:
    """Keep in each sample's audit trail that its cells (``used``: sample id -> cell ids; ``classes``: each
    "sample id/cell id" -> type) adapted ``classifier`` (its file name, SHA-256, lab, base model)."""
    for sample_id, cell_ids in used.items():
        types = Counter(classes[f"{sample_id}/{cell_id}"] for cell_id in cell_ids)
        record(session, actor, "adapt_classifier", f"classifier:{classifier['name']}"[:200], None,
               {**classifier, "cells": cell_ids, "cells_per_type": dict(sorted(types.items()))},
               find(session, sample_id))
