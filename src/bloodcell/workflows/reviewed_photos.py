"""A lab's reviewed photos for ``bloodcell detector adapt``, from a folder or from the sample store.

* A folder of photos with VOC ``.xml`` or YOLO ``.txt`` labels beside them (:mod:`bloodcell.data.lab_photos`).
* A reviewed sample folder (written by ``bloodcell review apply``; it holds a reviewed counts.json): each
  photo labelled by its boxes as reviewed (relabelled ones with their new class, the cells the reviewer
  added included, boxes marked wrong left out). The photos are found as ``bloodcell review`` finds them.
* The reviewed or signed samples of a lab in the sample store (:mod:`bloodcell.store.adaptation`): each
  stored photo, checked against its SHA-256, labelled by its live cells.

A photo that cannot be used (missing, changed, unreadable, a box off the photo) is skipped with one
sentence; the others are kept. Every box of a reviewed photo is taken as a label: finishing a review
vouches for the counter's boxes the reviewer left as they were.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bloodcell.data.boxes import SMEAR_LABELS, Annotation, clip_box
from bloodcell.data.images import oriented_size
from bloodcell.data.lab_photos import LabPhoto, read_lab_photos
from bloodcell.errors import DataError, ImageError
from bloodcell.provenance import file_sha256
from bloodcell.smear import documents
from bloodcell.smear.referral import box_xyxy, has_box_xyxy
from bloodcell.workflows.review import COUNTS, photo_path, read_counted

if TYPE_CHECKING:
    from bloodcell.store.database import Store

Cell = tuple[str, float, float, float, float]


@dataclass
class ReviewedPhotos:
    """The labelled photos found, what was skipped and why, where they came from, and the store samples used."""

    photos: list[LabPhoto]
    skipped: list[tuple[str, str]]
    where: str
    samples: dict[str, list[str]] = field(default_factory=dict)  # store sample id -> names of its photos used


def _labelled(path: Path, cells: Iterable[Cell], sha256: str, name: str, where: str) -> LabPhoto:
    """``path`` labelled by ``cells`` (in its pixels, as :func:`bloodcell.data.images.read_image` shows it)."""
    width, height = oriented_size(path)
    boxes = []
    for number, (label, *corners) in enumerate(cells, start=1):
        if label not in SMEAR_LABELS:
            raise DataError(f"{where}: cell {number} is a {label!r}, not one of {', '.join(SMEAR_LABELS)}")
        box = clip_box(label, *documents.check_box(corners, width, height, f"{where} cell {number}"), width, height)
        if box is not None:
            boxes.append(box)
    return LabPhoto(path, Annotation(path.name, width, height, boxes), sha256, name)


def from_sample_folder(folder: Path) -> ReviewedPhotos:
    """The photos of the reviewed sample in ``folder`` (its counts.json), labelled as reviewed."""
    counted = read_counted(folder)
    if not (counted.doc.get("review") or {}).get("reviewed"):
        raise DataError(f"{folder}: sample {counted.sample_id} is not reviewed; adapt from the folder "
                        "`bloodcell review apply` wrote")
    photos, skipped = [], []
    for index, entry in enumerate(counted.doc["images"]):
        where = f"{folder / COUNTS} photo {index + 1}"
        try:
            path = photo_path(counted, entry)
            cells = [(b["label"], *box_xyxy(b)) for b in entry["boxes"] if b.get("reviewed") != "wrong"
                     and has_box_xyxy(b)]
            photos.append(_labelled(path, cells, file_sha256(path), f"{counted.sample_id}/{path.name}", where))
        except (DataError, ImageError, OSError) as exc:
            skipped.append((str(entry.get("path") or where), str(exc)))
    return ReviewedPhotos(photos, skipped, f"{folder} (reviewed sample {counted.sample_id})")


def from_folder(folder: str | Path) -> ReviewedPhotos:
    """A reviewed sample folder (holding counts.json) or a folder of labelled photos."""
    folder = Path(folder)
    if (folder / COUNTS).is_file():
        return from_sample_folder(folder)
    photos, skipped = read_lab_photos(folder)
    return ReviewedPhotos(photos, skipped, str(folder))


def from_store(store: Store, lab: str) -> ReviewedPhotos:
    """The photos of ``lab``'s reviewed and signed samples in ``store``."""
    from bloodcell.store.adaptation import reviewed_photos

    with store.session() as session:
        stored = reviewed_photos(session, lab)
    if not stored:
        raise DataError(f"{store.where} holds no reviewed or signed sample of lab {lab!r}; finish the review of "
                        "some of its samples first (or check --lab)")
    photos, skipped, samples = [], [], {}
    for photo in stored:
        name = f"{photo.sample_id}/{photo.name}"
        try:
            path = store.photos.path(photo.sha256)
            if not path.is_file() or file_sha256(path) != photo.sha256:
                raise DataError(f"{path}: the stored photo is missing or was changed on disk (its SHA-256 differs)")
            photos.append(_labelled(path, photo.cells, photo.sha256, name, f"sample {photo.sample_id} photo {photo.name}"))
            samples.setdefault(photo.sample_id, []).append(photo.name)
        except (DataError, ImageError, OSError) as exc:
            skipped.append((name, str(exc)))
    return ReviewedPhotos(photos, skipped, f"lab {lab!r} in {store.where}", samples)


def record_use(store: Store, reviewed: ReviewedPhotos, actor: str, detector: dict[str, Any]) -> None:
    """Keep in the audit trail of each store sample used that it adapted ``detector`` (name, sha256, lab, ...)."""
    from bloodcell.store.adaptation import record_adaptation

    with store.session() as session:
        record_adaptation(session, actor, detector, reviewed.samples)
