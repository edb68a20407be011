"""VOC XML and YOLO parsing (quirks and malformed files)."""

from __future__ import annotations

import pytest

from bloodcell.data.smears import labels_beside, smear_images
from bloodcell.data.voc import parse_voc
from bloodcell.data.yolo import parse_yolo, read_classes
from bloodcell.errors import DataError


VOC = b"""<annotation><filename>BloodImage_00001.jpg</filename>
<size><width>640</width><height>480</height><depth>3</depth></size>
<object><name> rbc </name><bndbox><xmin>10.0</xmin><ymin>20</ymin><xmax>50.6</xmax><ymax>70</ymax></bndbox></object>
<object><name>WBC</name><bndbox><xmin>600</xmin><ymin>300</ymin><xmax>560</xmax><ymax>500</ymax></bndbox></object>
<object><name>Platelet</name><bndbox><xmin>504</xmin><ymin>337</ymin><xmax>504</xmax><ymax>337</ymax></bndbox></object>
</annotation>"""


def test_voc_quirks_are_tolerated():
    ann = parse_voc(VOC)
    assert ann.filename == "BloodImage_00001.jpg" and (ann.width, ann.height) == (640, 480)
    assert [b.label for b in ann.boxes] == ["RBC", "WBC"]
    assert ann.boxes[0].x2 == pytest.approx(50.6)
    assert (ann.boxes[1].x1, ann.boxes[1].x2, ann.boxes[1].y2) == (560, 600, 480)  # swapped and clipped
    assert ann.dropped == 1  # the zero-area platelet box


def test_voc_malformed_files_raise_one_clear_error(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<annotation><object><name>RBC</name>")
    with pytest.raises(DataError, match="broken.xml: malformed VOC XML"):
        parse_voc(broken)
    with pytest.raises(DataError, match="no numeric <xmax>"):
        parse_voc(b"<annotation><object><name>RBC</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>x</xmax><ymax>3</ymax></bndbox></object></annotation>")
    with pytest.raises(DataError, match="not a VOC annotation"):
        parse_voc(b"<svg></svg>")
    with pytest.raises(DataError, match="not found"):
        parse_voc(tmp_path / "none.xml")


def test_voc_without_size_keeps_boxes_unclipped():
    ann = parse_voc(b"<annotation><object><name>WBC</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>900</xmax><ymax>9</ymax></bndbox></object></annotation>")
    assert ann.width is None and ann.boxes[0].x2 == 900


def test_smear_images_of_a_voc_dataset(tmp_path):
    for sub in ("Training/Annotations", "Training/Images"):
        (tmp_path / "cbc" / sub).mkdir(parents=True)
    (tmp_path / "cbc" / "Training" / "Annotations" / "BloodImage_00001.xml").write_bytes(VOC)
    photos = smear_images("cbc", data_root=tmp_path)
    assert photos[0].path == tmp_path / "cbc" / "Training" / "Images" / "BloodImage_00001.jpg"
    assert (photos[0].image_id, photos[0].source, len(photos[0].annotation.boxes)) == ("BloodImage_00001", "cbc", 2)
    with pytest.raises(DataError, match="Validation/Annotations not found"):
        smear_images("cbc", data_root=tmp_path, subset="Validation")


def _yolo_dataset(root, lines, size=(200, 100)):
    """A TXL-like YOLO dataset with one image in train/ and its label file."""
    from PIL import Image

    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir(parents=True)
    (root / "classes.txt").write_text("WBC\nRBC\nPlatelet\n")
    Image.new("RGB", size, (230, 200, 210)).save(root / "train" / "images" / "f1.jpg")
    (root / "train" / "labels" / "f1.txt").write_text("\n".join(lines) + "\n")
    (root / "sources.csv").write_text("file,source,width,height\ntrain/images/f1.jpg,raabin,200,100\n")
    return root


def test_yolo_boxes_are_denormalised_clipped_and_named(tmp_path):
    root = _yolo_dataset(tmp_path / "txl", ["1 0.5 0.5 0.1 0.2", "0 0.99 0.5 0.1 0.2", "2 0.3 0.3 0 0.1", ""])
    assert read_classes(root / "classes.txt") == ["WBC", "RBC", "Platelets"]
    ann = parse_yolo(root / "train" / "labels" / "f1.txt", 200, 100, read_classes(root / "classes.txt"))
    assert [b.label for b in ann.boxes] == ["RBC", "WBC"] and ann.dropped == 1  # the zero-width platelet
    assert (ann.boxes[0].x1, ann.boxes[0].y1, ann.boxes[0].x2, ann.boxes[0].y2) == pytest.approx((90, 40, 110, 60))
    assert ann.boxes[1].x2 == 200  # cut by the border: clipped, still counted
    photos = smear_images("txl", data_root=tmp_path)
    assert [(p.image_id, p.source, p.subset, len(p.annotation.boxes)) for p in photos] == [("f1", "raabin", "train", 2)]
    annotation, source = labels_beside(root / "train" / "images" / "f1.jpg")
    assert source == "raabin" and len(annotation.boxes) == 2


@pytest.mark.parametrize("line, message", [
    ("1 0.5 0.5 0.1", "expected 'class cx cy w h'"),
    ("x 0.5 0.5 0.1 0.1", "an integer class and four numbers"),
    ("7 0.5 0.5 0.1 0.1", "class 7 is not in the class list"),
    ("1 nan 0.5 0.1 0.1", "finite"),
    ("1 0.5 0.5 -0.1 0.1", "not negative"),
])
def test_malformed_yolo_lines_name_the_file_and_line(tmp_path, line, message):
    root = _yolo_dataset(tmp_path / "txl", ["1 0.5 0.5 0.1 0.2", line])
    with pytest.raises(DataError, match=rf"f1.txt line 2: .*{message}"):
        parse_yolo(root / "train" / "labels" / "f1.txt", 200, 100, read_classes(root / "classes.txt"))


def test_yolo_labels_need_their_class_list(tmp_path):
    root = _yolo_dataset(tmp_path / "txl", ["1 0.5 0.5 0.1 0.2"])
    (root / "classes.txt").unlink()
    with pytest.raises(DataError, match="classes.txt"):
        labels_beside(root / "train" / "images" / "f1.jpg")
