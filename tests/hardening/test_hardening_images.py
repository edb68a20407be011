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


# -- decoding memory is budgeted by bytes per pixel in the CLI too (issue 30) ----------------------------------

@pytest.fixture()
def deep_png(tmp_path, monkeypatch):
    """A 16-bit 40-megapixel PNG of under 1 MB; decoding it (about 1.2 GB) fails the test."""
    from hardening_helpers import png16
    from PIL import ImageFile

    path = tmp_path / "deep.png"
    path.write_bytes(png16(6400, 6250))
    assert path.stat().st_size < 1_000_000
    real = ImageFile.ImageFile.load

    def load(self):
        if self.size == (6400, 6250):
            pytest.fail("the 16-bit 40-megapixel PNG was decoded")
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return path


def test_a_16_bit_40_megapixel_png_is_refused_before_decoding(deep_png):
    from bloodcell.errors import ImageError

    with pytest.raises(ImageError) as refused:
        read_image(deep_png)
    message = str(refused.value)
    assert message.startswith(f"{deep_png}: a 6400x6250 I;16 image needs about 1144 MB to decode, more than the "
                              "limit of 1024 MB") and message.count(". ") == 0


def test_predict_refuses_a_16_bit_40_megapixel_png_in_one_sentence_and_classifies_the_rest(tmp_path, deep_png):
    from hardening_helpers import cell_png

    cell_png(deep_png.parent / "cell.png")
    checkpoint = save_tiny(tmp_path / "tiny.safetensors")
    result = CliRunner().invoke(app, ["predict", str(deep_png.parent), "--model", str(checkpoint),
                                      "--output", str(tmp_path / "out.json")])
    assert result.exit_code == 0 and "(1 unreadable" in result.output, result.output
    cell, deep = json.loads((tmp_path / "out.json").read_text())
    assert cell["label"] and cell["error"] is None and deep["label"] is None
    assert deep["error"] == (f"{deep_png}: a 6400x6250 I;16 image needs about 1144 MB to decode, more than the limit "
                             "of 1024 MB (convert it to an 8-bit image or a smaller one)")

