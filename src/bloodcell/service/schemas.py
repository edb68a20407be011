"""Response models of the HTTP API (they also document it in the OpenAPI schema).

The counted photo's parts (boxes, tallies, typing) are the counts.json schema of :mod:`bloodcell.smear.schema`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from bloodcell.errors import ConfigError
from bloodcell.smear.lab_name import check_lab, look_up_lab
from bloodcell.smear.sample_id import RULE as SAMPLE_ID_RULE
from bloodcell.smear.sample_id import sample_id_problem
from bloodcell.smear.schema import Box, Coordinate, Tally, Typing


def _lab_validator(rule: Callable[[str], str]) -> AfterValidator:
    """A field validator applying a lab-name function of :mod:`bloodcell.smear.lab_name` (the name without the spaces
    around it); its refusal becomes a 422 with the rule's sentence."""
    def validate(lab: str) -> str:
        try:
            return rule(lab)
        except ConfigError as exc:
            raise PydanticCustomError("lab_name", "{problem}", {"problem": str(exc)}) from None

    return AfterValidator(validate)


#: Every ``lab`` field of the API that names a lab anew (the count's, starting an adapting job, choosing a lab's
#: classifier): a lab's name by :mod:`bloodcell.smear.lab_name`.
LabName = Annotated[str, _lab_validator(check_lab)]
#: Every ``lab`` field that only looks a lab up (its bank, its audit trail): any name the store may hold.
StoredLab = Annotated[str, _lab_validator(look_up_lab)]


class ErrorResponse(BaseModel):
    """Every refused request: a short machine-readable code and one clear sentence."""

    error: str = Field(description="Short code, e.g. unsupported_media_type, image_too_large, busy, timeout.")
    message: str = Field(description="One sentence saying what was wrong.")
    request_id: str | None = None


class ClassProbability(BaseModel):
    label: str
    probability: float


class CellResult(BaseModel):
    """One uploaded cell image. A file that could not be used has ``error`` set and no label."""

    filename: str
    label: str | None = None
    confidence: float | None = Field(None, description="Calibrated probability of the label.")
    referred: bool | None = Field(None, description="True when the result should be checked by a person.")
    reason: str | None = Field(None, description="Why the result was referred.")
    note: str | None = Field(None, description=(
        "A caution that does not refer the result, e.g. the image shows several white cells."))
    top_k: list[ClassProbability] = Field(default_factory=list)
    error: str | None = None
    gradcam_png: str | None = Field(None, description=(
        "Base64 PNG LayerCAM heat map over the cell (only with explain=true): where the model's score is most "
        "sensitive; not the reason for the class."))


class ClassifyResponse(BaseModel):
    model: str
    results: list[CellResult]


class SmearImageResult(BaseModel):
    """One smear photo: counts by cell type, white-cell differential, boxes, annotated image."""

    filename: str
    photo_id: str | None = Field(None, description="The photo's id in review item ids (<photo_id>-<box number>).")
    width: int | None = None
    height: int | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    wbc_types: dict[str, Any] = Field(default_factory=dict)
    boxes: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None
    annotated_png: str | None = Field(None, description="Base64 PNG of the photo with the detections drawn.")


class PhotoKindResult(BaseModel):
    """What one photo was taken for in "auto" mode, decided by the cells the detector finds on it."""

    filename: str
    kind: str | None = Field(None, description="'cell' (classify it as one cell) or 'smear' (count it as a field).")
    reason: str | None = Field(None, description="Why, and how to switch, in one sentence.")
    cells: dict[str, int] = Field(default_factory=dict, description="Cells the detector found, per class.")
    error: str | None = None


class PhotoKindResponse(BaseModel):
    results: list[PhotoKindResult]


class CountRow(BaseModel):
    cell: str
    count: int


class DifferentialRow(BaseModel):
    type: str
    count: int
    percent: float
    reference: str = Field(description="Adult reference interval, e.g. 50-70%; empty when there is none.")
    flag: str = Field(description="'above the reference interval', 'below the reference interval' or empty.")


class SampleReport(BaseModel):
    """A sample's differential in plain words, as report.md has it: counts, percentages against reference
    intervals with flags, remarks, how much to trust the typing, and whether a person reviewed it."""

    sample_id: str
    photos: int
    skipped: int
    counts: list[CountRow]
    white_cells_typed: int
    differential: list[DifferentialRow]
    notes: list[str]
    typing_unavailable: str | None = None
    trust: str | None = None
    lab_check: str | None = Field(None, description="Set when the sample's white cells look unlike those of every lab "
                                  "the classifier learned from: what that means and what to do.")
    referred: int = Field(description="White cells still waiting for a person (referred or doubtful).")
    reviewed: bool
    review_summary: str | None = None


