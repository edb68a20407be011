"""Shared helpers for the evaluation tests: a tiny registered model, synthetic data, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from bloodcell.checkpoint import CheckpointMeta, save_checkpoint
from bloodcell.data.manifest import ManifestRow, write_manifest
from bloodcell.data.registry import PBC_CLASSES
from bloodcell.models import create_model
from bloodcell.models.registry import _REGISTRY, register_model
from bloodcell.provenance import file_sha256

TINY = "test-tiny-colour-net"
#: A distinct colour per PBC class so a trained tiny model can tell them apart.
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (200, 40, 200), (40, 200, 200),
           (120, 120, 120), (240, 160, 60)]


class TinyNet(nn.Module):
    """Global average colour -> linear classifier (enough to separate coloured squares)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


if TINY not in _REGISTRY:
    @register_model(TINY, input_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    def _tiny(num_classes, pretrained=False, input_size=16, **kwargs):
        """Tiny colour classifier for tests."""
        return TinyNet(num_classes)


def write_image(path: Path, colour, rng, size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = rng.integers(-20, 21, size=(size, size, 3))
    array = np.clip(np.array(colour)[None, None] + noise, 0, 255).astype(np.uint8)
    Image.fromarray(array).save(path)
    return path


def make_pbc_dataset(root: Path, per_class: dict[str, int], seed: int = 0, corrupt: int = 0) -> Path:
    """``root/pbc/<class>/<img>`` images and ``root/manifest.csv`` with the given split sizes."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, name in enumerate(PBC_CLASSES):
        i = 0
        for split, n in per_class.items():
            for _ in range(n):
                rel = f"{name}/{name[:3].upper()}_{i:04d}.png"
                write_image(root / "pbc" / rel, COLOURS[k], rng)
                rows.append(ManifestRow(rel, name, name, split, file_sha256(root / "pbc" / rel), ""))
                i += 1
    for j in range(corrupt):
        rel = f"basophil/BA_corrupt{j}.png"
        (root / "pbc" / rel).write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
        rows.append(ManifestRow(rel, "basophil", "basophil", "test", file_sha256(root / "pbc" / rel), ""))
    write_manifest(root / "manifest.csv", "pbc", rows)
    return root / "manifest.csv"


def trained_tiny_checkpoint(path: Path, class_names=PBC_CLASSES, temperature: float = 1.5, weak: bool = False,
                            sharpness: float = 3.0) -> Path:
    """Save the tiny net set up as a nearest-colour classifier (no training needed).

    The conv passes the normalised colour through (shifted positive for the ReLU) and the head
    scores ``-sharpness * ||colour - prototype||^2``. ``weak`` moves the neutrophil prototype
    to black, so grey neutrophil images are confidently misclassified.
    """
    model = create_model(TINY, num_classes=len(class_names), class_names=list(class_names))
    prototypes = torch.tensor([COLOURS[list(PBC_CLASSES).index(c)] for c in class_names], dtype=torch.float32)
    if weak and "neutrophil" in class_names:
        prototypes[list(class_names).index("neutrophil")] = 0.0
    mu = (prototypes / 255 - 0.5) / 0.25
    shift = 4.0
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.zero_()
        for c in range(3):
            model.conv.weight[c, c, 1, 1] = 1.0
            model.conv.bias[c] = shift
        model.head.weight.zero_()
        model.head.weight[:, :3] = 2 * sharpness * mu
        model.head.bias.copy_(-sharpness * ((mu + shift) ** 2 - shift**2).sum(1))
    model.eval()
    meta = CheckpointMeta(model_name=TINY, data_config=model.data_config, temperature=temperature,
                          extra={"taxonomy": "pbc8"})
    return save_checkpoint(path, model, meta)
