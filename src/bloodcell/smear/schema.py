"""The counted sample: one typed result of the counting loop, and the schema of counts.json.

:func:`bloodcell.smear.counting.count_photos` returns a :class:`SampleResult`; the CLI writes its
:meth:`~SampleResult.document` as counts.json, the service answers with its photos and totals, and the
store keeps it. A document read back (counts.json, a review state) is validated by these models too:
every box's coordinates finite and bounded, every tally a count. Only the fields a counter set are
written (``exclude_unset``), in the order declared here, so counts.json keeps its keys and their order.
"""

from __future__ import annotations

from typing import Annotated, Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: Bounds of a box coordinate: far beyond any accepted photo, and safe to compute with.
COORDINATE = {"ge": -1e7, "le": 1e7, "allow_inf_nan": False}
PROBABILITY = {"ge": 0.0, "le": 1.0, "allow_inf_nan": False}
SHORT = {"max_length": 64}
Coordinate = Annotated[float, Field(**COORDINATE)]
Tally = dict[Annotated[str, Field(max_length=64)], Annotated[int, Field(ge=0, le=10_000_000)]]


class Box(BaseModel):
    """A detected (or reviewer-added) cell box: smear label, detector score, and a white cell's type."""

    model_config = ConfigDict(extra="ignore")

    label: str = Field(**SHORT)
    score: float | None = Field(None, **PROBABILITY)
    x1: float = Field(**COORDINATE)
    y1: float = Field(**COORDINATE)
    x2: float = Field(**COORDINATE)
    y2: float = Field(**COORDINATE)
    count: int = Field(1, ge=1, le=10_000)
    wbc_type: str | None = Field(None, **SHORT)
    confidence: float | None = Field(None, **PROBABILITY)
    referred: bool | None = None
    #: The classifier's lab check: this white cell is unlike the cells of every lab it learned from.
    unfamiliar_lab: bool | None = None


class ReferredCell(Box):
    """A white cell the classifier referred to a person, and why."""

    reason: str | None = Field(None, max_length=500)


class CellSize(BaseModel):
    """The red-cell diameter a photo was read at, and how it was found."""

    red_cell_px: float = Field(gt=0, allow_inf_nan=False)
    from_: str = Field(alias="from", max_length=64)

    model_config = ConfigDict(populate_by_name=True)


#: A class name quoted in reports: 1 to 64 characters, no control character (as ``smear.typing`` quotes one; a
#: checkpoint's own class names, :data:`bloodcell.checkpoint.ClassName`, may be longer).
QuotedClassName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]


class Typing(BaseModel):
    """What typed the white cells and how well it typed another lab's held-out smears."""

    typer: str | None = Field(None, max_length=255)
    fitted_on: str | None = Field(None, max_length=500)
    held_out_smears: int | None = Field(None, ge=0)
    held_out_accuracy: float | None = Field(None, **PROBABILITY)
    adapted_to: str | None = Field(None, max_length=255)
    #: An adapted classifier's own record: its cross-validated accuracy on the lab's cells it was adapted from.
    adapted_cv_accuracy: float | None = Field(None, **PROBABILITY)
    adapted_cells: int | None = Field(None, ge=0)
    #: The types an adapted classifier was given no cells of and may miss (``bloodcell adapt``'s warning).
    adapted_at_risk: list[QuotedClassName] | None = Field(None, max_length=20)


class LabCheck(BaseModel):
    """Whether a sample's white cells look like those of the labs the classifier learned from, and what to do."""

    checked: int = Field(ge=0)
    unfamiliar: int = Field(ge=0)
    unfamiliar_lab: bool
    message: str = Field(max_length=1000)


class PhotoCount(BaseModel):
    """One counted photo: counts per smear label, white cells per type, boxes, referred cells.

    ``sha256`` and ``annotated_png`` are set by the CLI (the photo file's hash, the annotated PNG's path);
    ``photo_id``, ``width`` and ``height`` by callers that review the photo. ``annotated`` (the photo with
    its boxes drawn) is never serialised.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="ignore")

    path: str = Field(max_length=4096)
    sha256: str | None = Field(None, max_length=64)
    counts: Tally = Field(default_factory=dict, max_length=16)
    wbc_types: Tally = Field(default_factory=dict, max_length=64)
    boxes: list[Box] = Field(default_factory=list)
    referred: list[ReferredCell] = Field(default_factory=list)
    cell_size: CellSize | None = None
    annotated_png: str | None = None
    photo_id: str | None = Field(None, pattern=r"^[0-9a-f]{16}$")
    width: int | None = Field(None, ge=1, le=1_000_000)
    height: int | None = Field(None, ge=1, le=1_000_000)
    annotated: Image.Image | None = Field(None, exclude=True)

    def entry(self) -> dict[str, Any]:
        """This photo's counts.json entry (the fields set, in schema order)."""
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)


class SampleTotals(BaseModel):
    """Totals over a sample's counted photos. ``wbc_referred`` counts the white cells meant for a person (referred
    by the classifier or doubtful as detections): the same count as the report's ``referred``."""

    model_config = ConfigDict(extra="ignore")

    images: int = Field(ge=0)
    counts: Tally
    wbc_types: Tally
    wbc_classified: int = Field(ge=0)
    wbc_referred: int = Field(ge=0)
    wbc_typing_unavailable: str | None = Field(None, max_length=500)
    wbc_typing: Typing | None = None
    lab_check: LabCheck | None = None


class CountError(BaseModel):
    """A photo of the sample that could not be counted, and why (one sentence)."""

    path: str
    error: str


class SampleResult(BaseModel):
    """One counted sample: its photos, totals, the photos that could not be counted (the counts.json document)."""

    model_config = ConfigDict(extra="ignore")

    sample_id: str = "sample"
    images: list[PhotoCount]
    sample: SampleTotals
    errors: list[CountError] = Field(default_factory=list)
    border_cells: str | None = None

    def document(self) -> dict[str, Any]:
        """The counts.json document (annotated images left out)."""
        doc = self.model_dump(mode="json", exclude_unset=True, by_alias=True, exclude={"images"})
        return {"sample_id": doc.pop("sample_id", self.sample_id), "images": [p.entry() for p in self.images], **doc}
