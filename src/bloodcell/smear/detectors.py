"""Smear cell detectors by name or checkpoint: ``resolve_detector(spec)`` gives ``detect(image, cell_size_px)``.

* ``learned`` (default): the bundled CenterNet (``smear-detector``), see
  :mod:`bloodcell.smear.learned_detector`; ``PATH.safetensors``: a detector checkpoint written by
  ``bloodcell detector train``.
* ``classical``: the colour-threshold/watershed detector (:mod:`bloodcell.smear.classical`), tuned
  on CBC's 640x480 photos; it ignores ``cell_size_px``.

Loaded checkpoints are cached per (path, modification time). ``describe_detector(spec)`` names the
detector for people (the page, ``/health``): an adapted one with the lab it was adapted to.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from PIL import Image

from bloodcell.checkpoint import read_checkpoint_meta
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


def describe_detector(spec: str | Path = "learned") -> str:
    """``classical``, ``smear-detector`` (the bundled one) or a checkpoint's file name; for a detector written by
    ``bloodcell detector adapt``, also the lab it was adapted to and from how many photos."""
    if str(spec) == "classical":
        return "classical"
    if str(spec) in ("learned", DEFAULT_DETECTOR):
        return DEFAULT_DETECTOR
    path = resolve(spec)
    adapted = (read_checkpoint_meta(path).get("detector") or {}).get("adapted")
    if not isinstance(adapted, dict) or not isinstance(adapted.get("lab"), str):
        return path.name
    lab = "".join(c for c in adapted["lab"] if c.isprintable())[:200]
    photos = adapted.get("photos")
    return f"{path.name} (adapted to {lab}" + (f" from {len(photos)} photos)" if isinstance(photos, list) else ")")
