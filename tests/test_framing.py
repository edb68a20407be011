"""The one crop-around-a-cell function: square, centred on the box, the photo's background outside."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bloodcell.errors import ConfigError
from bloodcell.framing import (
    CONTEXT,
    NUCLEUS_TO_CELL,
    CellSearch,
    count_cells,
    crop_around,
    find_cell,
    frame_box,
    frame_cell,
    lone_cell,
    search_cells,
)

BACKGROUND, CELL = (235, 225, 230), (90, 40, 140)


def _photo() -> Image.Image:
    image = Image.new("RGB", (200, 150), BACKGROUND)
    ImageDraw.Draw(image).rectangle((80, 50, 119, 89), fill=CELL)  # a 40x40 "cell"
    return image


def test_crop_is_square_context_times_the_box_and_centred_on_it():
    crop = crop_around(_photo(), (80, 50, 120, 90))
    assert crop.size == (round(40 * CONTEXT),) * 2
    a = np.asarray(crop, dtype=np.int16)
    cell = np.all(np.abs(a - CELL) < 10, axis=2)
    ys, xs = np.nonzero(cell)
    assert abs(xs.mean() - crop.width / 2) < 1.5 and abs(ys.mean() - crop.height / 2) < 1.5
    assert abs(cell.mean() - 1 / CONTEXT ** 2) < 0.03  # the cell fills 1/context^2 of the crop


def test_a_cell_at_the_border_stays_centred_on_the_background_colour():
    crop = crop_around(_photo(), (170, 0, 210, 30), context=2.0)  # runs past the top and right edges
    assert crop.size == (80, 80)
    corner = np.asarray(crop)[0, -1]
    assert np.all(np.abs(corner.astype(int) - BACKGROUND) < 3)  # filled outside the photo, not black


def test_context_must_be_positive():
    with pytest.raises(ConfigError):
        crop_around(_photo(), (80, 50, 120, 90), context=0)


def _cell(size: int, diameter: float, centre: tuple[float, float] | None = None) -> Image.Image:
    """A purple cell (pale cytoplasm, dark nucleus) on a pale background."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cx, cy = centre or (size / 2, size / 2)
    r = diameter / 2
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(205, 190, 220))
    draw.ellipse((cx - 0.75 * r, cy - 0.75 * r, cx + 0.75 * r, cy + 0.75 * r), fill=CELL)
    return image


def _cell_fraction(image: Image.Image) -> float:
    """The cell's diameter as a fraction of the image side (from the non-background pixels)."""
    a = np.asarray(image, dtype=np.int16)
    mask = np.any(np.abs(a - BACKGROUND) > 25, axis=2)
    ys, xs = np.nonzero(mask)
    return (xs.max() - xs.min() + 1) / image.width


def test_framing_brings_a_cell_to_one_size_whatever_its_size_in_the_input():
    filling = frame_cell(_cell(128, 124))  # fills the frame
    native = frame_cell(_cell(360, 145))  # PBC-like: about 40 % of the width
    small = frame_cell(_cell(1000, 100, (430, 560)))  # small, off-centre in a wide field
    fractions = [_cell_fraction(image) for image in (filling, native, small)]
    assert max(fractions) - min(fractions) < 0.06, fractions
    # nucleus 0.75 of the cell, box 1.15 x the nucleus, side 1.5 x the box: the cell spans 1 / 1.29 of the side
    assert fractions[0] == pytest.approx(1 / (CONTEXT * NUCLEUS_TO_CELL * 0.75), abs=0.05)


def test_framing_keeps_an_image_without_a_stained_cell_as_it_is():
    blank = Image.new("RGB", (200, 150), BACKGROUND)
    assert find_cell(blank) is None and frame_cell(blank) is blank


def test_lone_cell_is_the_cell_of_a_one_cell_image_and_none_for_a_field():
    one = _photo()
    assert count_cells(one) == 1 and lone_cell(one) == find_cell(one) is not None
    field = _photo()
    ImageDraw.Draw(field).rectangle((10, 10, 49, 49), fill=CELL)  # a second cell of the same size
    assert count_cells(field) == 2 and find_cell(field) is not None and lone_cell(field) is None
    assert lone_cell(Image.new("RGB", (64, 64), BACKGROUND)) is None  # nothing stained


def test_only_white_cell_groups_wholly_inside_the_image_are_counted():
    """A small centred cell beside a neighbour cut by the edge is one cell (the span needed among several groups does
    not apply); the same neighbour moved wholly inside makes two groups, and the small cell a field's."""
    cut = Image.new("RGB", (240, 240), BACKGROUND)
    ImageDraw.Draw(cut).ellipse((96, 96, 144, 144), fill=CELL)  # span about 0.23 of the side: < SEVERAL_CELLS_SPAN
    ImageDraw.Draw(cut).ellipse((90, 210, 150, 270), fill=CELL)  # cut by the bottom edge
    inside = Image.new("RGB", (240, 240), BACKGROUND)
    ImageDraw.Draw(inside).ellipse((96, 96, 144, 144), fill=CELL)
    ImageDraw.Draw(inside).ellipse((90, 170, 150, 226), fill=CELL)  # wholly inside, near the bottom edge
    assert search_cells(cut).count == 1 and search_cells(cut).single_cell(cut.size)
    assert search_cells(inside).count == 2 and not search_cells(inside).single_cell(inside.size)


def test_one_search_finds_what_find_cell_and_count_cells_find_and_frames_alike():
    field = _photo()
    ImageDraw.Draw(field).rectangle((10, 10, 49, 49), fill=CELL)
    blank = Image.new("RGB", (64, 64), BACKGROUND)
    for image in (_photo(), field, _cell(360, 145), blank):
        search = search_cells(image)
        assert search == CellSearch(find_cell(image), count_cells(image))
        assert np.array_equal(np.asarray(frame_box(image, search.box)), np.asarray(frame_cell(image)))
    assert search_cells(field).count == 2 and search_cells(blank) == CellSearch(None, 0)


