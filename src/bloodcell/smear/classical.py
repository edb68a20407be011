"""Classical smear detector: colour thresholds, distance transform and watershed.

Tuned on the train split of CBC (640x480 photos, frozen manifest cbc-seed0); the pixel sizes
below assume that magnification. Larger photos are first downscaled so that their longest
side is at most ``MAX_SIDE`` and the boxes are mapped back to the original pixels.

* WBC: dark purple nuclei (blue minus green above ``nucleus_threshold``), lobes merged by a
  closing, kept above ``min_nucleus_area``; the cell box is the nucleus box grown by
  ``wbc_grow`` on each side (relative to the nucleus size).
* Platelets: small purple blobs (``platelet_area``) not inside a white cell box; box of side
  at least ``platelet_box`` (the typical annotated platelet box) around the blob.
* RBC: pink/red pixels (red minus green above Otsu's threshold, at least ``rbc_threshold``, holes filled, WBC cells
  removed), split by watershed on the distance transform; a region much larger than a
  typical cell counts as ``round(area / rbc_area)`` cells (clumps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage import filters, measure, morphology, segmentation
from skimage.feature import peak_local_max

from bloodcell.data.boxes import SMEAR_LABELS, Box

MAX_SIDE = 1280


@dataclass(frozen=True)
class ClassicalParams:
    nucleus_threshold: float = 50.0
    min_nucleus_area: int = 1200
    nucleus_closing: int = 7
    wbc_grow: float = 0.12
    wbc_exclusion: float = 0.45  # cytoplasm kept out of the RBC mask: disc of radius side*(0.5+this)
    platelet_threshold: float = 55.0
    platelet_area: tuple[int, int] = (50, 900)
    platelet_box: int = 38
    rbc_threshold: float = 22.0
    rbc_min_area: int = 900
    rbc_area: int = 6000
    rbc_min_distance: int = 30
    clump_factor: float = 1.6


def _smooth(channel: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    return ndi.gaussian_filter(channel, sigma)


def detect_cells(image: Image.Image, params: ClassicalParams = ClassicalParams()) -> list[Box]:
    """Detect RBC, WBC and platelets on an RGB smear photo; boxes in the photo's pixels."""
    scale = 1.0
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    purple = _smooth(b - g)
    wbcs, wbc_mask = _white_cells(purple, params)
    detections = wbcs + _platelets(purple, wbcs, params) + _red_cells(_smooth(r - g, 2.0), wbc_mask, params)
    if scale != 1.0:
        detections = [d.scaled(1 / scale) for d in detections]
    return detections


def _white_cells(purple: np.ndarray, p: ClassicalParams) -> tuple[list[Box], np.ndarray]:
    height, width = purple.shape
    nuclei = ndi.binary_closing(purple > p.nucleus_threshold, morphology.disk(p.nucleus_closing))
    nuclei = ndi.binary_fill_holes(nuclei)
    cells, mask = [], np.zeros(purple.shape, bool)
    for region in measure.regionprops(measure.label(nuclei)):
        if region.area < p.min_nucleus_area:
            continue
        y1, x1, y2, x2 = region.bbox
        side = max(y2 - y1, x2 - x1)
        grow = p.wbc_grow * side
        box = (max(0.0, x1 - grow), max(0.0, y1 - grow), min(float(width), x2 + grow), min(float(height), y2 + grow))
        score = float(min(1.0, 0.5 + region.area / (4 * p.min_nucleus_area)))
        cells.append(Box("WBC", *box, score))
        cy, cx = region.centroid
        yy, xx = np.ogrid[:height, :width]
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= (side * (0.5 + p.wbc_exclusion)) ** 2
    return cells, mask


def _inside(x: float, y: float, boxes: list[Box]) -> bool:
    return any(d.x1 <= x <= d.x2 and d.y1 <= y <= d.y2 for d in boxes)


def _platelets(purple: np.ndarray, wbcs: list[Box], p: ClassicalParams) -> list[Box]:
    low, high = p.platelet_area
    found = []
    for region in measure.regionprops(measure.label(purple > p.platelet_threshold), intensity_image=purple):
        cy, cx = region.centroid
        if not low <= region.area < high or _inside(cx, cy, wbcs):
            continue
        y1, x1, y2, x2 = region.bbox
        half = max(p.platelet_box, y2 - y1, x2 - x1) / 2
        score = float(min(1.0, region.intensity_max / 100.0))
        found.append(Box("Platelets", max(0.0, cx - half), max(0.0, cy - half),
                         min(float(purple.shape[1]), cx + half), min(float(purple.shape[0]), cy + half), score))
    return found


def _red_cells(redness: np.ndarray, wbc_mask: np.ndarray, p: ClassicalParams) -> list[Box]:
    threshold = max(p.rbc_threshold, float(filters.threshold_otsu(redness)))
    mask = ndi.binary_fill_holes(redness > threshold)
    mask = ndi.binary_opening(mask, morphology.disk(3)) & ~wbc_mask
    distance = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=p.rbc_min_distance, labels=measure.label(mask), exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    regions = segmentation.watershed(-distance, markers, mask=mask)
    found = []
    for region in measure.regionprops(regions):
        if region.area < p.rbc_min_area:
            continue
        count = max(1, round(region.area / p.rbc_area)) if region.area > p.clump_factor * p.rbc_area else 1
        y1, x1, y2, x2 = region.bbox
        found.append(Box("RBC", x1, y1, x2, y2, float(region.solidity), count))
    return found


def count_detections(detections: list[Box]) -> dict[str, int]:
    """Cells per class (an RBC clump box counts for the cells it stands for)."""
    counts = dict.fromkeys(SMEAR_LABELS, 0)
    for d in detections:
        counts[d.label] = counts.get(d.label, 0) + d.count
    return counts
