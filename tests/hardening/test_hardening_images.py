"""Hardening item 9: a photo is read upright, as viewers show it (its EXIF orientation applied)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hardening_helpers import save_tiny
from PIL import Image
from typer.testing import CliRunner

from bloodcell.cli.main import app
from bloodcell.data.images import read_image

#: EXIF tag 0x0112; 6 means "rotate 90 degrees clockwise to display".
ORIENTATION = 0x0112


def _sideways_jpeg(path, width: int = 96, height: int = 64):
    """A JPEG stored ``width`` x ``height`` with its left half red and right half blue, tagged orientation 6."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (220, 30, 30)
    pixels[:, width // 2:] = (30, 30, 220)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(pixels).save(path, quality=95, exif=exif.tobytes())
    return path


def test_exif_orientation_is_applied(tmp_path):
    image = read_image(_sideways_jpeg(tmp_path / "sideways.jpg"))
    assert image.size == (64, 96)  # upright: as tall as the stored photo is wide
    top, bottom = np.asarray(image)[10, 32], np.asarray(image)[-10, 32]
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]  # the stored left (red) side is on top
    assert read_image((tmp_path / "sideways.jpg").read_bytes()).size == (64, 96)


def test_annotated_smear_is_as_upright_as_the_photo(tmp_path):
    photo = _sideways_jpeg(tmp_path / "smear.jpg", 160, 120)
    out = tmp_path / "counts"
    result = CliRunner().invoke(app, ["count", str(photo), "--output", str(out), "--detector", "classical",
                                      "--model", str(save_tiny(tmp_path / "tiny.safetensors"))])
    assert result.exit_code == 0, result.output
    entry = json.loads((out / "counts.json").read_text())["images"][0]
    with Image.open(out / entry["annotated_png"]) as annotated:
        assert annotated.size == (120, 160)


def test_oriented_size_follows_the_exif_rotation_read_image_applies(tmp_path):
    from bloodcell.data.images import oriented_size, read_image

    image = Image.new("RGB", (40, 30), (200, 100, 120))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert oriented_size(path) == read_image(path).size == (30, 40)


def test_a_broken_sources_csv_is_one_sentence(tmp_path):
    from bloodcell.data.smears import read_sources
    from bloodcell.errors import DataError

    (tmp_path / "sources.csv").write_bytes(b"file,source\n\xff\xfe\x00broken\n")
    with pytest.raises(DataError, match="cannot read the sources file"):
        read_sources(tmp_path)
