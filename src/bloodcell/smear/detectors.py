"""Smear cell detectors by name or checkpoint path: ``resolve_detector(spec)(image) -> list[Detection]``.

* ``classical``: the colour-threshold/watershed detector (:mod:`bloodcell.smear.classical`).
* ``centernet``: the bundled trained CenterNet (``bloodcell/weights/centernet-cbc.safetensors``)
  when a release ships it.
* ``PATH.safetensors``: a detector checkpoint written by ``bloodcell detector train``.
* ``hybrid:PATH.safetensors`` (or ``hybrid`` for the bundled CenterNet): red cells and platelets
  from the learned detector, white cells from the classical nucleus detector: for an under-trained
  checkpoint. On the CBC validation split the classical white cells beat a 10-epoch CenterNet
  (exact WBC count on 89% vs 78% of smears, AP@0.5 0.97 vs 0.85) but not the 17-epoch one
  (98%, 0.996), so plain ``PATH.safetensors`` is the recommended detector once trained.

Loaded checkpoints are cached per (path, modification time).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from PIL import Image

from bloodcell.errors import CheckpointError, ConfigError, WeightsUnavailableError
from bloodcell.smear.classical import Detection, detect_cells

DETECTORS = ("classical", "centernet", "hybrid")
BUNDLED_CENTERNET = "centernet-cbc.safetensors"

DetectorFn = Callable[[Image.Image], list[Detection]]


def bundled_centernet() -> Path:
    """The bundled CenterNet checkpoint; WeightsUnavailableError when this install has none."""
    from bloodcell.weights import WEIGHTS_DIR

    path = WEIGHTS_DIR / BUNDLED_CENTERNET
    if not path.is_file():
        raise WeightsUnavailableError(
            f"no trained CenterNet detector is bundled ({path} is missing): train one with "
            "'bloodcell detector train' and pass --detector PATH/best.safetensors")
    return path


@lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int) -> DetectorFn:
    from bloodcell.smear.centernet import load_detector

    return load_detector(path)


@lru_cache(maxsize=4)
def _hybrid(learned: DetectorFn) -> DetectorFn:
    def detect(image: Image.Image) -> list[Detection]:
        return ([d for d in learned(image) if d.label != "WBC"]
                + [d for d in detect_cells(image) if d.label == "WBC"])

    return detect


def resolve_detector(spec: str | Path) -> DetectorFn:
    """The detector named ``spec`` (``classical``, ``centernet``, ``hybrid[:PATH]``) or a ``.safetensors`` path."""
    if str(spec) == "classical":
        return detect_cells
    if str(spec) == "hybrid" or str(spec).startswith("hybrid:"):
        return _hybrid(resolve_detector(str(spec)[len("hybrid:"):] or "centernet"))
    if str(spec) == "centernet":
        path = bundled_centernet()
    else:
        path = Path(spec)
        if path.suffix != ".safetensors":
            raise ConfigError(f"unknown detector {str(spec)!r}; choose one of {', '.join(DETECTORS)} "
                              "or pass a detector checkpoint (.safetensors)")
        if not path.is_file():
            raise CheckpointError(f"{path}: detector checkpoint not found")
    path = path.resolve()
    return _load(str(path), path.stat().st_mtime_ns)
