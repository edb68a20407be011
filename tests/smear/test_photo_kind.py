"""Auto mode decides single cell or smear field by the cells the detector finds, never by the photo's width: one
white cell (or platelet) in the middle is a single cell; several white cells, one off the middle, or a field of
red cells is a smear field. On real photos: 256- and 360-px fields cut from CBC smears are smear fields, PBC
single-cell crops single cells."""

from __future__ import annotations


import pytest
from PIL import Image

from bloodcell.smear.photo_kind import photo_kind, too_small


def _box(label, cx, cy, half=20):
    return {"label": label, "x1": cx - half, "y1": cy - half, "x2": cx + half, "y2": cy + half}


def _kind(boxes, size=(360, 363)):
    counts = {label: sum(b["label"] == label for b in boxes) for label in ("RBC", "WBC", "Platelets")}
    return photo_kind(counts, boxes, *size)


def test_one_white_cell_in_the_middle_among_red_cells_is_a_single_cell():
    kind = _kind([_box("WBC", 180, 185, 60)] + [_box("RBC", x, y) for x, y in ((30, 30), (320, 40), (40, 320))])
    assert kind.kind == "cell" and kind.cells == {"RBC": 3, "WBC": 1, "Platelets": 0}
    assert kind.reason == ("taken as a single cell: the detector found 3 red cells, 1 white cell, one white cell in "
                           "the middle; choose 'smear photos' to count it as a smear field instead")


@pytest.mark.parametrize("size", [(256, 256), (360, 360), (640, 480)])
def test_fields_are_smear_whatever_their_width(size):
    w, h = size
    assert _kind([_box("WBC", w * 0.2, h * 0.5), _box("WBC", w * 0.8, h * 0.5)], size).kind == "smear"
    off_middle = _kind([_box("WBC", w * 0.1, h * 0.15)] + [_box("RBC", w / 2, h / 2)], size)
    assert off_middle.kind == "smear" and "none alone in the middle" in off_middle.reason
    reds = _kind([_box("RBC", w * f, h * f) for f in (0.2, 0.4, 0.6, 0.8)], size)
    assert reds.kind == "smear" and "a field of red cells" in reds.reason and "choose 'single cells'" in reds.reason


def test_a_platelet_crop_and_an_empty_image_are_single_cells():
    assert _kind([_box("Platelets", 180, 180, 10), _box("RBC", 30, 30)]).kind == "cell"
    assert _kind([]).kind == "cell"
    assert too_small(48, 48).kind == "cell" and "too small" in too_small(48, 48).reason


@pytest.mark.realdata
@pytest.mark.slow
def test_real_fields_cut_from_cbc_are_smear_and_pbc_crops_single_cells(real_data_root):
    from bloodcell.smear.counting import count_image

    def kind_of(image):
        found = count_image(image, classifier=None)
        return photo_kind(found["counts"], found["boxes"], image.width, image.height)

    photo = Image.open(real_data_root / "cbc" / "Training" / "Images" / "BloodImage_00000.jpg").convert("RGB")
    for side, x, y in ((256, 197, 194), (360, 215, 5)):  # benchmarks/photo_kind.py's first two fields
        assert kind_of(photo.crop((x, y, x + side, y + side))).kind == "smear", (side, x, y)
    for folder in ("neutrophil", "lymphocyte"):
        crop = sorted((real_data_root / "pbc_originals_sample" / folder).glob("[!.]*.jpg"))[0]
        assert kind_of(Image.open(crop).convert("RGB")).kind == "cell", crop.name
