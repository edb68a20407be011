"""Documents read back (counts.json, corrections.csv, /v1/review requests), checked before anything uses them.

One set of rules for ``bloodcell review`` and the service: a size limit before parsing, JSON nesting
bounded by the parser itself (pydantic-core's, 200 levels, never a ``RecursionError``), CSV fields
bounded (never a ``_csv.Error``), a bounded number of boxes, and every box finite, within
:data:`COORDINATE_LIMIT` and on its photo (up to :data:`EDGE_SLACK`), so no box can ask for a crop
larger than its photo. Every refusal is a :class:`~bloodcell.errors.DataError` of one sentence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydantic_core

from bloodcell.data.tables import MAX_CSV_BYTES, csv_rows  # noqa: F401  (the corrections CSV, read here)
from bloodcell.errors import DataError

#: Largest counts.json read back (a sample of a hundred photos of a thousand boxes each is about 20 MB).
MAX_JSON_BYTES = 64 * 1024 * 1024
#: Largest absolute box coordinate: far beyond any photo, and safe to compute with.
COORDINATE_LIMIT = 1e7
#: How far (in photo sizes) a box may reach beyond its photo's edges.
EDGE_SLACK = 0.1


def parse_json(data: bytes | str, where: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON value of ``data``; DataError when it is too large, too deeply nested or not JSON."""
    if len(data) > max_bytes:
        raise DataError(f"{where}: {len(data)} bytes, more than the {max_bytes} byte limit for this document")
    try:
        return pydantic_core.from_json(data)
    except ValueError as exc:
        reason = "nested too deeply" if "recursion" in str(exc) else f"not valid JSON ({exc})"
        raise DataError(f"{where}: {reason}") from None


def read_text(path: str | Path, what: str, max_bytes: int) -> str:
    """A UTF-8 text file of at most ``max_bytes``; DataError naming ``what`` otherwise."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise DataError(f"{path}: {size} bytes, more than the {max_bytes} byte limit for the {what}")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the {what} ({getattr(exc, 'strerror', None) or exc})") from None


def count_boxes(photos: Sequence[Any]) -> int:
    """How many boxes the photo entries (dicts with a ``boxes`` list) hold, read before any schema check."""
    return sum(len(p["boxes"]) for p in photos if isinstance(p, dict) and isinstance(p.get("boxes"), list))


def check_box_count(count: int, limit: int, where: str) -> None:
    """DataError when a document holds more than ``limit`` boxes."""
    if count > limit:
        raise DataError(f"{where}: {count} boxes, more than the limit of {limit} in one document; "
                        "review the sample in smaller parts")


def check_coordinates(box: Sequence[Any], where: str) -> tuple[float, float, float, float]:
    """``box`` as four finite coordinates within :data:`COORDINATE_LIMIT` with x2 > x1 and y2 > y1; DataError otherwise."""
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise DataError(f"{where}: a box is four numbers x1, y1, x2, y2") from None
    if not all(math.isfinite(v) and abs(v) <= COORDINATE_LIMIT for v in (x1, y1, x2, y2)):
        raise DataError(f"{where}: box coordinates must be finite numbers within ±{COORDINATE_LIMIT:g}")
    if not (x2 > x1 and y2 > y1):
        raise DataError(f"{where}: needs a box x1,y1,x2,y2 with x2 > x1 and y2 > y1")
    return x1, y1, x2, y2


def check_box(box: Sequence[Any], width: int, height: int, where: str) -> tuple[float, float, float, float]:
    """``box`` (x1, y1, x2, y2) checked by :func:`check_coordinates` and lying on its ``width`` x ``height``
    photo (up to :data:`EDGE_SLACK`); DataError otherwise."""
    x1, y1, x2, y2 = check_coordinates(box, where)
    slack_x, slack_y = EDGE_SLACK * width, EDGE_SLACK * height
    if not (-slack_x <= x1 and x2 <= width + slack_x and -slack_y <= y1 and y2 <= height + slack_y):
        raise DataError(f"{where}: the box {x1:g},{y1:g},{x2:g},{y2:g} is not on the {width}x{height} photo")
    return x1, y1, x2, y2


def check_photo_boxes(entry: dict[str, Any], width: int, height: int, where: str) -> None:
    """Every box of a counts.json photo entry on its ``width`` x ``height`` photo."""
    for number, box in enumerate(entry.get("boxes", []), start=1):
        check_box([box.get(k) for k in ("x1", "y1", "x2", "y2")], width, height, f"{where} box {number}")
