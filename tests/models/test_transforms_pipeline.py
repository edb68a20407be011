"""Transforms: shapes, dtype, normalisation, inputs, determinism, background fill and zoom."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from bloodcell.checkpoint import DataConfigSchema
from bloodcell.data.dataset import ManifestDataset, resize_center_crop, resize_square
from bloodcell.data.manifest import ManifestRow, write_manifest
from bloodcell.errors import ConfigError, ImageError
from bloodcell.train.config import TrainConfig
from bloodcell.transforms import (
    AUGMENTATIONS,
    DataConfig,
    create_pixel_transform,
    create_transform,
    denormalize,
    finish_pixels,
    normalize_batch,
    stage_image,
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
    assert AUGMENTATIONS == ("none", "flips", "literature", "strong", "balanced", "multilab")


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


@pytest.mark.parametrize("config", [DataConfig(128, interpolation="bicubic"), DataConfig(96, resize="squash"),
                                    DataConfig(64, framing="cell")])
def test_batched_staging_and_finishing_give_the_pixel_transform_s_pixels(config):
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((363, 360), (120, 200))]
    images.append(Image.fromarray(cell_image().permute(1, 2, 0).numpy()))
    expected = np.stack([create_pixel_transform(config)(im).numpy() for im in images])
    staged = np.stack([stage_image(im, config) for im in images])
    assert staged.shape == (3, staging_size(config.input_size), staging_size(config.input_size), 3)
    np.testing.assert_array_equal(finish_pixels(staged, config), expected)


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


# --- resize: "crop" (shorter side + centre crop, the default) or "squash" (both sides) ---------------

SQUASH = DataConfig(128, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize="squash")


def _white_centre_third(height: int = 100, width: int = 300) -> torch.Tensor:
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    image[:, :, width // 3:2 * width // 3] = 255
    return image


@pytest.mark.parametrize("as_pil", [False, True])
def test_squash_keeps_the_whole_image_and_crop_only_its_middle(as_pil):
    image = _white_centre_third()
    source = Image.fromarray(image.permute(1, 2, 0).numpy()) if as_pil else image
    squashed = create_pixel_transform(SQUASH)(source)
    cropped = create_pixel_transform(UNIT)(source)
    assert squashed.shape == cropped.shape == (3, 128, 128)
    assert squashed[:, :, :30].max() < 10 and squashed[:, :, -30:].max() < 10  # the black sides are kept
    assert squashed[:, :, 50:78].min() > 245  # the white third, squeezed to the middle third
    assert cropped[:, :, 5:-5].min() > 245  # the crop sees only the white middle


def test_squash_pil_pixels_equal_the_training_cache_pixels():
    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    transform = create_transform(SQUASH, is_training=False)
    staged = np.asarray(resize_square(pil, staging_size(128), "squash"))
    assert staged.shape == (staging_size(128), staging_size(128), 3)
    assert torch.equal(transform(pil), transform(torch.from_numpy(staged.copy()).permute(2, 0, 1).contiguous()))


def test_resize_defaults_to_crop_and_round_trips_through_dicts_and_the_checkpoint_schema():
    assert DataConfig(64).resize == "crop" and DataConfig.from_dict({"input_size": 64}).resize == "crop"
    assert DataConfig.from_dict(SQUASH.to_dict()) == SQUASH
    assert DataConfigSchema.model_validate(SQUASH.to_dict()).resize == "squash"
    assert DataConfigSchema.model_validate({"input_size": 64}).resize == "crop"
    with pytest.raises(ValidationError):
        DataConfigSchema.model_validate({"input_size": 64, "resize": "stretch"})


def test_unknown_resize_is_a_config_error_everywhere():
    with pytest.raises(ConfigError, match="unknown resize 'stretch'"):
        create_transform(DataConfig(64, resize="stretch"), is_training=False)
    with pytest.raises(ConfigError, match="unknown resize 'stretch'"):
        resize_square(Image.new("RGB", (8, 8)), 4, "stretch")
    with pytest.raises(ConfigError, match="resize must be one of crop, squash"):
        TrainConfig(resize="stretch")
    assert TrainConfig(resize="squash").resize == "squash"


def test_training_cache_key_includes_squash_but_crop_keeps_the_old_key(tmp_path):
    for k in range(2):
        Image.new("RGB", (30, 20), (40 * k, 80, 120)).save(tmp_path / f"{k}.png")
    rows = [ManifestRow(f"{k}.png", label, "", "train", "") for k, label in enumerate(("eosinophil", "neutrophil"))]
    manifest = write_manifest(tmp_path / "m.csv", "folder", rows)

    def dataset(**kwargs) -> ManifestDataset:
        return ManifestDataset(manifest, "train", taxonomy="labels", root=tmp_path, cache_dir=tmp_path / "cache",
                               cache_size=16, prepare=lambda image: image, **kwargs)

    crop, default, squash = dataset(resize="crop"), dataset(), dataset(resize="squash")
    assert crop.cache_key() == default.cache_key() != squash.cache_key()
    # the squashed cache keeps the whole 30x20 image: its left and right columns are the image's own edges
    assert tuple(squash[0][0].shape) == (3, 16, 16)
    assert torch.equal(squash[0][0], torch.from_numpy(np.asarray(resize_square(
        Image.open(tmp_path / "0.png").convert("RGB"), 16, "squash")).copy()).permute(2, 0, 1))
