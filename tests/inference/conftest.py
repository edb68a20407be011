"""Fixtures for inference tests: synthetic stained-cell images and a small trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from inference_synthetic import CLASSES, SIZE, synthetic_cells  # noqa: E402


def _train(model, steps: int = 25, batch: int = 16) -> None:
    import torch

    from bloodcell.transforms import create_transform

    transform = create_transform(model.data_config, is_training=False)
    images, labels = synthetic_cells(steps * batch, seed=123)
    from PIL import Image

    x_all = torch.stack([transform(Image.fromarray(im)) for im in images])
    y_all = torch.tensor(labels)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for step in range(steps):
        sl = slice(step * batch, (step + 1) * batch)
        loss = torch.nn.functional.cross_entropy(model(x_all[sl]), y_all[sl])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """A resnet18 at 64 px trained for a few steps on synthetic cells (temperature 1.3)."""
    import torch

    from bloodcell.checkpoint import CheckpointMeta, save_checkpoint
    from bloodcell.models import create_model

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = create_model("resnet18", num_classes=len(CLASSES), class_names=CLASSES, input_size=SIZE)
        _train(model)
    finally:
        torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model, CheckpointMeta(model_name="resnet18", data_config=model.data_config, temperature=1.3))
    return path


@pytest.fixture(scope="session")
def classifier(trained_checkpoint):
    from bloodcell.inference.predictor import load

    return load(trained_checkpoint)


@pytest.fixture()
def cells_folder(tmp_path) -> Path:
    """A folder of 4 good synthetic cells (one in a subfolder) and 5 bad files."""
    from PIL import Image

    folder = tmp_path / "cells"
    (folder / "sub").mkdir(parents=True)
    images, _ = synthetic_cells(4, seed=7)
    for i, image in enumerate(images[:3]):
        Image.fromarray(image).save(folder / f"good_{i}.png")
    Image.fromarray(images[3]).save(folder / "sub" / "good_3.jpg", quality=92)
    (folder / "not_an_image.jpg").write_text("this is text, not a JPEG")
    full = (folder / "sub" / "good_3.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(full[: len(full) // 2])
    Image.fromarray(images[0]).convert("L").save(folder / "gray.png")
    rgba = np.dstack([images[1], np.full((SIZE, SIZE), 200, np.uint8)])
    Image.fromarray(rgba).save(folder / "rgba.png")
    Image.fromarray(images[2][..., 0].astype(np.uint16) * 257).save(folder / "deep16.png")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    return folder
