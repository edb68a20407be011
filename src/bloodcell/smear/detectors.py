"""Smear cell detectors by name or checkpoint: ``resolve_detector(spec)`` gives ``detect(image, cell_size_px)``.

* ``learned`` (default): the bundled CenterNet (``smear-detector``), see
  :mod:`bloodcell.smear.learned_detector`; ``PATH.safetensors``: a detector checkpoint written by
  ``bloodcell detector train``.
* ``classical``: the colour-threshold/watershed detector (:mod:`bloodcell.smear.classical`), tuned
  on CBC's 640x480 photos; it ignores ``cell_size_px``.

Loaded checkpoints are cached per (path, modification time).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from PIL import Image

from bloodcell.data.boxes import Box
from bloodcell.smear.classical import detect_cells
from bloodcell.smear.learned_detector import LearnedDetector, load_detector
from bloodcell.weights import DEFAULT_DETECTOR, resolve

DetectorFn = Callable[..., list[Box]]


def _classical(image: Image.Image, cell_size_px: float | None = None) -> list[Box]:
    return detect_cells(image)


@lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int) -> LearnedDetector:
    return load_detector(path)


def resolve_detector(spec: str | Path = "learned") -> DetectorFn:
    """The detector named ``spec`` (``learned``, ``classical``) or a detector checkpoint path."""
    if str(spec) == "classical":
        return _classical
    path = resolve(DEFAULT_DETECTOR if str(spec) in ("learned", DEFAULT_DETECTOR) else spec).resolve()
    return _load(str(path), path.stat().st_mtime_ns)
