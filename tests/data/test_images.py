"""read_image on the inputs users really send, bad ones included."""

from __future__ import annotations

import io

import numpy as np
import pytest
from datafakes import cell, jpeg_bytes
from PIL import Image

from bloodcell.data.images import image_files, is_image_path, read_image
from bloodcell.errors import ImageError


def test_non_image_named_jpg_is_refused(tmp_path):
    path = tmp_path / ".DS_1.jpg"
    path.write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 100)
    with pytest.raises(ImageError, match="not an image"):
        read_image(path)


def test_truncated_jpeg_is_refused(tmp_path):
    data = jpeg_bytes(cell(1, 64))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        read_image(path)


def test_empty_missing_and_folder_inputs(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(empty)
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="folder"):
        read_image(tmp_path)


def test_grayscale_becomes_rgb_with_same_values(tmp_path):
    gray = Image.fromarray(np.full((8, 9), 77, np.uint8), mode="L")
    out = read_image(gray)
    assert out.mode == "RGB" and out.size == (9, 8)
    assert np.asarray(out)[0, 0].tolist() == [77, 77, 77]


def test_rgba_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[0, 0, 3] = 255  # one opaque red pixel, the rest transparent
    out = np.asarray(read_image(Image.fromarray(rgba, mode="RGBA")))
    assert out[0, 0].tolist() == [255, 0, 0]
    assert out[1, 1].tolist() == [255, 255, 255]


def test_16bit_png_is_rescaled_not_clipped(tmp_path):
    arr = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    out = np.asarray(read_image(path))[..., 0]
    assert out[0, 1] == 255 and out[0, 0] == 0 and 120 < out[1, 0] < 135


def test_bytes_and_arrays():
    data = jpeg_bytes(cell(2, 32))
    assert read_image(data).size == (32, 32)
    assert read_image(np.ones((5, 6), np.float32)).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ImageError, match="NaN"):
        read_image(np.full((3, 3), np.nan))
    with pytest.raises(ImageError, match="not an image"):
        read_image(b"plain text, not a picture")


def test_huge_image_is_refused():
    img = Image.new("RGB", (200, 200))
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    with pytest.raises(ImageError, match=r"^<bytes>: image is 200x200 pixels, more than the limit of 1000$"):
        read_image(buffer.getvalue(), max_pixels=1000)


def test_is_image_path_skips_dot_files(tmp_path):
    assert is_image_path(tmp_path / "a.JPG")
    assert not is_image_path(tmp_path / ".DS_1.jpg")
    assert not is_image_path(tmp_path / "notes.txt")


def test_image_files_searches_recursively_sorted_and_skips_non_images(tmp_path):
    for rel in ("b/2.png", "a/1.JPG", "a/deep/3.tif", "a/._1.jpg", "a/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "folder.jpg").mkdir()
    found = [p.relative_to(tmp_path).as_posix() for p in image_files(tmp_path)]
    assert found == ["a/1.JPG", "a/deep/3.tif", "b/2.png"]
