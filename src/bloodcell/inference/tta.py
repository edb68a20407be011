"""Test-time augmentation: the 8 dihedral views (quarter turns, with and without a mirror) of a batch."""

from __future__ import annotations

import numpy as np

#: The views as (number of 90-degree rotations, horizontal flip).
DIHEDRAL_VIEWS = tuple((k, flip) for flip in (False, True) for k in range(4))


def dihedral_view(batch: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate an NCHW batch by ``k`` x 90 degrees, then flip it horizontally when ``flip``."""
    view = np.rot90(batch, k, axes=(2, 3))
    return np.ascontiguousarray(view[..., ::-1] if flip else view)


def dihedral_views(batch: np.ndarray) -> np.ndarray:
    """The 8 views of an NCHW batch stacked view-major: (8 * N, C, H, W)."""
    return np.concatenate([dihedral_view(batch, k, flip) for k, flip in DIHEDRAL_VIEWS])
