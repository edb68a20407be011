"""The service's side of review: review items and review states of counted photos, and the /v1/review job.

The service keeps nothing between requests: ``/v1/count`` answers with a ``state`` (what was counted
on each photo, with the photo's id, the SHA-256 of its bytes cut to 16 hex digits), the client
sends the states of a sample back to ``/v1/review`` with the reviewer's corrections, and the photos
themselves when it wants the reviewed cells cut out (matched by id, so names and order do not
matter). The logic is :mod:`bloodcell.smear.review`'s, shared with ``bloodcell review``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from typing import Any

from PIL import Image
from pydantic import ValidationError

from bloodcell.errors import DataError
from bloodcell.log import get_logger
from bloodcell.service.limits import CancelToken, RequestRejected
from bloodcell.service.schemas import (
    ClassProbability,
    PhotoState,
    ReviewItem,
    ReviewRequest,
    ReviewResponse,
    SampleReport,
    SampleState,
)
from bloodcell.smear import documents
from bloodcell.smear import review as logic
from bloodcell.smear.schema import Typing

logger = get_logger(__name__)


def photo_id(data: bytes) -> str:
    """A photo's id: the first 16 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:16]


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def review_of_photo(entry: dict[str, Any], image: Image.Image, classifier: Any) -> list[ReviewItem]:
    """The review items of one counted photo (``entry`` has its ``photo_id``), with crops and top 3."""
    items = logic.review_items({"images": [entry]}, {entry["photo_id"]: image}, classifier)
    return [ReviewItem(id=item.id, photo_id=entry["photo_id"], filename=entry.get("path", ""), box=list(item.xyxy),
                       label=item.box.get("wbc_type"), confidence=item.box.get("confidence"), reason=item.reason,
                       top_k=[ClassProbability(label=name, probability=p) for name, p in item.top_k],
                       crop_png=png_base64(item.crop) if item.crop is not None else None)
            for item in items]


def photo_state(entry: dict[str, Any]) -> PhotoState | None:
    """The review state of one counted photo; None (logged) when the counter's boxes do not fit the schema."""
    try:
        return PhotoState(photo_id=entry["photo_id"], filename=entry.get("path", ""), width=entry["width"],
                          height=entry["height"], counts=entry.get("counts", {}), wbc_types=entry.get("wbc_types", {}),
                          boxes=entry.get("boxes", []),
                          referred=[{"box": b, "reason": r} for b, r in logic.referred_reasons(entry).items()])
    except ValidationError as exc:
        logger.warning("no review state for %s: %s", entry.get("path"), exc.errors()[:1])
        return None


def sample_state(photos: list[PhotoState | None], sample: dict[str, Any], skipped: list[str]) -> SampleState | None:
    """The review state of one count request (None when a photo has none)."""
    if any(photo is None for photo in photos):
        return None
    typing = sample.get("wbc_typing")
    try:
        typing_state = Typing.model_validate(typing) if isinstance(typing, dict) else None
    except ValidationError:
        typing_state = None
    return SampleState(photos=photos, typing=typing_state, typing_unavailable=sample.get("wbc_typing_unavailable"),
                       skipped=skipped)


def count_report(entries: list[dict[str, Any]], sample: dict[str, Any], skipped: list[str],
                 sample_id: str) -> SampleReport:
    """The plain-words differential of the photos of one count request."""
    doc = {"images": entries, "sample": sample, "errors": [{"path": "", "error": s} for s in skipped]}
    return SampleReport(**logic.sample_report(doc, sample_id))


def check_box(box: tuple[float, float, float, float] | list[float], width: int, height: int, where: str) -> None:
    """422 unless ``box`` (x1, y1, x2, y2) passes :func:`bloodcell.smear.documents.check_box` (the CLI's rule too)."""
    try:
        documents.check_box(box, width, height, where)
    except DataError as exc:
        raise RequestRejected(422, "invalid_review", str(exc)) from None


def combine(states: list[SampleState]) -> tuple[dict[str, Any], SampleState]:
    """One sample document (counts.json structure) and one state from the states of several counts."""
    photos, seen = [], set()
    for state in states:
        for photo in state.photos:
            if photo.photo_id in seen:
                raise RequestRejected(422, "duplicate_photo", f"{photo.filename}: this photo is in the sample twice; "
                                      "count each photo of a sample once")
            for number, box in enumerate(photo.boxes, start=1):
                check_box((box.x1, box.y1, box.x2, box.y2), photo.width, photo.height, f"{photo.filename} box {number}")
            seen.add(photo.photo_id)
            photos.append(photo)
    typing = next((s.typing for s in states if s.typing is not None), None)
    unavailable = next((s.typing_unavailable for s in states if s.typing_unavailable), None)
    combined = SampleState(photos=photos, typing=typing, typing_unavailable=unavailable,
                           skipped=[text for s in states for text in s.skipped])
    sample: dict[str, Any] = {"wbc_typing_unavailable": unavailable} if unavailable else {}
    if typing is not None:
        sample["wbc_typing"] = typing.model_dump(exclude_none=True)
    doc = {"images": [_entry(photo) for photo in photos], "sample": sample,
           "errors": [{"path": "", "error": text} for text in combined.skipped]}
    return doc, combined


