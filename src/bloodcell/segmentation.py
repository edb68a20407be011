"""Preprocessing and cell/nucleus segmentation of May-Grünwald-Giemsa single-cell crops.

White cells (nucleus and cytoplasm) are bluish-purple, while the background is pale yellow-pink
and red cells pink, so the cell body is Otsu's foreground of B - G, keeping the component
nearest the image centre. The nucleus is the darker part of that cell: Otsu on the green
channel within it (green is absorbed most by the purple chromatin); when the two classes are
barely apart (a cell that is almost all nucleus) the whole cell is nucleus.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

#: Smallest nucleus kept, as a fraction of the image area.
MIN_NUCLEUS_FRACTION = 0.004
#: Largest cell kept, as a fraction of the image area.
MAX_CELL_FRACTION = 0.9
#: Smallest spread (99th - 1st percentile of B - G) for a stained cell to stand out at all.
MIN_CONTRAST = 20.0
#: Smallest gap between the mean green of cytoplasm and nucleus for them to be told apart.
MIN_NUCLEUS_CONTRAST = 35.0

_DISC3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
_DISC5 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


@dataclass
class Segmentation:
    """Boolean masks of the centre cell and its nucleus; ``failure`` says why when not found."""

    cell: np.ndarray
    nucleus: np.ndarray
    failure: str | None = None


def preprocess(image: np.ndarray) -> np.ndarray:
    """Median-denoise an RGB uint8 image and equalise its contrast with CLAHE on the L of LAB."""
    image = cv2.medianBlur(np.ascontiguousarray(image, dtype=np.uint8), 3)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def otsu_threshold(values: np.ndarray, bounds: tuple[float, float] | None = None) -> float:
    """Otsu's threshold of float values (computed on their 0..255 rescaling); ``bounds``: their smallest and largest
    value, when the caller has them already."""
    low, high = (float(values.min()), float(values.max())) if bounds is None else (float(bounds[0]), float(bounds[1]))
    scale = 255.0 / max(high - low, 1e-6)
    scaled = ((values - low) * scale).astype(np.uint8).reshape(-1, 1)
    threshold, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return low + threshold / scale


def _otsu(channel: np.ndarray) -> np.ndarray:
    """Otsu foreground (above the threshold) of a float channel."""
    return channel > otsu_threshold(channel)


def _open_close(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel).astype(bool)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled: everything not reachable from the border through background."""
    padded = np.pad(mask.astype(np.uint8), 1)
    outside = padded.copy()
    cv2.floodFill(outside, None, (0, 0), 1)
    return (padded | (1 - outside)).astype(bool)[1:-1, 1:-1]


def nearest_component(mask: np.ndarray, min_area: float) -> np.ndarray | None:
    """The connected component of ``mask`` (at least ``min_area`` pixels) nearest the image centre."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    label = nearest_label(labels, stats, min_area)
    return None if label is None else labels == label


def nearest_label(labels: np.ndarray, stats: np.ndarray, min_area: float) -> int | None:
    """The label, in ``cv2.connectedComponentsWithStats``' ``labels`` and ``stats``, of the component of at least
    ``min_area`` pixels with the pixel nearest the image centre (the first such pixel row by row on a tie)."""
    big = stats[:, cv2.CC_STAT_AREA] >= min_area
    big[0] = False  # the background
    if not big.any():
        return None
    flat, order = labels.ravel(), _centre_order(*labels.shape)
    for nearest in (order[:_NEAR_CENTRE], order):  # the pixels nearest the centre first: a cell is usually there
        found = big[flat[nearest]]
        if found.any():
            break
    return int(flat[nearest[found.argmax()]])


#: Pixels nearest the centre looked at before all of them (:func:`nearest_label`).
_NEAR_CENTRE = 1024


@lru_cache(maxsize=8)
def _centre_order(height: int, width: int) -> np.ndarray:
    """Flat indices of a ``height`` x ``width`` image's pixels, nearest the centre first (row by row on a tie)."""
    distances = np.hypot(np.arange(height)[:, None] - (height - 1) / 2, np.arange(width)[None, :] - (width - 1) / 2)
    order = np.argsort(distances.ravel(), kind="stable")
    order.setflags(write=False)
    return order


def segment(image: np.ndarray) -> Segmentation:
    """Segment the cell nearest the centre of a preprocessed RGB uint8 image and its nucleus."""
    rgb = image.astype(np.float32)
    height, width = rgb.shape[:2]
    empty = np.zeros((height, width), dtype=bool)
    blue_minus_green = cv2.GaussianBlur(rgb[..., 2] - rgb[..., 1], (3, 3), 0)
    low, high = np.percentile(blue_minus_green, [1, 99])
    if high - low < MIN_CONTRAST:
        return Segmentation(empty, empty, "no stained cell (image has no colour contrast)")
    body = _fill_holes(_open_close(_otsu(blue_minus_green), _DISC5))
    cell = nearest_component(body, MIN_NUCLEUS_FRACTION * height * width)
    if cell is None:
        return Segmentation(empty, empty, "no cell found")
    if cell.sum() > MAX_CELL_FRACTION * height * width:
        return Segmentation(empty, empty, "cell mask covers the whole image")
    green = rgb[..., 1][cell]
    threshold = otsu_threshold(green)
    dark, light = green[green <= threshold], green[green > threshold]
    if dark.size and light.size and light.mean() - dark.mean() >= MIN_NUCLEUS_CONTRAST:
        nucleus = _open_close(cell & (rgb[..., 1] <= threshold), _DISC3)
        nucleus = _fill_holes(nucleus) & cell
    else:
        nucleus = cell.copy()
    if nucleus.sum() < MIN_NUCLEUS_FRACTION * height * width:
        return Segmentation(empty, empty, "no nucleus found")
    return Segmentation(cell, nucleus)


def lobe_count(nucleus: np.ndarray, min_fraction: float = 0.05) -> int:
    """Nucleus components after a light erosion, ignoring fragments under ``min_fraction`` of it."""
    if not nucleus.any():
        return 0
    eroded = cv2.erode(nucleus.astype(np.uint8), _DISC3)
    count, _, stats, _ = cv2.connectedComponentsWithStats(eroded, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    return int((areas >= min_fraction * nucleus.sum()).sum())
