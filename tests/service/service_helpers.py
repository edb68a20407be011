"""Helpers shared by the service tests: a tiny registered CNN, synthetic cells, a live server."""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SERVICE_CLASSES = ("basophil", "eosinophil", "lymphocyte", "neutrophil")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
#: Why a browser test is skipped (tests/conftest.py lists such tests at the end of the run).
CHROMIUM_MISSING = ("browser test: needs Debian's Chromium at /usr/bin/chromium; install it with "
                    "`sudo apt-get install chromium` (CI does)")
#: The marks of a module of browser tests: skipped, with how to get the browser, when Chromium is missing.
BROWSER_TESTS = [pytest.mark.slow, pytest.mark.skipif(not CHROMIUM.exists(), reason=CHROMIUM_MISSING)]
TINY_MODEL = "test/service_tiny_cnn"
INPUT_SIZE = 32


def register_tiny_model() -> None:
    from torch import nn

    from bloodcell.models.registry import register_model

    def build(num_classes, pretrained=False, input_size=INPUT_SIZE, **_):
        """A two-layer CNN small enough to load and run in milliseconds (tests only)."""
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
        )

    try:
        register_model(TINY_MODEL, input_size=INPUT_SIZE)(build)
    except ValueError:  # already registered in this process
        pass


def save_tiny_checkpoint(path: Path) -> Path:
    """Save the tiny CNN (random weights, seed 0) as a real self-describing checkpoint."""
    import torch

    from bloodcell.checkpoint import CheckpointMeta, save_checkpoint
    from bloodcell.models import create_model

    register_tiny_model()
    torch.manual_seed(0)
    model = create_model(TINY_MODEL, num_classes=len(SERVICE_CLASSES), class_names=SERVICE_CLASSES)
    return save_checkpoint(path, model, CheckpointMeta(model_name=TINY_MODEL, data_config=model.data_config))


def cell_png(seed: int = 0, size: int = 48) -> bytes:
    """A small synthetic stained cell as PNG bytes."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), (230, 200, 210), np.float32) + rng.normal(0, 6, (size, size, 3))
    yy, xx = np.mgrid[:size, :size]
    image[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2] = (110, 50, 140)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn in a background thread on a free loopback port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def smear_png(wbc: int = 1, shade: int = 0, size: tuple[int, int] = (640, 480)) -> bytes:
    """A synthetic smear photo (pink red cells, ``wbc`` purple white cells) as PNG bytes; ``shade`` makes
    otherwise equal photos differ (a photo's id is the hash of its bytes)."""
    from PIL import ImageDraw

    image = Image.new("RGB", size, (200, 202, 205 - shade))
    draw = ImageDraw.Draw(image)
    for i in range(12):
        x, y = 60 + 110 * (i % 5), 60 + 110 * (i // 5)
        draw.ellipse([x - 38, y - 38, x + 38, y + 38], fill=(205, 150, 140))
    for k in range(wbc):
        x, y = 560, 400 - 200 * k
        draw.ellipse([x - 55, y - 55, x + 55, y + 55], fill=(210, 180, 210))
        draw.ellipse([x - 30, y - 30, x + 30, y + 30], fill=(110, 70, 190))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def classical_counter(image, **options):
    """The real photo counter on the classical detector (fast, no detector weights needed)."""
    from bloodcell.smear.counting import count_image

    return count_image(image, detector="classical", **options)
