"""A lab's reviewed samples as labelled photos for adapting the detector, and the audit entry of each use.

A sample whose review is finished (``reviewed``) or signed vouches for its cells: every live cell
(the detector's boxes not removed, the reviewer's added ones) labels its photo. Using a sample to
adapt a detector is kept in its audit trail (``adapt_detector``: which detector file, its SHA-256,
the photos used), so a lab can tell which of its samples shaped a detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from bloodcell.store.audit import record
from bloodcell.store.models import Sample
from bloodcell.store.samples import find, live_cells

#: Statuses of a sample whose cells a person has vouched for.
VOUCHED = ("reviewed", "signed")


@dataclass(frozen=True)
class ReviewedPhoto:
    """A stored photo of a reviewed sample and its live cells as (label, x1, y1, x2, y2)."""

    sample_id: str
    name: str
    sha256: str
    cells: list[tuple[str, float, float, float, float]]


def reviewed_photos(session: Session, lab: str) -> list[ReviewedPhoto]:
    """Every photo of the lab's reviewed or signed samples (by sample id, then position), with its live cells."""
    query = (select(Sample).where(Sample.lab == lab, Sample.status.in_(VOUCHED))
             .options(selectinload(Sample.photos), selectinload(Sample.cells)).order_by(Sample.sample_id))
    photos = []
    for sample in session.scalars(query):
        cells = live_cells(sample)
        for photo in sample.photos:
            photos.append(ReviewedPhoto(sample.sample_id, photo.name, photo.sha256,
                                        [(c.label, c.x1, c.y1, c.x2, c.y2) for c in cells if c.photo_pk == photo.id]))
    return photos


def record_adaptation(session: Session, actor: str, detector: dict[str, Any], used: dict[str, list[str]]) -> None:
    """Keep in each sample's audit trail that its photos (``used``: sample id -> photo names) adapted ``detector``
    (its file name, SHA-256, lab and the classes it kept from the original)."""
    for sample_id, names in used.items():
        record(session, actor, "adapt_detector", f"detector:{detector['name']}"[:200], None,
               {**detector, "photos": names}, find(session, sample_id))
