"""Synthetic PBC-like image trees for the data-layer tests (imported by tests/data/test_*.py)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from bloodcell.data.registry import PBC_CLASSES

PREFIX = {
    "basophil": "BA",
    "eosinophil": "EO",
    "erythroblast": "ERB",
    "ig": "MY",
    "lymphocyte": "LY",
    "monocyte": "MO",
    "neutrophil": "SNE",
    "platelet": "PLATELET",
}


def cell(seed: int, size: int = 48) -> Image.Image:
    """A sharp random texture: distinct seeds give distinct perceptual hashes."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.NEAREST), dtype=np.int16)
    noise = rng.integers(-40, 40, (size, size, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def blurred(image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(4))


def make_tree(root: Path, per_class: int = 10, classes=PBC_CLASSES, seed0: int = 0) -> Path:
    """``root/<class>/<PREFIX>_<n>.jpg`` with ``per_class`` distinct images per class."""
    seed = seed0
    for cls in classes:
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            (folder / f"{PREFIX.get(cls, cls.upper())}_{1000 + k}.jpg").write_bytes(jpeg_bytes(cell(seed)))
            seed += 1
    return root