def _entry(photo: PhotoState) -> dict[str, Any]:
    boxes = [box.model_dump(exclude_none=True) for box in photo.boxes]
    referred = [{**boxes[r.box], "reason": r.reason} for r in photo.referred if r.box < len(boxes)]
    return {"path": photo.filename, "photo_id": photo.photo_id, "width": photo.width, "height": photo.height,
            "counts": dict(photo.counts), "wbc_types": dict(photo.wbc_types), "boxes": boxes, "referred": referred}


def corrections_of(request: ReviewRequest) -> list[logic.Correction]:
    """The request's corrections, then its missing cells, as the review logic takes them (numbered in that order;
    the logic checks the missing cells' boxes against their photos)."""
    corrections = [logic.Correction(c.decision, item=c.item, label=c.label) for c in request.corrections]
    corrections += [logic.Correction("missing", photo=m.photo_id, box=tuple(m.box), label=m.label)
                    for m in request.missing]
    return corrections


def review_job(token: CancelToken, request: ReviewRequest, classes: list[str],
               photos: list[tuple[str, bytes]], decode) -> ReviewResponse:
    """Combine, correct and export a sample in a worker thread; ``photos`` are (name, bytes) uploads, decoded one
    at a time by ``decode(name, data)`` (an image, or an error sentence) only when they hold reviewed cells."""
    doc, combined = combine(request.states)
    try:
        reviewed, decisions = logic.apply_corrections(doc, corrections_of(request), classes,
                                                         reviewed=request.reviewed)
    except DataError as exc:
        raise RequestRejected(422, "invalid_review", str(exc)) from None
    token.check()
    cells, note = _cells_zip(token, reviewed, decisions, photos, decode, request.sample_id, classes)
    return ReviewResponse(
        sample_id=request.sample_id,
        report=SampleReport(**logic.sample_report(reviewed, request.sample_id)),
        state=combined,
        corrections_csv=logic.corrections_csv(decisions, request.sample_id),
        labelstudio=logic.labelstudio_tasks(reviewed, doc, request.sample_id),
        labelstudio_config=logic.labelstudio_config(classes),
        cells=_per_class(cells),
        cells_zip=_zip(cells) if cells else None,
        cells_note=note,
    )


def _cells_zip(token: CancelToken, reviewed: dict[str, Any], decisions: list[logic.Decision],
               photos: list[tuple[str, bytes]], decode, sample_id: str,
               classes: list[str]) -> tuple[list[tuple[str, Image.Image]], str | None]:
    """The reviewed cells cut from the sent photos, one photo decoded at a time; and a note when some are missing."""
    wanted = {logic.photo_key(reviewed["images"][d.photo_number - 1], d.photo_number - 1)
              for d in decisions if d.decision != "wrong" and d.label in classes}
    if not wanted:
        return [], None
    sent = {photo_id(data): (name, data) for name, data in photos}
    cells, missing = [], []
    for key in sorted(wanted):
        token.check()
        if key not in sent:
            missing.append(key)
            continue
        image = decode(*sent[key])
        if isinstance(image, str):
            raise RequestRejected(422, "corrupt_image", image)
        cells += logic.corrected_cells(reviewed, decisions, {key: image}, sample_id, classes)
    names = [e.get("path", "") for e in reviewed["images"] if e.get("photo_id") in missing]
    note = (f"The reviewed cells of {len(missing)} photo(s) ({', '.join(names)}) could not be cut: send those photos "
            "with the review.") if missing else None
    return cells, note


def _per_class(cells: list[tuple[str, Image.Image]]) -> dict[str, int]:
    per_class: dict[str, int] = {}
    for name, _ in cells:
        per_class[name.split("/")[0]] = per_class.get(name.split("/")[0], 0) + 1
    return dict(sorted(per_class.items()))


def _zip(cells: list[tuple[str, Image.Image]]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for name, crop in cells:
            png = io.BytesIO()
            crop.save(png, format="PNG")
            archive.writestr(f"cells/{name}", png.getvalue())
    return base64.b64encode(buffer.getvalue()).decode("ascii")
