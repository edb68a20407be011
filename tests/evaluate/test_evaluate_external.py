"""External ``folder`` datasets: label maps, unknown classes reported apart, corrupt images skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest
from evaluate_fixtures import COLOURS, trained_tiny_checkpoint, write_image

from bloodcell.data.registry import PBC_CLASSES
from bloodcell.errors import ConfigError
from bloodcell.evaluation.label_map import read_label_map, resolve_label_map
from bloodcell.workflows.evaluate import evaluate, write_report

MAP = {"NEUTROPHIL": "neutrophil", "LYMPHOCYTE": "lymphocyte", "MONOCYTE": "monocyte", "EOSINOPHIL": "eosinophil",
       "BAND": None}


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    root = tmp_path_factory.mktemp("wbc")
    rng = np.random.default_rng(5)
    for ext_name, pbc_name in [("NEUTROPHIL", "neutrophil"), ("LYMPHOCYTE", "lymphocyte"),
                               ("MONOCYTE", "monocyte"), ("EOSINOPHIL", "eosinophil")]:
        for i in range(5):
            write_image(root / "images" / ext_name / f"{i}.png", COLOURS[PBC_CLASSES.index(pbc_name)], rng)
    for i in range(3):  # a class the model does not know, looking like platelets
        write_image(root / "images" / "BAND" / f"{i}.png", COLOURS[PBC_CLASSES.index("platelet")], rng)
    (root / "images" / "MONOCYTE" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    checkpoint = trained_tiny_checkpoint(root / "model.safetensors")
    return root, checkpoint


def test_mapped_classes_scored_unknown_reported_apart(external, tmp_path):
    root, checkpoint = external
    (tmp_path / "map.json").write_text(json.dumps(MAP))
    ev = evaluate(checkpoint, dataset="folder", data_root=root / "images", label_map=tmp_path / "map.json", n_boot=50)
    result = ev.result
    assert result["label"] == "TEST RESULT (external dataset)"
    assert result["counts"] == {"images": 24, "scored": 20, "skipped": 1, "unmapped": 3}
    assert result["unmapped"] == {"BAND": {"count": 3, "predicted": {"platelet": 3}}}
    assert result["skipped"][0]["path"] == "MONOCYTE/broken.jpg"
    per_class = {row["name"]: row for row in result["metrics"]["per_class"]}
    assert [n for n, r in per_class.items() if r["support"]] == ["eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    assert per_class["platelet"]["support"] == 0 and per_class["platelet"]["recall"] is None
    assert result["metrics"]["accuracy"] == pytest.approx(1.0)
    assert any("unknown to the model" in n and "BAND" in n for n in result["notes"])
    assert any("count as errors" in n for n in result["notes"])
    md = write_report(ev, tmp_path / "out")["markdown"].read_text()
    assert "Classes the model does not know" in md and "| BAND | 3 | platelet: 3 |" in md
    assert "MONOCYTE/broken.jpg" in md


def test_predictions_into_absent_classes_are_errors(external, tmp_path):
    root, checkpoint = external
    # BAND mapped onto neutrophil: the model calls these platelet, a class absent from the set -> errors
    (tmp_path / "map.csv").write_text("source,target\n" + "\n".join(
        f"{k},{v or 'neutrophil'}" for k, v in MAP.items()) + "\n")
    ev = evaluate(checkpoint, dataset="folder", data_root=root / "images", label_map=tmp_path / "map.csv", n_boot=20)
    m = ev.result["metrics"]
    assert ev.result["counts"]["unmapped"] == 0
    assert m["accuracy"] == pytest.approx(20 / 23)
    platelet = next(r for r in m["per_class"] if r["name"] == "platelet")
    assert platelet["predicted"] == 3 and platelet["support"] == 0
    neutrophil = next(r for r in m["per_class"] if r["name"] == "neutrophil")
    assert neutrophil["recall"] == pytest.approx(5 / 8)


def test_without_map_names_match_ignoring_case(external):
    root, checkpoint = external
    ev = evaluate(checkpoint, dataset="folder", data_root=root / "images", n_boot=20)
    assert ev.result["class_mapping"]["NEUTROPHIL"] == "neutrophil"
    assert ev.result["class_mapping"]["BAND"] is None


def test_folder_dataset_has_no_validation_split(external):
    root, checkpoint = external
    with pytest.raises(ConfigError, match="no splits"):
        evaluate(checkpoint, dataset="folder", data_root=root / "images", split="val", allow_non_test=True)


def test_label_map_files_and_errors(tmp_path):
    (tmp_path / "m.csv").write_text("source,target\nNEUTROPHIL,neutrophil\nBAND,\n")
    assert read_label_map(tmp_path / "m.csv") == {"NEUTROPHIL": "neutrophil", "BAND": None}
    (tmp_path / "bad.csv").write_text("NEUTROPHIL,neutrophil\n")
    with pytest.raises(ConfigError, match="header"):
        read_label_map(tmp_path / "bad.csv")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="object"):
        read_label_map(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not have"):
        resolve_label_map(["A"], ["neutrophil"], {"A": "neutrophill"})
    with pytest.raises(ConfigError, match="none of the dataset classes"):
        resolve_label_map(["A", "B"], ["neutrophil"], None)
