"""BloodMNIST .npz loading and VOC XML parsing (quirks and malformed files)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bloodcell.data.bloodmnist import BloodMNISTDataset, load_bloodmnist, npz_filename
from bloodcell.data.locate import dataset_root
from bloodcell.data.smears import labels_beside, smear_images
from bloodcell.data.voc import parse_voc
from bloodcell.data.yolo import parse_yolo, read_classes
from bloodcell.errors import ConfigError, DataError


def _write_npz(path, size=28, n=(5, 2, 3)):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 8, (count, 1))
    np.savez(path, **arrays)
    return arrays


def test_bloodmnist_loads_each_size_and_split(tmp_path):
    folder = tmp_path / "bloodmnist"
    folder.mkdir()
    arrays = _write_npz(folder / "bloodmnist.npz")
    _write_npz(folder / "bloodmnist_64.npz", size=64)
    assert dataset_root("bloodmnist", tmp_path) == folder
    ds = BloodMNISTDataset("val", size=28, data_root=tmp_path)
    assert len(ds) == 2 and ds.class_names[3] == "ig"
    image, label = ds[1]
    assert image.dtype == torch.uint8 and image.shape == (3, 28, 28)
    assert label == int(arrays["val_labels"][1, 0])
    assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(arrays["val_images"][1]))
    assert BloodMNISTDataset("test", size=64, root=folder)[0][0].shape == (3, 64, 64)
    with pytest.raises(DataError, match="not found"):
        BloodMNISTDataset("train", size=128, root=folder)
    with pytest.raises(ConfigError, match="size"):
        npz_filename(100)


def test_bloodmnist_bad_files(tmp_path):
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((2, 28, 28, 3), np.uint8))
    with pytest.raises(DataError, match="lacks train_labels"):
        load_bloodmnist(tmp_path / "bad.npz", "train")
    np.savez(tmp_path / "labels.npz", train_images=np.zeros((2, 28, 28, 3), np.uint8), train_labels=np.array([[0], [9]]))
    with pytest.raises(DataError, match="labels outside"):
        load_bloodmnist(tmp_path / "labels.npz", "train")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable"):
        load_bloodmnist(tmp_path / "junk.npz", "train")


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
