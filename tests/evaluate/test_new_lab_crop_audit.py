"""The review of the smear crops without a cell: its reader, the committed review, and the benchmarks' use of it."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from bloodcell.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
HEADER = "crop_id,reviewed_as,note\n"


def module(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "crops.csv"
    path.write_text(HEADER + text)
    return path


def test_reads_what_each_crop_shows(tmp_path):
    path = write(tmp_path, '"f1:1,2,30",platelet,unboxed\n"f2:0,0,40",red cells only,\n')
    assert module("new_lab_sets").read_crop_audit(path) == {"f1:1,2,30": "platelet", "f2:0,0,40": "red cells only"}


@pytest.mark.parametrize("text, message", [
    ('"f1:1,2,30",lymphocyte,\n', "line 2: reviewed_as 'lymphocyte' must be one of"),
    ('"f1:1,2,30",platelet,\n"f1:1,2,30",red cells only,\n', "line 3: missing or repeated crop_id"),
    (',platelet,\n', "line 2: missing or repeated crop_id"),
])
def test_a_malformed_review_is_refused_in_one_sentence(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        module("new_lab_sets").read_crop_audit(write(tmp_path, text))


def test_a_review_without_its_columns_is_refused(tmp_path):
    path = tmp_path / "crops.csv"
    path.write_text("crop_id,label\na,platelet\n")
    with pytest.raises(DataError, match="expected the columns"):
        module("new_lab_sets").read_crop_audit(path)


def test_crops_showing_a_cell_are_taken_out_whole():
    sets = module("new_lab_sets")
    data = {"ids": np.array(["a", "b", "c"]), "pixels": np.arange(3)[:, None],
            "features": np.arange(6).reshape(2, 3, 1), "logits": np.arange(6).reshape(2, 3, 1) * 10}
    kept, shown = sets.split_crop_audit(data, {"b": "platelet", "c": "stain precipitate"})
    assert kept["ids"].tolist() == ["a", "c"] and shown["ids"].tolist() == ["b"]
    assert kept["features"][:, :, 0].tolist() == [[0, 2], [3, 5]] and shown["logits"][:, :, 0].tolist() == [[10], [40]]
    assert kept["pixels"][:, 0].tolist() == [0, 2]


def test_cell_presence_reports_audited_crops_apart():
    benchmark = module("cell_presence")
    crops = {"ids": np.array(["a", "b"]), "pixels": np.zeros((2, 1)), "features": np.zeros((8, 2, 1)),
             "logits": np.zeros((8, 2, 1))}
    out = benchmark.apart({"pbc": {"ids": np.array(["b"])}, "smear_crop_without_cell_train": crops}, {"b": "platelet"})
    assert out["pbc"]["ids"].tolist() == ["b"]  # only crop sets are audited
    assert out["smear_crop_without_cell_train"]["ids"].tolist() == ["a"]
    assert out["smear_crop_showing_a_cell_train"]["ids"].tolist() == ["b"]


@pytest.mark.parametrize("name", ["new_lab", "cell_presence"])
def test_the_benchmarks_exit_with_one_sentence_on_a_bad_review(tmp_path, capsys, name):
    path = write(tmp_path, '"f1:1,2,30",nucleus,\n')
    assert module(name).main(["--crop-audit", str(path), "--out", str(tmp_path / "out.json")]) == 1
    assert "reviewed_as 'nucleus' must be one of" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_the_committed_review_names_crops_of_txl_fields_and_says_what_the_readme_says(real_data_root):
    from bloodcell.data.smears import smear_images

    sets = module("new_lab_sets")
    review = sets.read_crop_audit()
    assert Counter(review.values()) == {"platelet": 2, "red cells only": 3, "stain precipitate": 1}
    fields = {f.image_id: f for subset in ("train", "val") for f in smear_images("txl", real_data_root, subset=subset)}
    for crop in review:
        field, corner = crop.split(":")
        x, y, side = map(int, corner.split(","))
        boxes = fields[field].annotation.boxes  # a crop of a TXL-PBC field overlapping no white-cell or platelet box
        assert all(b.x2 <= x or b.x1 >= x + side or b.y2 <= y or b.y1 >= y + side for b in boxes if b.label != "RBC")
