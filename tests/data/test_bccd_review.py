"""The review of BCCD's white-cell labels: its reader, the committed review, and the benchmark's use of it."""

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from bloodcell.data.bccd import UNCLEAR, read_type_review
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
    ("image_id,label,reviewed_as\na,eosinophil,granulocyte\n", "reviewed_as 'granulocyte' must be"),
    ("image_id,label,reviewed_as\na,unclear,neutrophil\n", "line 2: label .* must be BCCD types"),
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
    with pytest.raises(DataError, match=r"cannot read the label review file \(it is not UTF-8 text\)"):
        read_type_review(path)


def test_the_committed_review_says_what_its_readme_table_says():
    said = Counter((label, "confirmed" if seen == label else seen) for label, seen in read_type_review(COMMITTED).values())
    assert said == {("neutrophil", "confirmed"): 140, ("neutrophil", UNCLEAR): 15,
                    ("eosinophil", "confirmed"): 31, ("eosinophil", "neutrophil"): 10, ("eosinophil", UNCLEAR): 34,
                    ("lymphocyte", "confirmed"): 30, ("lymphocyte", UNCLEAR): 1,
                    ("monocyte", "confirmed"): 15, ("monocyte", "neutrophil"): 1, ("monocyte", UNCLEAR): 4,
                    ("basophil", "confirmed"): 1, ("basophil", UNCLEAR): 1}


def test_the_committed_review_covers_each_typed_bccd_cell_as_labelled(real_data_root):
    from bloodcell.data.bccd import typed_smears

    review = read_type_review(COMMITTED)
    assert {s.image_id: s.wbc_type for s in typed_smears(real_data_root)[0]} == {k: v[0] for k, v in review.items()}


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
    kept, said = benchmark().confirmed_cells(cells, path)
    assert said == {"confirmed": 2, "looks like neutrophil": 1, UNCLEAR: 1}
    assert (kept.images, kept.labels, kept.ids) == (["A", "D"], ["eosinophil", "monocyte"], ["a", "d"])
    assert cells.ids == ["a", "b", "c", "d"]
    with pytest.raises(DataError, match="confirms none"):
        benchmark().confirmed_cells(Cells(images=["B"], labels=["eosinophil"], ids=["b"]), path)


def test_the_benchmark_refuses_a_review_of_other_labels(tmp_path):
    path = write(tmp_path, "image_id,label,reviewed_as\na,neutrophil,neutrophil\n")
    with pytest.raises(DataError, match="made on other labels"):
        benchmark().confirmed_cells(Cells(images=["A"], labels=["eosinophil"], ids=["a"]), path)
    with pytest.raises(DataError, match="made on other labels"):
        benchmark().confirmed_cells(Cells(images=["A"], labels=["eosinophil"], ids=["z"]), path)


def test_adaptation_sizes_refuse_what_cannot_be_drawn():
    labels = ["neutrophil"] * 12 + ["eosinophil"] * 8 + ["monocyte"] * 3
    assert benchmark().adaptation_sizes("5,7", labels) == [5, 7]
    for text, message in (("5,x", "whole numbers"), ("8", "more than 8 cells"), ("0", "from 0 cells")):
        with pytest.raises(DataError, match=message):
            benchmark().adaptation_sizes(text, labels)


def test_adapting_reports_the_adapted_types_and_what_each_type_is_called():
    class Stub:
        class_names = ("eosinophil", "lymphocyte", "monocyte")
        model = torch.nn.Linear(3, 3)

    with torch.no_grad():  # a model that knows each type (a random one would make the kept monocyte row a lottery)
        Stub.model.weight.copy_(torch.eye(3))
        Stub.model.bias.zero_()

    rng = np.random.default_rng(0)
    truth = np.array([0] * 12 + [1] * 12 + [2] * 4)
    features = np.eye(3)[truth][None].repeat(8, 0) * 4 + rng.normal(scale=0.3, size=(8, len(truth), 3))
    result = benchmark().adapted(Stub(), features, truth, [5], draws=2)["5_per_class"]
    assert result["types"] == ["eosinophil", "lymphocyte"]  # 4 monocytes are too few to adapt from
    assert sum(result["predicted_as"]["monocyte"].values()) == 2 * 4
    assert sum(result["predicted_as"]["eosinophil"].values()) == 2 * 7
    assert result["mean_on_adapted_types"] == 1.0
    assert all(r["n_adapted_types"] == 14 and r["n_rest"] == 18 for r in result["draws"])


def test_the_benchmark_exits_with_one_sentence_on_a_bad_review(real_data_root, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "tests" / "evaluate"))
    from evaluate_fixtures import trained_tiny_checkpoint

    checkpoint = trained_tiny_checkpoint(tmp_path / "tiny.safetensors")
    review = write(tmp_path, "image_id,label,reviewed_as\nBloodImage_00000,eosinophil,eosinophil\n")
    code = benchmark().main(["--model", str(checkpoint), "--data-root", str(real_data_root), "--review", str(review),
                             "--out", str(tmp_path / "out.json")])
    assert code == 1 and "made on other labels" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()
