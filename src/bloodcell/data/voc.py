"""Pascal VOC XML smear annotations (CBC, BCCD) as boxes ``(label, x1, y1, x2, y2)``.

Tolerates the quirks of the published files: label case/spacing variants
("rbc", " WBC", "Platelet"), float coordinates, swapped corners, boxes past the image border
(clipped) and zero-area boxes (dropped and counted). Malformed XML or a box without numeric
coordinates raises ``DataError`` naming the file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from bloodcell.data.boxes import Annotation, canonical_label, clip_box
from bloodcell.errors import DataError


def _number(obj: ET.Element, tag: str, where: str) -> float:
    text = obj.findtext(f"bndbox/{tag}")
    try:
        return float(text.strip())  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        raise DataError(f"{where}: object box has no numeric <{tag}> (got {text!r})") from None


def parse_voc(source: str | Path | bytes, name: str | None = None) -> Annotation:
    """Parse one VOC XML file (path or bytes) into an ``Annotation``."""
    where = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        root = ET.fromstring(source) if isinstance(source, bytes) else ET.parse(source).getroot()
    except FileNotFoundError:
        raise DataError(f"{where}: annotation file not found") from None
    except ET.ParseError as exc:
        raise DataError(f"{where}: malformed VOC XML ({exc})") from None
    if root.tag != "annotation":
        raise DataError(f"{where}: not a VOC annotation (root element <{root.tag}>)")
    stem = Path(where).stem if not isinstance(source, bytes) else ""
    filename = (root.findtext("filename") or "").strip() or f"{stem}.jpg"
    size = [root.findtext(f"size/{k}") for k in ("width", "height")]
    try:
        width, height = (int(float(v)) for v in size)  # type: ignore[arg-type]
        if width <= 0 or height <= 0:
            width = height = None  # type: ignore[assignment]
    except (TypeError, ValueError):
        width = height = None
    ann = Annotation(filename, width, height)
    for obj in root.iter("object"):
        label = canonical_label(obj.findtext("name") or "")
        if not label:
            raise DataError(f"{where}: an object has no <name>")
        box = clip_box(label, *(_number(obj, t, where) for t in ("xmin", "ymin", "xmax", "ymax")), width, height)
        if box is None:
            ann.dropped += 1
        else:
            ann.boxes.append(box)
    return ann


def voc_folders(root: Path, subset: str | None = None) -> tuple[Path, Path]:
    """(Annotations, images) folders of a VOC smear dataset: at ``root`` (BCCD) or in its ``subset`` (CBC, default Training).

    The images folder is ``Images`` when present, else ``JPEGImages``.
    """
    folder = root if (root / "Annotations").is_dir() else root / (subset or "Training")
    return folder / "Annotations", folder / ("Images" if (folder / "Images").is_dir() else "JPEGImages")
