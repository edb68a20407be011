"""Smear counting: synthetic smears, schema, bad files, differential, AP, service adapter, real data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bloodcell.smear import annotate, count_smears
from bloodcell.smear.classical import detect_cells, count_detections
from bloodcell.smear.differential import differential, render_report
from bloodcell.smear.evaluation import average_precision, evaluate_counts, iou, match
from bloodcell.smear.io import write_outputs

BG, PINK, PURPLE = (200, 202, 205), (205, 150, 140), (110, 70, 190)
PBC8 = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


def _smear(rbc: int = 12, wbc: int = 1, platelets: int = 3) -> Image.Image:
    image = Image.new("RGB", (640, 480), BG)
    draw = ImageDraw.Draw(image)
    centres = [(60 + 110 * (i % 5), 60 + 110 * (i // 5)) for i in range(rbc)]
    for x, y in centres:
        draw.ellipse([x - 38, y - 38, x + 38, y + 38], fill=PINK)
    for k in range(wbc):
        x, y = 560, 400 - 200 * k
        draw.ellipse([x - 55, y - 55, x + 55, y + 55], fill=(210, 180, 210))
        draw.ellipse([x - 30, y - 30, x + 30, y + 30], fill=PURPLE)
    for k in range(platelets):
        x, y = 40 + 90 * k, 450
        draw.ellipse([x - 7, y - 7, x + 7, y + 7], fill=PURPLE)
    return image


def test_synthetic_cells_are_counted():
    counts = count_detections(detect_cells(_smear()))
    assert counts["WBC"] == 1
    assert counts["Platelets"] == 3
    assert abs(counts["RBC"] - 12) <= 1


@pytest.mark.parametrize("detector", ["classical", "centernet"])
def test_blank_smear_counts_zero(detector):
    doc = count_smears([Image.new("RGB", (640, 480), BG)], detector=detector)
    assert doc["images"][0]["counts"] == {"RBC": 0, "WBC": 0, "Platelets": 0}
    assert doc["images"][0]["boxes"] == []


def test_schema_bad_files_and_outputs(tmp_path):
    good = tmp_path / "good.png"
    _smear().save(good)
    (tmp_path / "notes.jpg").write_text("not an image")
    truncated = tmp_path / "trunc.jpg"
    _smear().save(tmp_path / "full.jpg")
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:2000])
    doc = count_smears([str(good), str(tmp_path / "notes.jpg"), str(truncated)], detector="classical")
    assert [e["path"] for e in doc["images"]] == [str(good)]
    assert {e["path"] for e in doc["errors"]} == {str(tmp_path / "notes.jpg"), str(truncated)}
    counts_path = write_outputs(doc, tmp_path / "out")
    saved = json.loads(counts_path.read_text())
    entry = saved["images"][0]
    assert set(entry) >= {"path", "counts", "wbc_types", "boxes"} and "annotated" not in entry
    assert all(isinstance(v, int) for v in entry["counts"].values())
    box = entry["boxes"][0]
    assert set(box) >= {"label", "score", "x1", "y1", "x2", "y2"} and isinstance(box["x1"], float)
    assert saved["sample"]["counts"]["WBC"] == entry["counts"]["WBC"] == 1
    png = tmp_path / "out" / entry["annotated_png"]
    assert Image.open(png).size == (640, 480)
    assert (tmp_path / "out" / "report.md").read_text().count("Skipped files") == 1


def test_rbc_only_smear_has_no_wbc_and_warns():
    doc = count_smears([_smear(rbc=10, wbc=0, platelets=0)], detector="classical")
    assert doc["sample"]["counts"]["WBC"] == 0
    report = render_report(doc)
    assert "White-cell types unavailable" in report
    assert "only 0 white cells classified" in report


def test_differential_flags_hand_made_case():
    diff = differential({"neutrophil": 40, "lymphocyte": 30, "monocyte": 12, "eosinophil": 3, "basophil": 0, "ig": 15})
    assert diff["percent"]["neutrophil"] == pytest.approx(40.0)
    assert diff["flags"] == {"neutrophil": "low", "monocyte": "high"}
    assert diff["notable"] == {"ig": 15}
    assert diff["warnings"] == []
    assert differential({"neutrophil": 5})["flags"]["neutrophil"] == "high"


def test_differential_keeps_non_white_calls_out_of_percentages():
    diff = differential({"neutrophil": 60, "lymphocyte": 30, "monocyte": 5, "eosinophil": 4, "basophil": 1,
                         "platelet": 7, "erythroblast": 3})
    assert diff["classified"] == 100
    assert diff["percent"]["neutrophil"] == pytest.approx(60.0)
    assert "platelet" not in diff["percent"] and diff["flags"] == {}
    assert diff["not_white_cells"] == {"platelet": 7, "erythroblast": 3}
    assert diff["notable"] == {"erythroblast": 3}
    assert diff["warnings"] == []


def test_average_precision_hand_computed():
    # 3 truths; ranked hits T F T F -> precision envelope 1, 2/3; recall steps 1/3, 2/3.
    ap = average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, False, True, False]), 3)
    assert ap == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    scores, hits, n = match([[(0.9, (0, 0, 10, 10)), (0.8, (0, 0, 10, 10))]], [[(0, 0, 10, 10)]])
    assert hits.tolist() == [True, False] and n == 1
    entries = [{"counts": {"RBC": 2, "WBC": 1, "Platelets": 0},
                "boxes": [{"label": "WBC", "score": 0.9, "x1": 0, "y1": 0, "x2": 10, "y2": 10}]}]
    result = evaluate_counts(entries, [[("WBC", 0, 0, 10, 10), ("RBC", 0, 0, 5, 5)]])
    assert result["WBC"]["ap50"] == pytest.approx(1.0)
    assert result["RBC"]["count_accuracy"] == pytest.approx(0.0)
    assert math.isnan(average_precision(np.array([]), np.array([], bool), 0))
    assert result["Platelets"]["ap50"] is None and result["Platelets"]["count_accuracy"] is None
    assert json.loads(json.dumps(result, allow_nan=False))["Platelets"]["exact_fraction"] == 1.0


def test_annotate_draws_boxes():
    image = Image.new("RGB", (100, 100), (255, 255, 255))
    out = annotate(image, [{"label": "WBC", "x1": 10, "y1": 10, "x2": 50, "y2": 50}])
    assert out.getpixel((10, 30)) != (255, 255, 255) and image.getpixel((10, 30)) == (255, 255, 255)


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    import torch

    from bloodcell.checkpoint import CheckpointMeta, save_checkpoint
    from bloodcell.inference.predictor import load
    from bloodcell.models import create_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = create_model("resnet18", num_classes=8, class_names=PBC8, input_size=32)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model, CheckpointMeta(model_name="resnet18", data_config=model.data_config))
    return load(path, num_threads=1)


def test_service_adapter_with_classifier(tiny_classifier):
    from bloodcell.service.app import _default_smear_counter

    counter = _default_smear_counter(tiny_classifier, detector="classical")
    doc = counter([_smear(), _smear(wbc=2)], ["a.png", "b.png"])
    assert [e["path"] for e in doc["images"]] == ["a.png", "b.png"]
    assert isinstance(doc["images"][0]["annotated"], Image.Image)
    wbc = [b for b in doc["images"][1]["boxes"] if b["label"] == "WBC"]
    assert len(wbc) == 2 and all(b["wbc_type"] in PBC8 and 0 < b["confidence"] <= 1 for b in wbc)
    assert sum(doc["sample"]["wbc_types"].values()) == doc["sample"]["counts"]["WBC"] == 3


def _typing_case(tiny_classifier):
    """(crops, truth, fitted head pipeline) of two colour-coded synthetic "types", checked on the way."""
    from bloodcell.smear.wbc_typing import evaluate_typing, held_out_split

    rng = np.random.default_rng(0)
    # two visibly different "types" (pink vs blue crops with noise): a head on any features separates them
    base = {"neutrophil": (230, 120, 160), "eosinophil": (60, 80, 220)}
    truth = ["neutrophil"] * 10 + ["eosinophil"] * 10
    crops = [Image.fromarray(np.clip(np.array(base[t]) + rng.normal(0, 12, (40, 40, 3)), 0, 255).astype(np.uint8))
             for t in truth]
    held = held_out_split(truth)
    assert held.sum() == 6 and sorted(np.array(truth)[held]) == ["eosinophil"] * 3 + ["neutrophil"] * 3
    result, head = evaluate_typing(tiny_classifier, crops, truth)
    assert result["held_out"] == 6 and result["train"] == 14
    assert result["adapted_accuracy_held_out"] == 1.0
    return crops, truth, head


def test_bccd_typing_with_tiny_checkpoint(tiny_classifier):
    _typing_case(tiny_classifier)


def test_typing_head_round_trip_and_adapted_classifier(tiny_classifier, tmp_path):
    from bloodcell.checkpoint import file_sha256
    from bloodcell.errors import CheckpointError
    from bloodcell.smear.typing_head import TypingHead, adapt, dihedral_features

    crops, truth, pipeline = _typing_case(tiny_classifier)
    sha = file_sha256(tiny_classifier.source)
    head = TypingHead.from_pipeline(pipeline, sha, {"name": "test", "held_out_accuracy": 1.0})
    features = dihedral_features(tiny_classifier, crops)
    np.testing.assert_allclose(np.exp(head.logits(features)) / np.exp(head.logits(features)).sum(1, keepdims=True),
                               pipeline.predict_proba(features), atol=1e-6)
    path = head.save(tmp_path / "head.safetensors")
    loaded = TypingHead.load(path)
    assert loaded.class_names == ["eosinophil", "neutrophil"] and loaded.meta["held_out_accuracy"] == 1.0
    adapted = adapt(tiny_classifier, path)
    preds = adapted.predict(crops + [b"not an image"], top_k=2, refer_below=0.999)
    assert [p.label for p in preds[:-1]] == truth and all(p.referred for p in preds[:-1])
    assert preds[-1].error and preds[-1].label is None
    doc = count_smears([_smear()], classifier=adapted, detector="classical")
    assert set(doc["sample"]["wbc_types"]) <= {"eosinophil", "neutrophil"} and doc["sample"]["wbc_classified"] == 1
    assert doc["sample"]["wbc_typing"]["held_out_accuracy"] == 1.0
    assert "`test` typing head" in render_report(doc) and "100% of" in render_report(doc)
    assert "about 40%" in render_report(count_smears([_smear()], classifier=tiny_classifier, detector="classical"))
    # a head fitted on another checkpoint is refused
    TypingHead(head.class_names, head.weight, head.bias, "0" * 64).save(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="fitted on the features"):
        adapt(tiny_classifier, tmp_path / "other.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable typing head"):
        TypingHead.load(tmp_path / "bad.safetensors")


def test_real_cbc_smoke(real_data_root):
    from bloodcell.data.voc import parse_voc

    folder = real_data_root / "cbc" / "Training"
    images = sorted((folder / "Images").glob("*.jpg"))[:3]
    doc = count_smears([str(p) for p in images])
    assert len(doc["images"]) == 3 and not doc["errors"]
    for path, entry in zip(images, doc["images"]):
        truth = [b for b in parse_voc(folder / "Annotations" / f"{path.stem}.xml").boxes if b.label == "WBC"]
        assert abs(entry["counts"]["WBC"] - len(truth)) <= 1
        assert entry["counts"]["RBC"] > 0


def test_count_cli_refuses_a_file_as_output_and_fails_when_nothing_was_counted(tmp_path):
    from typer.testing import CliRunner

    from bloodcell.cli.main import _register, app
    from bloodcell.errors import ConfigError

    if not any(getattr(c, "name", None) == "count" for c in app.registered_commands):
        _register()
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    refused = CliRunner().invoke(app, ["count", str(bad), "-o", str(tmp_path / "c.json"), "--classifier", "none.safetensors"])
    assert isinstance(refused.exception, ConfigError) and "--output is a folder" in str(refused.exception)
    assert not (tmp_path / "c.json").exists()
    failed = CliRunner().invoke(app, ["count", str(bad), "-o", str(tmp_path / "out"), "--classifier", "none.safetensors"])
    assert failed.exit_code == 1 and "0 images counted (1 skipped)" in failed.output
    assert "not an image file" in (tmp_path / "out" / "report.md").read_text()


def test_real_bccd_crops_keep_the_held_out_smears_out_of_train(real_data_root, tmp_path):
    from bloodcell.data.manifest import read_manifest
    from bloodcell.smear.wbc_typing import bccd_smears, export_wbc_crops, held_out_split

    manifest = read_manifest(export_wbc_crops(tmp_path / "crops", real_data_root))
    smears = bccd_smears(real_data_root)
    held = {s[0] for s, h in zip(smears, held_out_split([s[1] for s in smears])) if h}
    assert manifest.dataset == "folder" and len(manifest.rows) == sum(len(s[3]) for s in smears)
    assert {r.group for r in manifest.rows if r.split == "test"} == held
    assert not held & {r.group for r in manifest.rows if r.split == "train"}
    assert {r.label for r in manifest.rows} <= set(PBC8) and all((tmp_path / "crops" / r.path).is_file() for r in manifest.rows)


def test_typing_benchmark_records_accuracy_and_saves_a_head_tied_to_the_rewritten_checkpoint(tiny_classifier, tmp_path):
    import shutil

    from bloodcell.checkpoint import file_sha256, read_checkpoint_meta
    from bloodcell.inference.predictor import load
    from bloodcell.smear.typing_head import adapt, typing_summary
    from bloodcell.smear.wbc_typing import main

    bccd = tmp_path / "bccd"
    (bccd / "Annotations").mkdir(parents=True)
    (bccd / "JPEGImages").mkdir()
    rows = ["image_id,wbc_type"]
    for i, (name, colour) in enumerate([("neutrophil", (230, 120, 160)), ("eosinophil", (60, 80, 220))] * 3):
        Image.new("RGB", (64, 48), colour).save(bccd / "JPEGImages" / f"B{i}.jpg")
        (bccd / "Annotations" / f"B{i}.xml").write_text(
            f"<annotation><filename>B{i}.jpg</filename><size><width>64</width><height>48</height></size><object>"
            "<name>WBC</name><bndbox><xmin>20</xmin><ymin>10</ymin><xmax>40</xmax><ymax>30</ymax></bndbox></object></annotation>")
        rows.append(f"B{i},{name}")
    (bccd / "wbc_labels.csv").write_text("\n".join(rows) + "\n")
    checkpoint = tmp_path / "model.safetensors"
    shutil.copy(tiny_classifier.source, checkpoint)
    result = main([str(checkpoint), "--data-root", str(tmp_path), "--record", "--save-head", str(tmp_path / "h.safetensors")])
    recorded = read_checkpoint_meta(checkpoint)["smear_typing"]
    assert recorded["held_out_smears"] == result["held_out"] == 2 and recorded["held_out_accuracy"] == result["direct_accuracy_held_out"]
    assert result["checkpoint_sha256"] == file_sha256(checkpoint) != file_sha256(tiny_classifier.source)
    classifier = load(checkpoint, num_threads=1)
    adapt(classifier, tmp_path / "h.safetensors")  # the head matches the rewritten checkpoint
    summary = typing_summary(classifier)
    assert summary["held_out_smears"] == 2 and summary["head"] is None
    assert "of 2 held-out smears" in render_report(count_smears([_smear()], classifier=classifier, detector="classical"))


def test_counting_skips_the_single_cell_guard_for_detected_white_cells(tiny_classifier):
    import copy

    from bloodcell.inference.ood import fit_guard

    rng = np.random.default_rng(0)
    cells = [Image.fromarray(np.clip(rng.normal(128, 40, (40, 40, 3)), 0, 255).astype(np.uint8)) for _ in range(20)]
    guarded = copy.copy(tiny_classifier)
    guarded.guard = fit_guard(tiny_classifier.pixels(cells), tiny_classifier.features(cells), pass_rate=0.9)
    from bloodcell.smear import crop_cell

    smear = _smear()
    doc = count_smears([smear], classifier=guarded, detector="classical")
    box = next(b for b in doc["images"][0]["boxes"] if b["label"] == "WBC")
    alone = guarded.predict(crop_cell(smear, (box["x1"], box["y1"], box["x2"], box["y2"])))
    assert alone.reason.startswith("not a single blood cell")  # unlike the noisy "cells" the guard saw
    referred = doc["images"][0]["referred"]  # the untrained tiny model is unsure: low confidence is still referred
    assert doc["sample"]["wbc_classified"] == 1 and all(r["reason"].startswith("low confidence") for r in referred)
