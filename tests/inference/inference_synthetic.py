"""Synthetic stained-cell images for the inference tests (imported by conftest and tests)."""

from __future__ import annotations

import cv2
import numpy as np

CLASSES = ("lymphocyte", "monocyte", "neutrophil", "eosinophil")
SIZE = 64
# Nucleus colour and radius per class: enough for a small CNN to learn in a few steps. Every nucleus is stained
# purple to blue (blue well above green), as a Romanowsky-stained cell's is (the guard's cell-presence test).
_NUCLEUS = {0: ((90, 40, 140), 18), 1: ((130, 70, 170), 13), 2: ((110, 50, 140), 8), 3: ((180, 60, 160), 12)}


def synthetic_cell(label: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A pale pink smear background with red cells and one centred stained nucleus (uint8 RGB)."""
    base = np.array([232, 205, 210]) + rng.normal(0, 4, 3)
    image = np.tile(base, (size, size, 1)).astype(np.float32)
    for _ in range(rng.integers(3, 7)):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(image, centre, int(size * rng.uniform(0.1, 0.16)), (215, 150, 160), -1)
    colour, radius = _NUCLEUS[label]
    jitter = rng.integers(-3, 4, 2)
    cv2.circle(image, (size // 2 + int(jitter[0]), size // 2 + int(jitter[1])), int(radius * size / 64 * rng.uniform(0.85, 1.15)),
               tuple(float(c + rng.normal(0, 6)) for c in colour), -1)
    image += rng.normal(0, 5, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def synthetic_cells(n: int, seed: int) -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(seed)
    labels = [int(i % len(CLASSES)) for i in range(n)]
    return [synthetic_cell(label, rng) for label in labels], labels
