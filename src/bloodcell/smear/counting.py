"""Smear photo -> counts, white-cell types and annotated image; a sample's photos -> one :class:`SampleResult`.

``count_image`` counts one decoded photo; ``count_photos`` is the one loop over a sample's photos, used by
``bloodcell count`` (:mod:`bloodcell.workflows.count`), the web service's ``/v1/count``, :class:`SmearCounter`
(:mod:`bloodcell.smear.sample_counter`) and the tests. Nothing is written to disk here; each counted photo
carries its annotated image (never serialised).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from bloodcell.data.boxes import SMEAR_LABELS, Box
from bloodcell.data.images import ImageSource, read_image, to_rgb
from bloodcell.errors import ConfigError, ImageError
from bloodcell.framing import background_colour, crop_around
from bloodcell.inference.ood import UNFAMILIAR
from bloodcell.inference.predictor import DEFAULT_REFER_BELOW
from bloodcell.progress import track
from bloodcell.smear.classical import count_detections
from bloodcell.smear.detectors import resolve_detector
from bloodcell.smear.lab_check import lab_check
from bloodcell.smear.referral import review_targets
from bloodcell.smear.schema import CountError, PhotoCount, SampleResult, SampleTotals
from bloodcell.writing import name_text

COLOURS = {"RBC": (220, 30, 30), "WBC": (30, 60, 230), "Platelets": (20, 170, 60)}
#: Smallest side of a photo that can show a smear (a few red cells).
MIN_SMEAR_SIDE = 64


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, colour, font) -> None:
    """``text`` in white on a box of ``colour``, so it reads on any smear."""
    left, top, right, bottom = draw.textbbox(xy, text, font=font)
    draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=colour)
    draw.text(xy, text, fill=(255, 255, 255), font=font)


def _legend(draw: ImageDraw.ImageDraw, boxes: Sequence[dict[str, Any]], font, line: int) -> None:
    """A key in the top-left corner: each class's colour and how many were counted."""
    counts: Counter = Counter()
    for box in boxes:
        counts[box["label"]] += box.get("count", 1)
    y = line // 2
    for label, colour in COLOURS.items():
        _label(draw, (line // 2, y), f"{label}: {counts.get(label, 0)}", colour, font)
        y += line


def annotate(image: Image.Image, boxes: Sequence[dict[str, Any]]) -> Image.Image:
    """A copy of ``image`` with each box drawn in its class colour, white cells and platelets labelled
    (type and confidence) in readable type, and a key of the colours with the counts."""
    out = to_rgb(image).copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 320))
    size = max(11, round(max(out.size) / 45))
    font = ImageFont.load_default(size=size)
    for box in boxes:
        colour = COLOURS.get(box["label"], (0, 0, 0))
        draw.rectangle([box["x1"], box["y1"], box["x2"], box["y2"]], outline=colour, width=width)
    for box in (b for b in boxes if b["label"] != "RBC"):
        text = box.get("wbc_type") or box["label"]
        if box.get("confidence") is not None:
            text = f"{text} {box['confidence']:.2f}"
        _label(draw, (box["x1"] + width, max(0.0, box["y1"] - size - 2)), text, COLOURS.get(box["label"], (0, 0, 0)),
               font)
    _legend(draw, boxes, font, round(size * 1.5))
    return out


def _box_record(d: Box) -> dict[str, Any]:
    record = {"label": d.label, "score": round(d.score, 4), "x1": round(d.x1, 1), "y1": round(d.y1, 1),
              "x2": round(d.x2, 1), "y2": round(d.y2, 1)}
    if d.count > 1:
        record["count"] = d.count
    return record


def _classify(classifier, image: Image.Image, boxes: list[dict[str, Any]],
              refer_below: float | None, tta: bool = False) -> list[dict[str, Any]]:
    """Classify each WBC box's crop; fills wbc_type/confidence/referred; returns the referred cells."""
    wbcs = [b for b in boxes if b["label"] == "WBC"]
    if not wbcs:
        return []
    fill = background_colour(image)
    crops = [crop_around(image, (b["x1"], b["y1"], b["x2"], b["y2"]), fill=fill) for b in wbcs]
    referred = []
    # the detector already says these are white cells: only low confidence refers them (no "is it a cell" guard)
    for box, pred in zip(wbcs, classifier.predict(crops, top_k=1, refer_below=refer_below, tta=tta, guard=False)):
        if pred.error is not None:
            box["wbc_type"], box["confidence"] = None, None
            continue
        box["wbc_type"], box["confidence"] = pred.label, round(float(pred.confidence), 4)
        if getattr(classifier, "guard", None) is not None:
            box["unfamiliar_lab"] = bool(pred.note and pred.note.startswith(UNFAMILIAR))
        if pred.referred:
            box["referred"] = True
            referred.append({**box, "reason": pred.reason})
    return referred


