"""The review of BCCD's white-cell labels: its reader, the committed review, and the benchmark's use of it."""

import importlib.util
from pathlib import Path

import pytest

from bloodcell.data.bccd import BCCD_TYPES, UNCLEAR, read_type_review
from bloodcell.errors import DataError
from bloodcell.workflows.cells import Cells

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "benchmarks" / "audits" / "bccd_wbc_types.csv"


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "review.csv"
    path.write_text(text)
    return path


def test_reads_confirmed_relabelled_and_unclear_cells(tmp_path):
    path = write(tmp_path, "image_id,label,reviewed_as\na,eosinophil,eosinophil\nb,eosinophil,neutrophil\n"
                           "c,monocyte,unclear\n")
    assert read_type_review(path) == {"a": ("eosinophil", "eosinophil"), "b": ("eosinophil", "neutrophil"),
                                      "c": ("monocyte", UNCLEAR)}


@pytest.mark.parametrize("text, message", [
    ("image_id,label\na,eosinophil\n", "expected the columns"),
    ("image_id,label,reviewed_as\na,eosinophil,granulocyte\n", "line 2: label and reviewed_as"),
    ("image_id,label,reviewed_as\na,unclear,neutrophil\n", "line 2: label and reviewed_as"),
    ("image_id,label,reviewed_as\na,eosinophil,eosinophil\na,eosinophil,unclear\n", "line 3: missing or repeated"),
    ("image_id,label,reviewed_as\n,eosinophil,eosinophil\n", "line 2: missing or repeated"),
])
def test_a_malformed_review_is_refused_in_one_sentence(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_type_review(write(tmp_path, text))


def test_a_missing_or_binary_review_is_refused(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_type_review(tmp_path / "none.csv")
    path = tmp_path / "binary.csv"
    path.write_bytes(b"\xff\xfe\x00\x81" * 20)
    with pytest.raises(DataError, match="not a readable CSV"):
        read_type_review(path)


def test_the_committed_review_covers_every_typed_cell_once():
    review = read_type_review(COMMITTED)
    assert len(review) == 283
    assert {label for label, _ in review.values()} <= set(BCCD_TYPES)
    confirmed = sum(label == seen for label, seen in review.values())
    assert 0 < confirmed < len(review)


def benchmark():
    spec = importlib.util.spec_from_file_location("bccd_other_lab", ROOT / "benchmarks" / "bccd_other_lab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_keeps_only_confirmed_cells(tmp_path):
    path = write(tmp_path, "image_id,label,reviewed_as\na,eosinophil,eosinophil\nb,eosinophil,neutrophil\n"
                           "c,monocyte,unclear\nd,monocyte,monocyte\n")
    cells = Cells(images=["A", "B", "C", "D"], labels=["eosinophil", "eosinophil", "monocyte", "monocyte"],
                  ids=["a", "b", "c", "d"])
    said = benchmark().confirmed_cells(cells, path)
    assert said == {"confirmed": 2, "looks like neutrophil": 1, UNCLEAR: 1}
    assert (cells.images, cells.labels, cells.ids) == (["A", "D"], ["eosinophil", "monocyte"], ["a", "d"])


def test_the_benchmark_refuses_a_review_of_other_labels(tmp_path):
    path = write(tmp_path, "image_id,label,reviewed_as\na,neutrophil,neutrophil\n")
    with pytest.raises(DataError, match="made on other labels"):
        benchmark().confirmed_cells(Cells(images=["A"], labels=["eosinophil"], ids=["a"]), path)
    with pytest.raises(DataError, match="made on other labels"):
        benchmark().confirmed_cells(Cells(images=["A"], labels=["eosinophil"], ids=["z"]), path)
