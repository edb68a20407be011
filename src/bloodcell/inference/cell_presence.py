"""Is there a blood cell at all? A label-free cell-presence test on a model input.

A white cell, an erythroblast and a platelet all show a Romanowsky-stained (purple to blue) nucleus or granules,
much bluer than green and bluer than the red cells and slide around them; red cells (pink, no nucleus) and the
slide are not, even in a purple-tinted field where every red cell is bluish. The test measures that stain against
the image's own surroundings: the stain is log(blue / green) (lightly smoothed; a ratio, so a camera's or lamp's
gain per channel does not move it), taken at the :data:`TOP_SHARE` most stained pixels of the image's middle (a
stained object at least a platelet's size, away from the edges), minus its median over the image's border strip
(the field's tint: slide and red cells around a single cell). An image shows a cell when that contrast reaches
:data:`PRESENCE_CONTRAST`; a crop of red cells only, a blank, noise or an everyday picture does
not, whatever a lab's colour limits say. Calibrated by ``benchmarks/cell_presence.py`` on PBC's validation cells
and crops of TXL-PBC's training fields, apart from every set ``benchmarks/new_lab.py`` reports.
"""

from __future__ import annotations

import cv2
import numpy as np


#: Smallest stain contrast (log(blue / green) above the border's median) of an image that shows a cell: the 99th
#: percentile of red-cell-only crops of TXL-PBC's training fields, rounded up to 0.01; 99.5 % of PBC's validation
#: cells of every type reach it (``benchmarks/results/cell_presence-pbc8.json``).
PRESENCE_CONTRAST = 0.53
#: Added to blue and green (0-255) before their ratio is taken, so that near-black pixels do not count as stained.
OFFSET = 8.0
#: Share of the image the stained object must at least cover (a platelet covers about 1 % of a PBC image).
TOP_SHARE = 0.005
#: Width of the border strip (the surroundings) and of the margin the object is not looked for in, per side.
MARGIN = 0.125


def presence_contrast(pixels: np.ndarray) -> np.ndarray:
    """Per uint8 model input (N, 3, H, W): stain contrast of its most stained object against its border strip.

    The batch's ratios, logarithms and order statistics at once (one partition of every image's middle and one of
    every border: fewer numpy calls, each of which lets a waiting thread take the interpreter lock); each plane
    blurred alone."""
    count, _, height, width = np.shape(pixels)
    if not count:
        return np.empty(0)
    planes = np.asarray(pixels, dtype=np.float32)
    ratio = np.log((planes[:, 2] + OFFSET) / (planes[:, 1] + OFFSET))
    stain = np.stack([cv2.GaussianBlur(plane, (0, 0), 1.0) for plane in ratio])
    top, left = max(1, round(MARGIN * height)), max(1, round(MARGIN * width))
    middle = stain[:, top:height - top, left:width - left].reshape(count, -1)
    border = np.concatenate([stain[:, :top].reshape(count, -1), stain[:, height - top:].reshape(count, -1),
                             stain[:, :, :left].reshape(count, -1), stain[:, :, width - left:].reshape(count, -1)],
                            axis=1)
    share = max(1, round(TOP_SHARE * height * width))
    rank = middle.shape[1] - share
    most = np.partition(middle, rank, axis=1)[:, rank] if rank >= 0 else np.full(count, -np.inf)
    half = border.shape[1] // 2
    middle_ranks = [half - 1, half] if border.shape[1] % 2 == 0 else [half]  # np.median's: the mean of these
    median = np.partition(border, middle_ranks, axis=1)[:, middle_ranks].mean(axis=1)
    return (most - median).astype(np.float64)


def cell_present(pixels: np.ndarray) -> np.ndarray:
    """Per uint8 model input (N, 3, H, W): True when it shows a stained cell (:data:`PRESENCE_CONTRAST`)."""
    return presence_contrast(pixels) >= PRESENCE_CONTRAST