class ReviewItem(BaseModel):
    """A white cell meant for a person: referred by the classifier or doubtful as a detection."""

    id: str = Field(description="<photo_id>-<box number>: how a correction names this cell.")
    photo_id: str
    filename: str
    box: list[float] = Field(description="x1, y1, x2, y2 in the photo's pixels.")
    label: str | None = Field(None, description="The model's call.")
    confidence: float | None = None
    reason: str
    top_k: list[ClassProbability] = Field(default_factory=list)
    crop_png: str | None = Field(None, description="Base64 PNG of the cell as the classifier saw it.")


class ReferredState(BaseModel):
    box: int = Field(ge=0, description="Index of the box in the photo's boxes.")
    reason: str = Field(max_length=500)


class PhotoState(BaseModel):
    """One counted photo in a review state."""

    photo_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    filename: str = Field(max_length=255)
    width: int = Field(ge=1, le=1_000_000)
    height: int = Field(ge=1, le=1_000_000)
    counts: Tally = Field(max_length=16)
    wbc_types: Tally = Field(max_length=64)
    boxes: list[Box] = Field(max_length=50_000)
    referred: list[ReferredState] = Field(default_factory=list, max_length=10_000)


class SampleState(BaseModel):
    """What /v1/review needs of counted photos: send back the ``state`` of each /v1/count response unchanged."""

    photos: list[PhotoState] = Field(max_length=1024)
    typing: Typing | None = None
    typing_unavailable: str | None = Field(None, max_length=500)
    skipped: list[str] = Field(default_factory=list, max_length=1024)


class CountResponse(BaseModel):
    images: list[SmearImageResult]
    sample: dict[str, Any] = Field(default_factory=dict, description="Totals and differential over all photos.")
    sample_id: str = "sample"
    report: SampleReport | None = Field(None, description="The sample's differential in plain words.")
    review: list[ReviewItem] = Field(default_factory=list, description="The white cells meant for a person.")
    classes: list[str] = Field(default_factory=list, description="Classes a reviewer may give a white cell.")
    refer_below: float = Field(description="The server's referral threshold: white cells typed below it are referred.")
    detector: str = Field(description="The smear detector that counted the cells (an adapted one names its lab).")
    state: SampleState | None = Field(None, description="Send back to /v1/review (with other counts of the sample).")
    stored_sample: str | None = Field(None, description="The sample kept in the store (signed in only).")


class Correction(BaseModel):
    """The reviewer's decision on one box (any box of the sample, by id)."""

    item: str = Field(max_length=100, description="<photo_id>-<box number>, as in review item ids.")
    decision: Literal["accept", "relabel", "wrong"]
    label: str | None = Field(None, max_length=64, description="The right class, for relabel.")


class MissingCell(BaseModel):
    """A cell the detector missed, drawn by the reviewer."""

    photo_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    box: list[Coordinate] = Field(min_length=4, max_length=4, description="x1, y1, x2, y2 in the photo's pixels.")
    label: str = Field(max_length=64)


class ReviewRequest(BaseModel):
    """The ``review`` field of /v1/review (JSON)."""

    model_config = ConfigDict(extra="forbid")

    sample_id: str = Field("sample", description=f"The sample's id: {SAMPLE_ID_RULE}.")
    states: list[SampleState] = Field(min_length=1, max_length=256)
    corrections: list[Correction] = Field(default_factory=list, max_length=10_000)
    missing: list[MissingCell] = Field(default_factory=list, max_length=10_000)
    reviewed: bool = Field(True, description="False: only combine the counts into one differential.")

    @field_validator("sample_id")
    @classmethod
    def _one_rule(cls, sample_id: str) -> str:
        problem = sample_id_problem(sample_id)
        if problem:
            raise ValueError(problem)
        return sample_id


class ReviewResponse(BaseModel):
    sample_id: str
    report: SampleReport
    state: SampleState = Field(description="The counts combined into one state (without the corrections).")
    corrections_csv: str = Field(description="One row per decision: photo, box, the model's call, decision, class.")
    labelstudio: list[dict[str, Any]] = Field(description="Label Studio tasks: reviewed boxes as annotations.")
    labelstudio_config: str = Field(description="The Label Studio labelling config for those tasks.")
    cells: dict[str, int] = Field(default_factory=dict, description="Reviewed cells per class in cells_zip.")
    cells_zip: str | None = Field(None, description=(
        "Base64 ZIP of cells/<class>/<name>.png, the reviewed cells (a `bloodcell adapt` folder); "
        "only when the photos were sent."))
    cells_note: str | None = Field(None, description="Why there are no cells, when there are none.")


class ModelInfo(BaseModel):
    name: str
    engine: str
    class_names: list[str]
    input_size: int
    temperature: float
    ood_guard: bool
    gradcam: bool = Field(description="Heat maps (LayerCAM) available: explain=true works.")
    refer_below: float = Field(description="The server's referral threshold.")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class HealthResponse(BaseModel):
    status: str
    version: str
    model: str
    detector: str = Field(description="The smear detector /v1/count counts with (an adapted one names its lab).")
    refer_below: float = Field(description="Cells typed below this confidence are referred to a person.")
    count_model: str | None = Field(None, description="The adapted classifier /v1/count types white cells with, when "
                                    "one was chosen for the lab (absent: `model`).")
