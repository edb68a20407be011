"""Transforms: shapes, dtype, normalisation, inputs, determinism, background fill and zoom."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bloodcell.errors import ConfigError, ImageError
from bloodcell.models.registry import DataConfig
from bloodcell.data.dataset import resize_center_crop
from bloodcell.transforms import (
    create_pixel_transform,
    create_transform,
    denormalize,
    list_augmentations,
    normalize_batch,
    staging_size,
)

BACKGROUND = (228, 200, 210)
CELL = (90, 40, 130)
UNIT = DataConfig(128, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


#: PBC's white cells fill about 40 % of the frame's width (a radius of 0.2 of the side).
PBC_RADIUS = 0.2


def cell_image(height: int = 363, width: int = 360, radius_fraction: float = 0.3) -> torch.Tensor:
    """A smear-like crop: light background, one dark disc in the middle (uint8 CHW)."""
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (radius_fraction * min(height, width)) ** 2
    image = np.where(disc[..., None], CELL, BACKGROUND).astype(np.uint8)
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def test_augmentation_names():
    assert list_augmentations() == ("none", "flips", "literature", "strong", "balanced")


@pytest.mark.parametrize("augment", ["none", "flips", "literature", "strong", "balanced"])
@pytest.mark.parametrize("as_pil", [False, True])
def test_output_shape_dtype_for_each_augment(augment, as_pil):
    image = cell_image()
    source = Image.fromarray(image.permute(1, 2, 0).numpy()) if as_pil else image
    out = create_transform(DataConfig(96), is_training=True, augment=augment)(source)
    assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == (3, 96, 96)
    assert torch.isfinite(out).all()


def test_eval_normalises_with_the_config_statistics():
    config = DataConfig(64, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    image = torch.tensor([200, 100, 50], dtype=torch.uint8).view(3, 1, 1).expand(3, 90, 120).contiguous()
    out = create_transform(config, is_training=False)(image)
    expected = (torch.tensor([200, 100, 50]) / 255 - torch.tensor(config.mean)) / torch.tensor(config.std)
    assert torch.allclose(out[:, 10, 10], expected, atol=1e-5)
    assert torch.allclose(denormalize(out, config)[:, 0, 0], torch.tensor([200, 100, 50]) / 255, atol=1e-5)


def test_pixels_then_batch_normalisation_equal_the_evaluation_transform():
    config = DataConfig(96, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5), interpolation="bicubic")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((363, 360), (120, 200))]
    pixels = np.stack([create_pixel_transform(config)(im).numpy() for im in images])
    assert pixels.dtype == np.uint8 and pixels.shape == (2, 3, 96, 96)
    expected = np.stack([create_transform(config, is_training=False)(im).numpy() for im in images])
    np.testing.assert_array_equal(normalize_batch(pixels, config), expected)


def test_pil_and_tensor_inputs_agree_and_eval_ignores_augment():
    image = cell_image()
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    transform = create_transform(DataConfig(128), is_training=False, augment="strong")
    assert (transform(image) - transform(pil)).abs().mean() < 0.02  # Pillow vs torch resampling only
    assert torch.equal(transform(image), transform(image))
    # a PIL image gets exactly the pixels of the training cache (Pillow-staged, then the final resize)
    staged = np.asarray(resize_center_crop(pil, staging_size(128)))
    assert torch.equal(transform(pil), transform(torch.from_numpy(staged.copy()).permute(2, 0, 1).contiguous()))


def test_resize_keeps_aspect_and_centre_crops():
    image = torch.zeros(3, 100, 300, dtype=torch.uint8)
    image[:, :, 100:200] = 255  # white centre third
    out = create_transform(UNIT, is_training=False)(image)
    assert out.shape == (3, 128, 128)
    assert out[:, :, 5:-5].min() > 0.95  # the crop sees only the white middle


def test_grey_and_rgba_pil_images_are_accepted():
    grey = Image.new("L", (50, 40), 128)
    rgba = Image.new("RGBA", (50, 40), (10, 20, 30, 255))
    transform = create_transform(UNIT, is_training=False)
    assert transform(grey).shape == transform(rgba).shape == (3, 128, 128)


@pytest.mark.parametrize("bad", [torch.rand(3, 20, 20), torch.zeros(4, 20, 20, dtype=torch.uint8), np.zeros((20, 20, 3))])
def test_bad_inputs_raise_image_error(bad):
    with pytest.raises(ImageError):
        create_transform(UNIT, is_training=False)(bad)


def test_unknown_augment_is_config_error():
    with pytest.raises(ConfigError, match="unknown augmentation 'heavy'"):
        create_transform(UNIT, is_training=True, augment="heavy")


@pytest.mark.parametrize("augment", ["flips", "literature", "strong", "balanced"])
def test_augmentation_is_reproducible_under_manual_seed(augment):
    transform = create_transform(UNIT, is_training=True, augment=augment)
    image = cell_image()
    image[:, :40, :40] = 0  # break the symmetry so flips change the output
    torch.manual_seed(7)
    first = [transform(image) for _ in range(4)]
    torch.manual_seed(7)
    second = [transform(image) for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert any(not torch.equal(first[0], other) for other in first[1:])


@pytest.mark.parametrize("augment", ["literature", "strong"])
def test_uncovered_corners_take_the_background_colour(augment):
    transform = create_transform(UNIT, is_training=True, augment=augment)
    torch.manual_seed(0)
    for _ in range(20):
        out = transform(cell_image(radius_fraction=PBC_RADIUS))
        corners = out[:, [0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.mean(dim=0).min() > 0.55, "rotations must not leave black corners"


def test_balanced_keeps_native_framing_for_about_half_the_images_and_always_changes_colours():
    image = torch.full((3, 150, 150), 210, dtype=torch.uint8)
    image[:, :40, :40] = 0  # a black corner shows which dihedral view was taken, or that it moved

    def dark(out: torch.Tensor) -> torch.Tensor:
        grey = out.mean(dim=0)
        return grey < (grey.min() + grey.max()) / 2

    plain = create_transform(UNIT, is_training=False)(image)
    views = [torch.rot90(plain, k, dims=(1, 2)) for k in range(4)]
    views += [view.flip(-1) for view in views]
    transform = create_transform(UNIT, is_training=True, augment="balanced")
    torch.manual_seed(3)
    outputs = [transform(image) for _ in range(40)]
    native = [min((dark(out) ^ dark(view)).float().mean().item() for view in views) < 0.01 for out in outputs]
    assert 8 <= sum(native) <= 32  # the rest were rotated, shifted or zoomed
    assert all(not torch.allclose(out, view, atol=0.05) for out in outputs for view in views)  # colours changed


def test_strong_zoom_keeps_the_cell_in_frame_and_varies_its_size():
    transform = create_transform(UNIT, is_training=True, augment="strong")
    torch.manual_seed(1)
    areas = []
    for _ in range(40):
        out = transform(cell_image(radius_fraction=PBC_RADIUS))
        grey = out.mean(dim=0)
        cell = grey < (grey.amin() + grey.amax()) / 2
        assert grey.amax() - grey.amin() > 0.25, "the cell must stay visible"
        area = cell.float().mean().item()
        ys, xs = torch.nonzero(cell, as_tuple=True)
        assert area > 0.05, "the cell must stay visible"
        assert 0.2 * 128 < ys.float().mean() < 0.8 * 128 and 0.2 * 128 < xs.float().mean() < 0.8 * 128
        areas.append(area)
    # the disc covers ~28 % of the eval frame; zoom spreads it from ~9 % up to most of the frame
    assert min(areas) < 0.15 and max(areas) > 0.45