def _single_cell_crop(neighbour: bool) -> Image.Image:
    """A 160-px crop of one 70-px cell at its centre, optionally with a neighbour cut by the right edge."""
    image = Image.new("RGB", (160, 160), BACKGROUND)
    ImageDraw.Draw(image).ellipse((45, 45, 115, 115), fill=CELL)
    if neighbour:
        ImageDraw.Draw(image).ellipse((132, 30, 200, 110), fill=CELL)
    return image


def test_a_single_cell_crop_is_one_even_with_a_neighbour_at_its_edge_and_a_field_is_not():
    for neighbour in (False, True):
        crop = _single_cell_crop(neighbour)
        search = search_cells(crop)
        assert search.count == 1 and search.single_cell(crop.size)  # a neighbour cut by the edge is not counted
    field = Image.new("RGB", (640, 480), BACKGROUND)  # a smear photo: white cells small beside the photo
    for x, y in ((320, 240), (100, 100)):
        ImageDraw.Draw(field).ellipse((x - 25, y - 25, x + 25, y + 25), fill=CELL)
    assert not search_cells(field).single_cell(field.size)
    off_centre = Image.new("RGB", (120, 120), BACKGROUND)
    ImageDraw.Draw(off_centre).ellipse((70, 70, 118, 118), fill=CELL)  # one cell, in a corner
    assert not search_cells(off_centre).single_cell(off_centre.size)
    assert not CellSearch(None, 0).single_cell((100, 100))


def test_the_nearest_component_is_the_one_with_the_pixel_nearest_the_centre_above_the_area_floor():
    from bloodcell.segmentation import nearest_component

    mask = np.zeros((21, 21), bool)
    mask[2:5, 2:5] = True  # 9 pixels, far
    mask[9:12, 14:17] = True  # 9 pixels, its nearest pixel 4 from the centre (10, 10)
    mask[10, 6] = True  # 1 pixel, also 4 from the centre: first in row order, but below the area floor
    assert (nearest_component(mask, 2) == (np.arange(21)[:, None] >= 9) & (np.arange(21)[:, None] < 12)
            & (np.arange(21) >= 14) & (np.arange(21) < 17)).all()
    assert nearest_component(mask, 1)[10, 6] and nearest_component(mask, 1).sum() == 1  # ties: the first row by row
    assert nearest_component(mask, 10) is None


def test_the_nearest_label_is_the_one_a_search_of_every_pixel_finds():
    """The pixels nearest the centre are looked at first; the answer is that of a search of every pixel (row by row
    on a tie), on random masks where the nearest large group is near the centre, far from it, or absent."""
    import cv2

    from bloodcell.segmentation import nearest_label

    rng = np.random.default_rng(0)
    for trial in range(200):
        height, width = (int(v) for v in rng.integers(1, 90, 2))
        mask = (rng.random((height, width)) < rng.uniform(0.001, 0.6)).astype(np.uint8)
        if trial % 3 == 0:  # nothing near the centre: the first look finds nothing
            mask[height // 4:height - height // 4, width // 4:width - width // 4] = 0
        _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        floor = float(rng.integers(0, 12))
        big = stats[:, cv2.CC_STAT_AREA] >= floor
        big[0] = False
        distances = np.hypot(np.arange(height)[:, None] - (height - 1) / 2, np.arange(width)[None, :] - (width - 1) / 2)
        expected = int(labels.flat[np.where(big[labels], distances, np.inf).argmin()]) if big.any() else None
        assert nearest_label(labels, stats, floor) == expected


def test_the_stain_ends_are_numpys_percentiles_to_the_bit():
    from bloodcell.framing import STAIN_RANGE, _stain_ends

    rng = np.random.default_rng(1)
    arrays = []
    for count in (1, 2, 7, 1000, 1024, 1025, 16383, 16384, 21845, 100_000):
        noise = rng.standard_normal(count).astype(np.float32)
        outliers = noise.copy()
        outliers[:count // 40] = 90.0  # more extreme values at the top than a strided sample suggests
        arrays += [noise, np.sort(noise), np.sort(noise)[::-1].copy(), outliers,
                   rng.integers(0, 4, count).astype(np.float32), np.full(count, 2.5, np.float32)]
    arrays.append(rng.normal(10, 30, (128, 171)).astype(np.float32))  # a small copy's stain, 2D
    for values in arrays:
        smallest, low, high, largest = _stain_ends(values)
        expected = np.percentile(values, STAIN_RANGE)
        assert (low, high) == (expected[0], expected[1]) and type(low) is type(expected[0])
        assert (smallest, largest) == (values.min(), values.max())


def test_a_search_reduces_a_large_image_by_whole_factors_first():
    """A 256 px cell is searched on its 2 x 2 box average (Pillow's reduce), and finds the cell as on a
    plain resize."""
    from bloodcell.framing import SEARCH_SIDE

    image = Image.new("RGB", (2 * SEARCH_SIDE, 2 * SEARCH_SIDE), BACKGROUND)
    ImageDraw.Draw(image).ellipse((100, 90, 160, 150), fill=CELL)
    box = find_cell(image)
    assert box is not None
    x1, y1, x2, y2 = box
    assert abs((x1 + x2) / 2 - 130) < 3 and abs((y1 + y2) / 2 - 120) < 3
    assert abs(max(x2 - x1, y2 - y1) - 61 * NUCLEUS_TO_CELL) < 6
