"""Find resized, squashed, rotated, flipped or recoloured copies of photos among others.

Kaggle's BCD fields are copies of BCCD photos, squashed from 640x480 to 416x416, often turned
by quarter turns or mirrored and recoloured. Each photo is compared as a grey 160x120 thumbnail
(squashed to 4:3, mean removed, unit norm) in its 8 quarter-turn/mirror views with every
original; the normalised correlation of the best pair is its score. Copies scored 0.47-1.0 on
the TXL-PBC fields checked by eye, other photos at most 0.44; zoomed-in crops are not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bloodcell.data.images import read_image
from bloodcell.progress import track

THUMBNAIL = (160, 120)
#: Correlation above which a photo is taken for a copy of its best-matching original.
COPY_THRESHOLD = 0.45


@dataclass(frozen=True)
class CopyMatch:
    """The original a photo matches best, the correlation and whether it counts as a copy."""

    original: int
    score: float
    is_copy: bool


def _thumbnail(image: np.ndarray) -> np.ndarray:
    small = np.asarray(Image.fromarray(image).resize(THUMBNAIL, Image.Resampling.BOX), dtype=np.float64).ravel()
    small -= small.mean()
    return small / (np.linalg.norm(small) + 1e-9)


def _grey(path: str | Path) -> np.ndarray:
    return np.asarray(read_image(path).convert("L"))


def dihedral_thumbnails(grey: np.ndarray) -> np.ndarray:
    """(8, D) thumbnails of the 4 quarter turns of a grey image, unmirrored and mirrored."""
    views = [np.rot90(grey, k) for k in range(4)]
    views += [view[:, ::-1] for view in views]
    return np.stack([_thumbnail(np.ascontiguousarray(view)) for view in views])


def match_copies(photos: Sequence[str | Path], originals: Sequence[str | Path],
                 threshold: float = COPY_THRESHOLD) -> list[CopyMatch]:
    """For each photo, the best-matching original (index into ``originals``) and its score."""
    if not originals:
        return [CopyMatch(-1, 0.0, False) for _ in photos]
    reference = np.stack([_thumbnail(_grey(path)) for path in originals])
    matches = []
    for path in track(photos, "matching copies to originals", unit="photos"):
        scores = dihedral_thumbnails(_grey(path)) @ reference.T
        view, index = np.unravel_index(int(scores.argmax()), scores.shape)
        score = float(scores[view, index])
        matches.append(CopyMatch(int(index), score, score >= threshold))
    return matches
