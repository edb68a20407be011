"""Class activation maps point at the cell: the target layer, a moving synthetic nucleus, real PBC cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_synthetic import SIZE
from PIL import Image
from torch import nn

from bloodcell.inference.explain import (
    GAP,
    KEY_HEIGHT,
    find_target_layer,
    gradcam,
    overlay,
    save_gradcam_overlay,
)


@pytest.fixture()
def one_thread():
    """One torch thread: on a busy 2-core machine two threads are many times slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _PurpleDetector(nn.Module):
    """A fixed-weight CNN shaped like a timm one (stem, then stages in ``blocks``), whose class 0
    score is the amount of purple (blue minus green) in the image, wherever it is.

    Four stride-2 stages after the stem bring a 64 px input down to a 2x2 map: the last map,
    the old code's choice, has no room to say where the purple is.
    """

    def __init__(self):
        super().__init__()
        blue_minus_green = torch.zeros(4, 3, 3, 3)
        blue_minus_green[:, 2], blue_minus_green[:, 1] = 1.0 / 9, -1.0 / 9
        self.stem = nn.Sequential(self._conv(3, -0.1, blue_minus_green), nn.ReLU())
        self.blocks = nn.Sequential(*[nn.Sequential(self._conv(4, 0.0), nn.ReLU()) for _ in range(4)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        with torch.no_grad():
            self.head[2].weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
            self.head[2].bias.zero_()

    @staticmethod
    def _conv(cin: int, bias: float, weight: torch.Tensor | None = None) -> nn.Conv2d:
        layer = nn.Conv2d(cin, 4, 3, stride=2, padding=1)
        with torch.no_grad():
            layer.weight.copy_(torch.full_like(layer.weight, 1.0 / (9 * cin)) if weight is None else weight)
            layer.bias.fill_(bias)
        return layer

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def _nucleus_at(centre: tuple[int, int], rng: np.random.Generator, radius: int = 8) -> np.ndarray:
    """A float NCHW batch in [0, 1]: a pale pink background with one purple nucleus."""
    import cv2

    image = np.tile(np.array([232, 205, 210], np.float32), (SIZE, SIZE, 1))
    cv2.circle(image, centre, radius, (90, 40, 140), -1)
    image += rng.normal(0, 4, image.shape)
    return (np.clip(image, 0, 255) / 255).transpose(2, 0, 1)[None].astype(np.float32)


def test_hottest_pixel_follows_the_nucleus(one_thread):
    """The old last-map Grad-CAM put the maximum on one fixed spot whatever the image; here it moves with the cell."""
    model, rng, radius = _PurpleDetector().eval(), np.random.default_rng(0), 8
    assert find_target_layer(model, torch.zeros(1, 3, SIZE, SIZE)) is model.blocks[0]  # 16x16, not the 2x2 map
    peaks = set()
    for x, y in [(x, y) for y in (14, 32, 50) for x in (14, 32, 50)]:
        heat, index = gradcam(model, _nucleus_at((x, y), rng, radius))
        assert index == 0 and heat.shape == (SIZE, SIZE)
        py, px = np.unravel_index(np.argmax(heat), heat.shape)
        assert np.hypot(py - y, px - x) <= radius
        yy, xx = np.mgrid[:SIZE, :SIZE]
        disc = np.hypot(yy - y, xx - x) <= radius + 4
        assert heat[disc].sum() / heat.sum() > 0.7  # the disc is 11% of the image
        peaks.add((int(py), int(px)))
    assert len(peaks) == 9


def test_target_layer_is_the_stride_4_stage(one_thread):
    import timm

    resnet = timm.create_model("resnet18", pretrained=False, num_classes=4).eval()
    assert find_target_layer(resnet, torch.zeros(1, 3, 64, 64)) is resnet.layer1
    lite0 = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=8).eval()
    assert find_target_layer(lite0, torch.zeros(1, 3, 128, 128)) is lite0.blocks[1]  # 32x32, not the 4x4 bn2


def test_paper_model_overlay(tmp_path, one_thread):
    from bloodcell.models import create_model

    model = create_model("risodkar2024-cnn", num_classes=4)
    size = model.data_config.input_size
    batch = np.random.default_rng(1).normal(size=(1, 3, size, size)).astype(np.float32)
    heat, index = gradcam(model, batch)
    assert heat.shape == (size, size) and heat.max() == 1.0 and 0 <= index < 4
    out = save_gradcam_overlay(model, batch, model.data_config, tmp_path / "paper.png", class_index=2)
    assert Image.open(out).size == (2 * size + GAP, size + GAP + KEY_HEIGHT)  # the input, the heat, a key


def test_overlay_leaves_cold_pixels_untouched():
    image = np.full((32, 32, 3), 120, np.uint8)
    heat = np.zeros((32, 32), np.float32)
    heat[8:16, 8:16] = 1.0
    blended = np.asarray(overlay(heat, image))
    assert np.array_equal(blended[24:, 24:], image[24:, 24:])  # cold: the image itself
    assert not np.array_equal(blended[10:14, 10:14], image[10:14, 10:14])  # hot: coloured


# --------------------------------------------------------------------------------------
# Real PBC cells and the bundled model
# --------------------------------------------------------------------------------------

PER_CLASS = 5


def _pbc_sample(root, per_class: int = PER_CLASS, seed: int = 0):
    rng = np.random.default_rng(seed)
    picks = []
    for folder in sorted(p for p in (root / "pbc").iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg"))
        picks += [(folder.name, files[i]) for i in rng.choice(len(files), min(per_class, len(files)), replace=False)]
    return picks


@pytest.mark.realdata
def test_bundled_heat_falls_on_the_cell(real_data_root, one_thread):
    """On 40 real cells (5 per class, seed 0), most of the heat the overlay shows and the hottest pixel
    lie on the cell's own mask.

    Measured when written: of the heat the overlay colours (above ``OVERLAY_FLOOR``), 0.66 lies in the
    mask on average, and more than half for 32/40 cells (the mask covers 0.09 of the image); of all the
    heat, faint background included, 0.34. Hottest pixel inside for 36/40 cells (every miss a platelet
    beside other platelets).
    """
    from bloodcell.inference.explain import OVERLAY_FLOOR
    from bloodcell.inference.predictor import load
    from bloodcell.segmentation import preprocess, segment
    from bloodcell.weights import WEIGHTS_DIR

    if not (WEIGHTS_DIR / "pbc8.safetensors").is_file():
        pytest.skip("bundled model pbc8 not trained yet")
    classifier = load("pbc8")
    shown, shares, areas, inside, peaks = [], [], [], [], set()
    for _, path in _pbc_sample(real_data_root):
        image = Image.open(path).convert("RGB")
        pixels = classifier.pixels([image])
        mask = segment(preprocess(pixels[0].transpose(1, 2, 0))).cell
        if not mask.any():
            continue  # segmentation failed: no mask to score against
        heat, _ = gradcam(classifier.model, classifier.preprocess([image]))
        coloured = np.clip(heat - OVERLAY_FLOOR, 0, None)
        shown.append(float((coloured * mask).sum() / coloured.sum()))
        shares.append(float((heat * mask).sum() / heat.sum()))
        areas.append(float(mask.mean()))
        peak = np.unravel_index(np.argmax(heat), heat.shape)
        inside.append(bool(mask[peak]))
        peaks.add(peak)
    assert len(shares) >= 36
    shown, shares, areas = np.array(shown), np.array(shares), np.array(areas)
    assert shown.mean() > 0.5 and np.mean(shown > 0.5) >= 0.75  # most of what the page colours is on the cell
    assert shares.mean() > 2.5 * areas.mean()  # a uniform map would give the mask's area
    assert np.mean(shares > areas) >= 0.9
    assert np.mean(inside) >= 0.8
    assert len(peaks) >= 0.8 * len(shares)  # not one fixed spot
