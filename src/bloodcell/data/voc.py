"""Pascal VOC XML smear annotations (CBC, BCCD) as boxes ``(label, x1, y1, x2, y2)``.

Tolerates the quirks of the published files: label case/spacing variants
("rbc", " WBC", "Platelet"), float coordinates, swapped corners, boxes past the image border
(clipped) and zero-area boxes (dropped and counted). Malformed XML or a box without numeric
coordinates raises ``DataError`` naming the file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from bloodcell.data.locate import dataset_root
from bloodcell.errors import DataError

LABEL_ALIASES = {"rbc": "RBC", "wbc": "WBC", "platelets": "Platelets", "platelet": "Platelets"}


@dataclass(frozen=True)
class Box:
    label: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class Annotation:
    filename: str
    width: int | None
    height: int | None
    boxes: list[Box] = field(default_factory=list)
    dropped: int = 0


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
        raw = (obj.findtext("name") or "").strip()
        label = LABEL_ALIASES.get(raw.lower(), raw)
        if not label:
            raise DataError(f"{where}: an object has no <name>")
        x1, y1, x2, y2 = (_number(obj, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        if width is not None and height is not None:
            x1, x2 = max(0.0, x1), min(float(width), x2)
            y1, y2 = max(0.0, y1), min(float(height), y2)
        if x2 - x1 < 1 or y2 - y1 < 1:
            ann.dropped += 1
            continue
        ann.boxes.append(Box(label, x1, y1, x2, y2))
    return ann


def voc_folders(root: Path, subset: str | None = None) -> tuple[Path, Path]:
    """(Annotations, images) folders of a VOC smear dataset: at ``root`` (BCCD) or in its ``subset`` (CBC, default Training).

    The images folder is ``Images`` when present, else ``JPEGImages``.
    """
    folder = root if (root / "Annotations").is_dir() else root / (subset or "Training")
    return folder / "Annotations", folder / ("Images" if (folder / "Images").is_dir() else "JPEGImages")


def smear_annotations(name: str, subset: str | None = None, data_root: str | Path | None = None) -> list[tuple[Path, Annotation]]:
    """(image path, annotation) pairs of ``cbc`` (subset Training/Validation) or ``bccd``."""
    root = dataset_root(name, data_root)
    ann_dir, img_dir = voc_folders(root, subset)
    if not ann_dir.is_dir():
        raise DataError(f"{ann_dir} not found (subsets here: {', '.join(sorted(p.name for p in root.iterdir() if p.is_dir()))})")
    pairs = []
    for xml in sorted(ann_dir.glob("*.xml")):
        ann = parse_voc(xml)
        image = img_dir / Path(ann.filename).name
        if not image.is_file():
            image = img_dir / f"{xml.stem}.jpg"
        pairs.append((image, ann))
    if not pairs:
        raise DataError(f"no .xml annotations in {ann_dir}")
    return pairs
