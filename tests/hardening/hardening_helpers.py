"""Shared helpers of the hardening tests: a tiny registered model, its checkpoints, raw metadata edits, images."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from bloodcell.checkpoint import FORMAT, CheckpointMeta, save_checkpoint
from bloodcell.models import create_model
from bloodcell.models.registry import _REGISTRY, register_model

TINY = "hardening-tiny"
CLASSES = ("lymphocyte", "monocyte", "neutrophil")
SIZE = 16


class TinyNet(nn.Module):
    """Mean colour -> linear head: a classifier of a few hundred parameters that builds in microseconds."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


if TINY not in _REGISTRY:
    @register_model(TINY, input_size=SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    def _tiny(num_classes, pretrained=False, input_size=SIZE):
        """Tiny classifier for the hardening tests."""
        return TinyNet(num_classes)


def save_tiny(path: Path, classes=CLASSES, input_size: int = SIZE, **extra: Any) -> Path:
    """A valid checkpoint of the tiny net (``extra`` keys go into its metadata)."""
    torch.manual_seed(0)
    model = create_model(TINY, num_classes=len(classes), class_names=list(classes), input_size=input_size)
    return save_checkpoint(path, model, CheckpointMeta(TINY, model.data_config, temperature=1.2, extra=extra))


def read_document(path: Path) -> dict[str, Any]:
    """The raw ``bloodcell`` metadata document of a checkpoint (no validation)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["bloodcell"])


def write_document(path: Path, document: Any, out: Path | None = None) -> Path:
    """Rewrite a checkpoint's metadata document (a JSON value, or JSON text as given) keeping its weights."""
    text = document if isinstance(document, str) else json.dumps(document)
    out = out or path
    save_file(load_file(str(path)), str(out), metadata={"format": FORMAT, "bloodcell": text})
    return out


def cell_png(path: Path, seed: int = 0, size: int = 24) -> Path:
    """A small random RGB PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def png16(width: int, height: int) -> bytes:
    """A valid 16-bit greyscale PNG of zeros, compressed row by row (a few hundred KB for 40 megapixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row, body = zlib.compressobj(9), b"\x00" * (1 + 2 * width), []
    for _ in range(height):
        body.append(packer.compress(row))
    body.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b"")
