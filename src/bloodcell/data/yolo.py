"""YOLO text labels (TXL-PBC): one ``class cx cy w h`` line per box, coordinates normalised to 0..1.

Class indices name the lines of the dataset's ``classes.txt``. Boxes past the border are
clipped and zero-area boxes dropped (and counted); anything else malformed raises
``DataError`` naming the file and line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from bloodcell.data.boxes import Annotation, canonical_label, clip_box
from bloodcell.errors import DataError


def read_classes(path: str | Path) -> list[str]:
    """Class names of a ``classes.txt`` (one per line), in our canonical spelling."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: class list not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: class list cannot be read ({exc})") from None
    names = [canonical_label(line) for line in lines if line.strip()]
    if not names:
        raise DataError(f"{path}: class list is empty")
    return names


def parse_yolo(path: str | Path, width: int, height: int, class_names: Sequence[str]) -> Annotation:
    """Boxes of one YOLO label file for a ``width`` x ``height`` image; a missing file means no boxes."""
    path = Path(path)
    if width < 1 or height < 1:
        raise DataError(f"{path}: image size {width}x{height} is not valid")
    annotation = Annotation(path.with_suffix(".jpg").name, width, height)
    if not path.is_file():
        return annotation
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: label file cannot be read ({exc})") from None
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise DataError(f"{path} line {number}: expected 'class cx cy w h', got {line.strip()!r}")
        try:
            index = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:])
        except ValueError:
            raise DataError(f"{path} line {number}: expected an integer class and four numbers, got {line.strip()!r}") from None
        if not 0 <= index < len(class_names):
            raise DataError(f"{path} line {number}: class {index} is not in the class list ({len(class_names)} classes)")
        if not all(math.isfinite(v) for v in (cx, cy, w, h)) or w < 0 or h < 0:
            raise DataError(f"{path} line {number}: box values must be finite and sizes not negative, got {line.strip()!r}")
        box = clip_box(class_names[index], (cx - w / 2) * width, (cy - h / 2) * height,
                       (cx + w / 2) * width, (cy + h / 2) * height, width, height)
        if box is None:
            annotation.dropped += 1
        else:
            annotation.boxes.append(box)
    return annotation
