"""Smear photo -> counts, white-cell types and annotated image (the counts.json structure).

``count_smears`` is the one entry point used by the CLI and the web service: nothing is
written to disk; each image entry carries its annotated photo under ``"annotated"`` (a PIL
image, dropped when serialising).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from bloodcell.data.images import ImageSource, read_image
from bloodcell.errors import ConfigError, ImageError
from bloodcell.smear.classical import LABELS, Detection, count_detections
from bloodcell.smear.detectors import resolve_detector

COLOURS = {"RBC": (220, 30, 30), "WBC": (30, 60, 230), "Platelets": (20, 170, 60)}
#: The cell fills ~45% of the crop's area, as in the PBC single-cell images: side / sqrt(0.45).
CROP_CONTEXT = 1.5
REFER_BELOW = 0.6


def crop_cell(image: Image.Image, box: tuple[float, float, float, float], context: float = CROP_CONTEXT) -> Image.Image:
    """Square crop centred on ``box`` with side ``context`` x its longer side; outside is the median colour."""
    x1, y1, x2, y2 = box
    side = max(1, round(max(x2 - x1, y2 - y1) * context))
    left, top = round((x1 + x2 - side) / 2), round((y1 + y2 - side) / 2)
    fill = tuple(int(v) for v in np.median(np.asarray(image).reshape(-1, 3), axis=0))
    canvas = Image.new("RGB", (side, side), fill)
    region = image.crop((max(0, left), max(0, top), min(image.width, left + side), min(image.height, top + side)))
    canvas.paste(region, (max(0, -left), max(0, -top)))
    return canvas


def annotate(image: Image.Image, boxes: Sequence[dict[str, Any]]) -> Image.Image:
    """A copy of ``image`` with each box drawn in its class colour and labelled."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 320))
    for box in boxes:
        colour = COLOURS.get(box["label"], (0, 0, 0))
        draw.rectangle([box["x1"], box["y1"], box["x2"], box["y2"]], outline=colour, width=width)
        if box["label"] != "RBC":
            text = box.get("wbc_type") or box["label"]
            if box.get("confidence") is not None:
                text = f"{text} {box['confidence']:.2f}"
            draw.text((box["x1"] + 3, box["y1"] + 2), text, fill=colour)
    return out


def _box_record(d: Detection) -> dict[str, Any]:
    record = {"label": d.label, "score": round(d.score, 4), "x1": round(d.x1, 1), "y1": round(d.y1, 1),
              "x2": round(d.x2, 1), "y2": round(d.y2, 1)}
    if d.count > 1:
        record["count"] = d.count
    return record


def _classify(classifier, image: Image.Image, boxes: list[dict[str, Any]], refer_below: float) -> list[dict[str, Any]]:
    """Classify each WBC box's crop; fills wbc_type/confidence/referred; returns the referred cells."""
    wbcs = [b for b in boxes if b["label"] == "WBC"]
    if not wbcs:
        return []
    crops = [crop_cell(image, (b["x1"], b["y1"], b["x2"], b["y2"])) for b in wbcs]
    referred = []
    # the detector already says these are white cells: only low confidence refers them (no "is it a cell" guard)
    for box, pred in zip(wbcs, classifier.predict(crops, top_k=1, refer_below=refer_below, guard=False)):
        if pred.error is not None:
            box["wbc_type"], box["confidence"] = None, None
            continue
        box["wbc_type"], box["confidence"] = pred.label, round(float(pred.confidence), 4)
        if pred.referred:
            box["referred"] = True
            referred.append({**box, "reason": pred.reason})
    return referred


def count_image(image: Image.Image, classifier=None, detector: str = "centernet",
                refer_below: float = REFER_BELOW) -> dict[str, Any]:
    """Counts, WBC types and boxes of one decoded smear photo (plus ``annotated`` and ``referred``)."""
    detections = resolve_detector(detector)(image)
    boxes = [_box_record(d) for d in detections]
    referred = _classify(classifier, image, boxes, refer_below) if classifier is not None else []
    types = Counter(b["wbc_type"] for b in boxes if b.get("wbc_type"))
    return {"counts": count_detections(detections), "wbc_types": dict(sorted(types.items())), "boxes": boxes,
            "referred": referred, "annotated": annotate(image, boxes)}


def sample_totals(entries: Sequence[dict[str, Any]], typing_unavailable: str | None = None) -> dict[str, Any]:
    """Totals over the images of one sample: counts, wbc_types, classified and referred cells."""
    counts = dict.fromkeys(LABELS, 0)
    types: Counter = Counter()
    referred = 0
    for entry in entries:
        for label, n in entry["counts"].items():
            counts[label] = counts.get(label, 0) + n
        types.update(entry["wbc_types"])
        referred += len(entry.get("referred", []))
    sample = {"images": len(entries), "counts": counts, "wbc_types": dict(sorted(types.items())),
              "wbc_classified": sum(types.values()), "wbc_referred": referred}
    if typing_unavailable:
        sample["wbc_typing_unavailable"] = typing_unavailable
    return sample


def count_smears(images: Sequence[ImageSource], classifier=None, names: list[str] | None = None,
                 detector: str = "centernet", refer_below: float = REFER_BELOW,
                 typing_unavailable: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Count cells on smear photos (paths, bytes, PIL images or arrays), in input order.

    Returns ``{"images": [{"path", "counts", "wbc_types", "boxes", "referred", "annotated"}],
    "sample": {...}, "errors": [{"path", "error"}]}``; unreadable images go to ``errors``.
    Without ``classifier`` the white cells are counted but not typed; ``typing_unavailable``
    (default "no cell classifier loaded") says why in ``sample``. ``detector`` is ``centernet``
    (the bundled learned detector, default), ``classical`` or a detector checkpoint path (see
    :mod:`bloodcell.smear.detectors`).
    """
    if names is not None and len(names) != len(images):
        raise ConfigError(f"names has {len(names)} entries for {len(images)} images")
    resolve_detector(detector)  # a bad detector name or checkpoint fails before any image is read
    items = list(enumerate(images))
    if progress:
        from bloodcell.progress import track

        items = track(items, "counting smears", total=len(images))
    entries, errors = [], []
    for index, source in items:
        name = names[index] if names is not None else (str(source) if isinstance(source, (str, Path)) else f"image-{index}")
        try:
            image = read_image(source)
        except ImageError as exc:
            errors.append({"path": name, "error": str(exc)})
            continue
        entries.append({"path": name, **count_image(image, classifier, detector, refer_below)})
    if classifier is None and typing_unavailable is None:
        typing_unavailable = "no cell classifier loaded"
    sample = sample_totals(entries, typing_unavailable)
    if classifier is not None:
        from bloodcell.smear.typing_head import typing_summary

        sample["wbc_typing"] = typing_summary(classifier)
    return {"images": entries, "sample": sample, "errors": errors}
