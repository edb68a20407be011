"""Framing a cell: the crop-around-a-cell function used by training, prediction, counting and the service.

``crop_around(image, box)`` cuts a square centred on the cell's box whose side is ``context``
times the box's longer side (1.5: the cell fills about 45 % of the crop's area, as in PBC's
single-cell images); what lies outside the photo is filled with the photo's median colour (the
slide background), so a cell at the border stays centred.

``frame_cell(image)`` is the canonical framing of a single-cell image: it finds the stained cell
nearest the centre (:func:`find_cell` on a small copy) and crops around it at :data:`CONTEXT` times
its own size, so that a cell that fills the frame, a cell small in a wide field and a cell cut from
a smear by the detector reach the network alike. The price is the size cue: a platelet is enlarged
as much as a white cell (its texture still tells them apart). When no plausible cell is found the
image is kept as it is. ``search_cells`` finds both the cell and how many white cells the image
shows in one search, and ``frame_box`` frames around a cell already found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image

from bloodcell.data.images import to_rgb
from bloodcell.errors import ConfigError
from bloodcell.segmentation import MIN_CONTRAST, nearest_label, otsu_threshold

#: Raised whenever the framed pixels change (2: the search's small copy is box-reduced first), so that training
#: caches of framed images are built again rather than mixing two framings.
VERSION = 2
#: Crop side in multiples of the cell's longer side.
CONTEXT = 1.5
#: Side of the small copy the cell is searched on.
SEARCH_SIDE = 128
#: The small copy is first reduced by the whole number of times it fits (box averages, fast: Pillow's ``reduce``),
#: then resampled by less than this factor (Pillow's ``reducing_gap``): a 256 px image is searched on its 2 x 2
#: box average.
REDUCING_GAP = 1.0
#: Stained parts at most this fraction of the small copy's side apart are one cell (a neutrophil's lobes).
MERGE = 0.04
#: A cell's diameter in diameters of its strongly stained part (nucleus and granules).
NUCLEUS_TO_CELL = 1.15
#: The stained part must cover at least / at most these fractions of the image, and be no more elongated than this.
CELL_AREA = (0.002, 0.8)
MAX_ELONGATION = 3.0
#: Smallest stained group counted as a white cell by :func:`count_cells`, as a fraction of the image (a group cut
#: by the image's edge is not counted: a single-cell crop's neighbour).
WHITE_CELL_AREA = 0.008
#: A single-cell image (:meth:`CellSearch.single_cell`): the cell nearest the centre spans between these fractions
#: of the image's shorter side (more: the whole image is "stained", as noise is; a platelet or an erythroblast's
#: nucleus spans little) and its centre lies within this fraction of the image's diagonal from the image's centre
#: (a field or smear photo's cells lie anywhere). Set on calibration cells of PBC (validation split, every type) and
#: Raabin (TXL-PBC training fields): the smallest span rounded down and the largest offset rounded up
#: (``benchmarks/cell_presence.py``). Where the image shows several white-cell-sized groups wholly, the centred one must
#: span at least :data:`SEVERAL_CELLS_SPAN` (set on PBC's, BCCD's and Raabin's white cells: 5th percentile of span
#: 0.48 and 0.50): a small cell among others is a field's.
SINGLE_CELL_SPAN = (0.15, 1.1)
SINGLE_CELL_OFFSET = 0.13
SEVERAL_CELLS_SPAN = 0.3

BoxLike = tuple[float, float, float, float]


def background_colour(image: Image.Image) -> tuple[int, int, int]:
    """Median colour of the photo's outermost pixels (the slide background, even when a cell fills the middle)."""
    array = np.asarray(to_rgb(image).reduce(max(1, min(image.size) // 64)))
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    return tuple(int(v) for v in np.median(border, axis=0))  # type: ignore[return-value]


def crop_around(image: Image.Image, box: BoxLike, context: float = CONTEXT,
                fill: tuple[int, int, int] | None = None) -> Image.Image:
    """Square crop centred on ``box`` (x1, y1, x2, y2) with side ``context`` x its longer side; what lies
    outside the photo is ``fill`` (default: :func:`background_colour`, worth computing once for many crops)."""
    if not context > 0:
        raise ConfigError(f"the crop context must be positive, got {context}")
    x1, y1, x2, y2 = box
    side = max(1, round(max(x2 - x1, y2 - y1) * context))
    left, top = round((x1 + x2 - side) / 2), round((y1 + y2 - side) / 2)
    canvas = Image.new("RGB", (side, side), background_colour(image) if fill is None else fill)
    region = image.crop((max(0, left), max(0, top), min(image.width, left + side), min(image.height, top + side)))
    canvas.paste(region, (max(0, -left), max(0, -top)))
    return canvas


def _stain(rgb: np.ndarray) -> np.ndarray:
    """Blue minus green of RGB pixels, lightly smoothed: high on chromatin and granules (purple), low on the pale
    background and on pink red cells, in any of the labs' Romanowsky stains."""
    blue_minus_green = rgb[..., 2].astype(np.float32)
    blue_minus_green -= rgb[..., 1]
    return cv2.GaussianBlur(blue_minus_green, (0, 0), 1.5)


#: Percentiles of the stain that give its range: the pale end and the most stained end.
STAIN_RANGE = (1.0, 99.9)


def _stain_ends(stain: np.ndarray) -> tuple[float, float, float, float]:
    """(smallest, ``np.percentile(stain, STAIN_RANGE)`` to the bit, largest) of the stain, from one partition of
    its values: a search holds the interpreter lock less, in fewer numpy calls, than one that selects each end
    alone (two decoding threads pass the lock back and forth at every numpy call that releases it)."""
    values = stain.ravel()
    last = values.size - 1
    virtual = last * (np.asarray(STAIN_RANGE) / 100)  # numpy's "linear" method, in its dtypes and order
    below = np.floor(virtual).astype(np.intp)
    ranks = np.unique(np.concatenate([[0, last], below, np.minimum(below + 1, last)]))
    ordered = dict(zip(ranks.tolist(), np.partition(values, ranks)[ranks]))
    previous = np.array([ordered[rank] for rank in below.tolist()])
    following = np.array([ordered[min(rank + 1, last)] for rank in below.tolist()])
    gamma = virtual - below
    difference = following - previous
    result = np.where(gamma >= 0.5, following - difference * (1 - gamma), previous + difference * gamma)
    return ordered[0], result[0], result[1], ordered[last]


@lru_cache(maxsize=8)
def _merging_disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)


def _stained_groups(image: Image.Image) -> tuple[float, np.ndarray, np.ndarray, np.ndarray] | None:
    """(scale of the small copy, its strongly stained pixels, and its groups of them merged across small gaps as
    ``cv2.connectedComponentsWithStats`` labels and stats), or None when nothing stands out. Strongly stained:
    above Otsu's threshold of blue minus green and above half of its range (nuclei and granules)."""
    factor = min(1.0, SEARCH_SIDE / max(1, min(image.size)))
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    small = np.asarray(to_rgb(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP))
    stain = _stain(small)
    smallest, low, high, largest = _stain_ends(stain)
    if high - low < MIN_CONTRAST:
        return None
    strong = stain > max(otsu_threshold(stain, (smallest, largest)), low + 0.5 * (high - low))
    merged = cv2.dilate(strong.view(np.uint8), _merging_disc(max(1, round(MERGE * min(small.shape[:2])))))
    _, labels, stats, _ = cv2.connectedComponentsWithStats(merged, connectivity=8)
    return factor, strong, labels, stats


def _cell_box(found: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None) -> BoxLike | None:
    """The box of :func:`find_cell` from :func:`_stained_groups`' result."""
    if found is None:
        return None
    factor, strong, labels, stats = found
    group = nearest_label(labels, stats, CELL_AREA[0] * strong.size)
    if group is None:
        return None
    cell = (strong & (labels == group)).view(np.uint8)
    pixels = cv2.countNonZero(cell)
    if not pixels or pixels / cell.size > CELL_AREA[1]:
        return None
    x1, y1, width, height = cv2.boundingRect(cell)
    if max(width, height) > MAX_ELONGATION * min(width, height):
        return None
    cx, cy, half = x1 + width / 2, y1 + height / 2, NUCLEUS_TO_CELL * max(width, height) / 2
    return (cx - half) / factor, (cy - half) / factor, (cx + half) / factor, (cy + half) / factor


def _cell_count(found: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None) -> int:
    """The count of :func:`count_cells` from :func:`_stained_groups`' result."""
    if found is None:
        return 0
    _, strong, labels, stats = found
    areas = np.bincount(labels[strong], minlength=len(stats))[1:]
    if not len(areas) or areas.max() == 0:
        return 0
    x, y, w, h = stats[1:, :4].T
    height, width = labels.shape
    whole = (x > 0) & (y > 0) & (x + w < width) & (y + h < height)
    return int(((areas >= WHITE_CELL_AREA * strong.size) & (areas >= areas.max() / 3) & whole).sum())


@dataclass(frozen=True)
class CellSearch:
    """What one search of an image's stained groups found: the box of :func:`find_cell` and the count of
    :func:`count_cells` (one search where a caller needs both, e.g. to frame a cell and check it is alone)."""

    box: BoxLike | None
    count: int

    def layout(self, size: tuple[int, int]) -> tuple[float, float] | None:
        """(span, offset) of the cell in an image of ``size`` (width, height): its longer side over the image's
        shorter side, and its centre's distance from the image's centre over the image's diagonal; None: no cell."""
        if self.box is None:
            return None
        width, height = size
        x1, y1, x2, y2 = self.box
        offset = math.hypot((x1 + x2 - width) / 2, (y1 + y2 - height) / 2) / math.hypot(width, height)
        return max(x2 - x1, y2 - y1) / min(width, height), offset

    def single_cell(self, size: tuple[int, int]) -> bool:
        """True when an image of ``size`` (width, height) is a single-cell image: its cell is centred and of a cell's
        size (neighbours cut by the edge allowed), unlike a field or smear photo, whose cells lie anywhere."""
        layout = self.layout(size)
        smallest = SINGLE_CELL_SPAN[0] if self.count <= 1 else SEVERAL_CELLS_SPAN
        return layout is not None and smallest <= layout[0] <= SINGLE_CELL_SPAN[1] and layout[1] <= SINGLE_CELL_OFFSET


def search_cells(image: Image.Image) -> CellSearch:
    """The cell nearest the centre and the number of white-cell-sized stained groups, from one search."""
    found = _stained_groups(image)
    return CellSearch(_cell_box(found), _cell_count(found))


def find_cell(image: Image.Image) -> BoxLike | None:
    """Box (x1, y1, x2, y2) of the stained cell nearest the centre, or None when nothing stands out.

    The group of strongly stained pixels (lobes a few pixels apart merged) nearest the centre is the
    cell, its box grown by :data:`NUCLEUS_TO_CELL` (the cytoplasm around the nucleus).
    """
    return _cell_box(_stained_groups(image))


def count_cells(image: Image.Image) -> int:
    """How many white-cell-sized stained groups the image shows wholly (at least :data:`WHITE_CELL_AREA` of it and
    a third of the largest, not touching its edge): 1 for a single-cell image, even with a neighbour cut by the
    edge, more for a field or smear photo."""
    return _cell_count(_stained_groups(image))


def lone_cell(image: Image.Image) -> BoxLike | None:
    """The box of :func:`find_cell` when the image shows exactly one white-cell-sized stained cell, else None."""
    search = search_cells(image)
    return search.box if search.count == 1 else None


def frame_cell(image: Image.Image, context: float = CONTEXT) -> Image.Image:
    """The canonical framing of a single-cell image (see the module docstring)."""
    return frame_box(image, find_cell(image), context)


def frame_box(image: Image.Image, box: BoxLike | None, context: float = CONTEXT) -> Image.Image:
    """:func:`frame_cell` around a box already found by :func:`find_cell` or :func:`search_cells` (None: the
    image as it is)."""
    if box is None:
        return image
    x1, y1, x2, y2 = box
    side = context * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return crop_around(image, (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), 1.0)
