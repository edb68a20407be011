"""Counting a sample's smear photos from Python, as ``bloodcell.load()`` classifies cells::

    import bloodcell
    from bloodcell.smear.review import Correction

    counter = bloodcell.load_counter()                  # bundled detector and cell classifier
    result = counter.count(["s17-1.jpg", "s17-2.jpg"], sample_id="S-17")
    result.report["differential"]                       # percent, reference interval, flag per type
    print(result.markdown())                            # the report.md text
    for item in result.review_items():                  # referred and doubtful white cells
        print(item.id, item.reason, item.top_k)         # item.crop is the cell's image
    reviewed = result.review([Correction("relabel", item="1-3", label="lymphocyte")])
    reviewed.report["reviewed"]                         # True; reviewed.corrections_csv(), .cells()

The photos of one ``count`` call are one sample: one differential over all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from bloodcell.data.images import ImageSource
from bloodcell.inference.predictor import DEFAULT_REFER_BELOW, load
from bloodcell.smear.counting import NO_CLASSIFIER, count_image, count_photos
from bloodcell.smear.detectors import resolve_detector
from bloodcell.smear.differential import render_report
from bloodcell.smear.learned_detector import check_cell_size
from bloodcell.smear.review import (
    Correction,
    Decision,
    ReviewItem,
    apply_corrections,
    corrected_cells,
    corrections_csv,
    labelstudio_tasks,
    review_items,
    sample_report,
)
from bloodcell.smear.schema import PhotoCount
from bloodcell.smear.typing import typing_summary


@dataclass
class SampleCount:
    """One counted sample: its counts.json document, its photos (for crops) and, once reviewed, the decisions."""

    sample_id: str
    doc: dict[str, Any]
    photos: dict[str, Image.Image]
    classifier: Any = None
    decisions: list[Decision] = field(default_factory=list)
    original: dict[str, Any] | None = None

    @property
    def report(self) -> dict[str, Any]:
        """Counts, differential with reference intervals and flags, remarks and trust text, in plain words."""
        return sample_report(self.doc, self.sample_id)

    def markdown(self) -> str:
        """The report.md text of this sample."""
        return render_report(self.doc, self.sample_id)

    def review_items(self) -> list[ReviewItem]:
        """The white cells meant for a person, with crops and top 3 classes."""
        return review_items(self.doc, self.photos, self.classifier)

    def review(self, corrections: list[Correction]) -> SampleCount:
        """This sample with the reviewer's corrections applied, marked reviewed (this one is left unchanged)."""
        doc, decisions = apply_corrections(self.doc, corrections, self.classes)
        return SampleCount(self.sample_id, doc, self.photos, self.classifier, decisions, self.original or self.doc)

    @property
    def classes(self) -> list[str]:
        return list(getattr(self.classifier, "class_names", []))

    def corrections_csv(self) -> str:
        return corrections_csv(self.decisions, self.sample_id)

    def labelstudio(self) -> list[dict[str, Any]]:
        return labelstudio_tasks(self.doc, self.original or self.doc, self.sample_id)

    def cells(self) -> list[tuple[str, Image.Image]]:
        """The reviewed cells as (``<class>/<name>.png``, image): a ``bloodcell adapt`` folder's contents."""
        return corrected_cells(self.doc, self.decisions, self.photos, self.sample_id, self.classes)


class SmearCounter:
    """A detector and a cell classifier bound together; :meth:`count` counts one sample's photos."""

    def __init__(self, classifier=None, detector: str = "learned", refer_below: float | None = DEFAULT_REFER_BELOW,
                 cell_size_px: float | None = None):
        check_cell_size(cell_size_px)
        resolve_detector(detector)
        self.classifier, self.detector = classifier, detector
        self.refer_below, self.cell_size_px = refer_below, cell_size_px

    def count_photo(self, image: Image.Image) -> dict[str, Any]:
        """Counts, white-cell types, boxes and annotated image of one decoded photo (:func:`count_image`)."""
        return count_image(image, self.classifier, self.detector, self.refer_below, self.cell_size_px)

    def count(self, images: Sequence[ImageSource], sample_id: str = "sample",
              names: Sequence[str] | None = None) -> SampleCount:
        """Count the photos of one sample (paths, bytes, PIL images or arrays); unusable ones go to ``errors``."""
        photos: dict[str, Image.Image] = {}

        def keep(_index: int, photo: PhotoCount, image: Image.Image) -> None:
            photo.width, photo.height = image.width, image.height
            photos[str(len(photos) + 1)] = image

        result = count_photos(images, self.count_photo, sample_id=sample_id, names=names,
                              typing=typing_summary(self.classifier) if self.classifier is not None else None,
                              typing_unavailable=NO_CLASSIFIER, on_photo=keep)
        return SampleCount(sample_id, result.document(), photos, self.classifier)


def load_counter(model: str | Path | None = None, detector: str = "learned",
                 refer_below: float | None = DEFAULT_REFER_BELOW, cell_size_px: float | None = None,
                 engine: str = "torch") -> SmearCounter:
    """A :class:`SmearCounter` with the cell classifier ``model`` (default: the bundled one, as ``bloodcell.load``)
    and ``detector`` (``learned``, ``classical`` or a detector checkpoint)."""
    return SmearCounter(load(model, engine=engine), detector, refer_below, cell_size_px)