def count_image(image: Image.Image, classifier=None, detector: str = "learned",
                refer_below: float | None = DEFAULT_REFER_BELOW, cell_size_px: float | None = None,
                *, tta: bool = False) -> dict[str, Any]:
    """Counts, WBC types and boxes of one decoded smear photo (plus ``annotated``, ``referred`` and the
    red-cell size the photo was read at; ``tta``: white cells typed over the 8 dihedral views).
    ImageError for a photo too small to show a smear."""
    if min(image.size) < MIN_SMEAR_SIDE:
        raise ImageError(f"a {image.width}x{image.height} image is too small to be a smear photo "
                         f"(at least {MIN_SMEAR_SIDE} pixels a side)")
    detect = resolve_detector(detector)
    if hasattr(detect, "detect"):
        detections, size = detect.detect(image, cell_size_px)
    else:
        detections, size = detect(image, cell_size_px), None
    boxes = [_box_record(d) for d in detections]
    referred = _classify(classifier, image, boxes, refer_below, tta) if classifier is not None else []
    types = Counter(b["wbc_type"] for b in boxes if b.get("wbc_type"))
    return {"counts": count_detections(detections), "wbc_types": dict(sorted(types.items())), "boxes": boxes,
            "referred": referred, "annotated": annotate(image, boxes),
            "cell_size": None if size is None else {"red_cell_px": round(size.pixels, 1), "from": size.method}}


def sample_totals(entries: Sequence[dict[str, Any]], typing_unavailable: str | None = None) -> dict[str, Any]:
    """Totals over the images of one sample: counts, wbc_types, classified cells and the cells meant for a person
    (:func:`review_targets`)."""
    counts = dict.fromkeys(SMEAR_LABELS, 0)
    types: Counter = Counter()
    referred = 0
    for entry in entries:
        for label, n in entry["counts"].items():
            counts[label] = counts.get(label, 0) + n
        types.update(entry["wbc_types"])
        referred += len(review_targets(entry))
    sample = {"images": len(entries), "counts": counts, "wbc_types": dict(sorted(types.items())),
              "wbc_classified": sum(types.values()), "wbc_referred": referred}
    if typing_unavailable:
        sample["wbc_typing_unavailable"] = typing_unavailable
    checked = lab_check([box for entry in entries for box in entry.get("boxes", [])])
    if checked is not None:
        sample["lab_check"] = checked
    return sample


#: How border cells are counted (kept with every counts.json and report).
BORDER_NOTE = ("Every visible cell is counted, cells cut by the photo's border included, as in the TXL-PBC labels "
               "the counter is measured against.")
#: Why white cells are not typed when no classifier is given.
NO_CLASSIFIER = "no cell classifier loaded"

#: Counts one decoded photo: the :func:`count_image` dict (counts, wbc_types, boxes, referred, annotated, cell_size).
PhotoCounter = Callable[[Image.Image], dict[str, Any]]


def photo_name(source: ImageSource, index: int) -> str:
    """How a photo is named in a sample: its path, else ``image-<n>`` numbered from 1 in the sample."""
    return str(source) if isinstance(source, (str, Path)) else f"image-{index + 1}"


def count_photos(sources: Sequence[ImageSource], count_photo: PhotoCounter, *, sample_id: str = "sample",
                 names: Sequence[str] | None = None, typing: dict[str, Any] | None = None,
                 typing_unavailable: str | None = None, kept: Mapping[str, PhotoCount] | None = None,
                 on_photo: Callable[[int, PhotoCount, Image.Image], None] | None = None,
                 progress: str | None = None) -> SampleResult:
    """The one counting loop: count a sample's photos (paths, bytes, PIL images or arrays) in input order.

    Each photo is named by ``names`` (default :func:`photo_name`); a photo named in ``kept`` (counted by an
    interrupted run) is taken as it is. ``on_photo(index, photo, image)`` is called after the ``index``-th photo is counted (to
    save its annotated image, log it, or stop the job). A photo that cannot be read or counted (ImageError)
    goes to ``errors`` with one sentence naming it. ``typing`` (:func:`typing_summary`) or
    ``typing_unavailable`` says what typed the white cells; ``progress`` labels a progress bar.
    """
    if names is not None and len(names) != len(sources):
        raise ConfigError(f"names has {len(names)} entries for {len(sources)} images")
    items: Iterable[tuple[int, ImageSource]] = enumerate(sources)
    if progress:
        items = track(list(items), progress, total=len(sources), unit="photos")
    photos, errors = [], []
    for index, source in items:
        name = names[index] if names is not None else photo_name(source, index)
        if kept and name in kept:
            photos.append(kept[name])
            continue
        try:
            image = read_image(source)
            photo = PhotoCount.model_validate({**count_photo(image), "path": name})
            if on_photo is not None:
                on_photo(index, photo, image)
        except ImageError as exc:
            message = name_text(str(exc))
            errors.append(CountError(path=name, error=message if message.startswith(name) else f"{name}: {message}"))
            continue
        photos.append(photo)
    totals = sample_totals([p.entry() for p in photos], typing_unavailable if typing is None else None)
    if typing is not None:
        totals["wbc_typing"] = typing
    return SampleResult(sample_id=sample_id, images=photos, sample=SampleTotals(**totals), errors=errors,
                        border_cells=BORDER_NOTE)
