"""Boxes on smear photos: one type for annotated and detected cells, and the smear class names."""

from __future__ import annotations

from dataclasses import dataclass, field

from bloodcell.data.cell_types import SMEAR_LABELS, cell_type

__all__ = ["SMEAR_LABELS", "Annotation", "Box", "canonical_label", "clip_box"]


def canonical_label(name: str) -> str:
    """``name`` under its canonical spelling (``" wbc"`` -> ``"WBC"``, see :mod:`bloodcell.data.cell_types`);
    unknown names are kept, stripped."""
    return cell_type(name) or name.strip()


@dataclass(frozen=True)
class Box:
    """A cell on a photo in pixels. Detections carry a ``score`` and, for a red-cell clump,
    the number of cells it stands for (``count``); annotated boxes keep the defaults."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    score: float = 1.0
    count: int = 1

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return self.x1, self.y1, self.x2, self.y2

    def scaled(self, factor: float) -> "Box":
        """The box in an image resized by ``factor``."""
        return Box(self.label, self.x1 * factor, self.y1 * factor, self.x2 * factor, self.y2 * factor,
                   self.score, self.count)


@dataclass
class Annotation:
    """The annotated boxes of one photo; ``dropped`` counts boxes left out (zero area)."""

    filename: str
    width: int | None
    height: int | None
    boxes: list[Box] = field(default_factory=list)
    dropped: int = 0


def clip_box(label: str, x1: float, y1: float, x2: float, y2: float, width: int | None,
             height: int | None) -> Box | None:
    """A box with sorted corners clipped to the image, or None when less than a pixel remains."""
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    if width is not None and height is not None:
        x1, x2 = max(0.0, x1), min(float(width), x2)
        y1, y2 = max(0.0, y1), min(float(height), y2)
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return Box(label, x1, y1, x2, y2)
