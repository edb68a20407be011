"""Helpers of the training tests: a tiny synthetic PBC-like dataset and a tiny registered CNN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from torch import nn

from bloodcell.data.manifest import ManifestRow, write_manifest
from bloodcell.models.registry import register_model
from bloodcell.provenance import file_sha256

TINY_MODEL = "test-train-tiny-cnn"
#: Three pbc8 classes drawn as distinct coloured shapes.
SHAPES = {"basophil": ((200, 40, 40), "ellipse"), "eosinophil": ((40, 170, 40), "rectangle"),
          "lymphocyte": ((40, 40, 200), "triangle")}


@register_model(TINY_MODEL, input_size=24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
def _tiny_cnn(num_classes: int, pretrained=False, input_size: int = 24):
    """A two-convolution CNN with a batch-norm layer and a linear head (test only)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, num_classes),
    )


def _draw(shape: str, colour, rng: np.random.Generator, size: int = 28) -> Image.Image:
    image = Image.new("RGB", (size, size), (235, 225, 230))
    draw = ImageDraw.Draw(image)
    r = int(rng.integers(7, 11))
    cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, size=2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "ellipse":
        draw.ellipse(box, fill=colour)
    elif shape == "rectangle":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    noise = rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=float) + noise, 0, 255).astype(np.uint8))


def make_synthetic_pbc(root: Path, per_class: int = 20, seed: int = 0, bad_file_split: str = "test") -> Path:
    """Write ``root/pbc/<class>/*.png`` and ``root/manifest.csv`` (60% train, 20% val, 20% test).

    One row of split ``bad_file_split`` points at a file that is not an image.
    """
    rng = np.random.default_rng(seed)
    data = root / "pbc"
    rows: list[ManifestRow] = []
    for label, (colour, shape) in SHAPES.items():
        (data / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rel = f"{label}/{label[:2].upper()}_{i:03d}.png"
            _draw(shape, colour, rng).save(data / rel)
            split = "train" if i < per_class * 0.6 else "val" if i < per_class * 0.8 else "test"
            rows.append(ManifestRow(rel, label, label, split, file_sha256(data / rel), f"{label}-{i}"))
    (data / "basophil" / "BA_broken.png").write_bytes(b"this is not an image")
    rows.append(ManifestRow("basophil/BA_broken.png", "basophil", "basophil", bad_file_split,
                            file_sha256(data / "basophil" / "BA_broken.png"), "broken"))
    write_manifest(root / "manifest.csv", "pbc", rows)
    return root / "manifest.csv"
