"""Smear counting: synthetic smears, schema, bad files, differential, AP, service adapter, real data."""

from __future__ import annotations

import json
import math
from functools import partial

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bloodcell.data.boxes import SMEAR_LABELS
from bloodcell.framing import crop_around
from bloodcell.metrics.detection import (
    average_precision,
    coco_ap50,
    evaluate_counts,
    iou,
    match,
)
from bloodcell.smear.classical import count_detections, detect_cells
from bloodcell.smear.sample_counter import SmearCounter
from bloodcell.smear.counting import NO_CLASSIFIER, annotate, count_image, count_photos
from bloodcell.smear.differential import differential, render_report
from bloodcell.smear.review import sample_report
from bloodcell.smear.schema import SampleResult
from bloodcell.smear.typing import typing_summary
from bloodcell.workflows.count import Sample, count_sample

BG, PINK, PURPLE = (200, 202, 205), (205, 150, 140), (110, 70, 190)
PBC8 = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


def _count(images, classifier=None, names=None, **options) -> SampleResult:
    """The photos through the one counting loop, each counted by ``count_image(classifier, **options)``."""
    return count_photos(images, partial(count_image, classifier=classifier, **options), names=names,
                        typing=typing_summary(classifier) if classifier is not None else None,
                        typing_unavailable=NO_CLASSIFIER)


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


@pytest.mark.parametrize("detector", ["classical", "learned"])
def test_blank_smear_counts_zero(detector):
    doc = _count([Image.new("RGB", (640, 480), BG)], detector=detector).document()
    assert doc["images"][0]["counts"] == {"RBC": 0, "WBC": 0, "Platelets": 0}
    assert doc["images"][0]["boxes"] == []


def test_schema_bad_files_and_outputs(tmp_path):
    good = tmp_path / "good.png"
    _smear().save(good)
    (tmp_path / "notes.jpg").write_text("not an image")
    truncated = tmp_path / "trunc.jpg"
    _smear().save(tmp_path / "full.jpg")
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:2000])
    doc = _count([str(good), str(tmp_path / "notes.jpg"), str(truncated)], detector="classical").document()
    assert [e["path"] for e in doc["images"]] == [str(good)]
    assert {e["path"] for e in doc["errors"]} == {str(tmp_path / "notes.jpg"), str(truncated)}
    count_sample(Sample("sample", [good, tmp_path / "notes.jpg", truncated]), tmp_path / "out", None,
                 detector="classical", refer_below=0.6, cell_size_px=None, typing_unavailable=None)
    saved = json.loads((tmp_path / "out" / "counts.json").read_text())
    assert {e["path"] for e in saved["errors"]} == {str(tmp_path / "notes.jpg"), str(truncated)}
    entry = saved["images"][0]
    assert set(entry) >= {"path", "counts", "wbc_types", "boxes"} and "annotated" not in entry
    assert all(isinstance(v, int) for v in entry["counts"].values())
    box = entry["boxes"][0]
    assert set(box) >= {"label", "score", "x1", "y1", "x2", "y2"} and isinstance(box["x1"], float)
    assert saved["sample"]["counts"]["WBC"] == entry["counts"]["WBC"] == 1
    png = tmp_path / "out" / entry["annotated_png"]
    assert Image.open(png).size == (640, 480)
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.count("Skipped files") == 1
    assert "cells cut by the photo's border included" in report


def test_counts_json_keeps_its_keys_in_order_and_reads_back_as_the_same_sample(tmp_path):
    good = tmp_path / "good.png"
    _smear().save(good)
    result = count_sample(Sample("S-1", [good]), tmp_path / "out", None, detector="classical", refer_below=0.6,
                          cell_size_px=None, typing_unavailable="no model")
    saved = json.loads((tmp_path / "out" / "counts.json").read_text())
    assert list(saved) == ["sample_id", "images", "sample", "errors", "border_cells"]
    assert list(saved["images"][0]) == ["path", "sha256", "counts", "wbc_types", "boxes", "referred", "cell_size",
                                        "annotated_png"]
    assert list(saved["sample"]) == ["images", "counts", "wbc_types", "wbc_classified", "wbc_referred",
                                     "wbc_typing_unavailable"]
    assert result.document() == saved == SampleResult.model_validate(saved).document()


def test_unnamed_photos_are_numbered_from_one_by_every_counter():
    photos = [_smear(), _smear(wbc=2)]
    assert [p.path for p in _count(photos, detector="classical").images] == ["image-1", "image-2"]
    counted = SmearCounter(detector="classical").count(photos)
    assert [e["path"] for e in counted.doc["images"]] == ["image-1", "image-2"]


def test_a_doubtful_white_cell_is_one_referred_cell_everywhere():
    """Issue 25: the sample's wbc_referred and the report's referred are one count (classifier or detector doubt)."""
    box = {"label": "WBC", "score": 0.3, "x1": 1.0, "y1": 1.0, "x2": 9.0, "y2": 9.0, "wbc_type": "neutrophil",
           "confidence": 0.99}
    result = count_photos([_smear()], lambda image: {"counts": {"WBC": 1}, "wbc_types": {"neutrophil": 1},
                                                     "boxes": [box]})
    assert result.sample.wbc_referred == sample_report(result.document(), "S")["referred"] == 1
    assert "| neutrophil | the detector is not sure this is a white cell (score 0.30) |" in render_report(result.document())


def test_rbc_only_smear_has_no_wbc_and_warns():
    doc = _count([_smear(rbc=10, wbc=0, platelets=0)], detector="classical").document()
    assert doc["sample"]["counts"]["WBC"] == 0
    report = render_report(doc)
    assert "White-cell types unavailable" in report
    assert "only 0 white cells classified" in report


def test_differential_flags_hand_made_case():
    diff = differential({"neutrophil": 40, "lymphocyte": 30, "monocyte": 12, "eosinophil": 3, "basophil": 0, "ig": 15})
    assert diff["percent"]["neutrophil"] == pytest.approx(40.0)
    # outside the intervals, but 100 cells cannot show it (40 of 100: 95% interval 30.3-50.3 %, reaching 50 %)
    assert diff["flags"] == {} and {k: v["direction"] for k, v in diff["unsupported"].items()} == {
        "neutrophil": "low", "monocyte": "high"}
    assert diff["notable"] == {"ig": 15}
    assert diff["warnings"] == []
    large = differential({"neutrophil": 400, "lymphocyte": 300, "monocyte": 160, "eosinophil": 30, "ig": 150})
    assert large["flags"] == {"neutrophil": "low", "monocyte": "high"}  # 400 of 1040, 160 of 1040
    assert differential({"neutrophil": 5})["flags"] == {} and differential({"neutrophil": 20})["flags"] == {
        "neutrophil": "high", "lymphocyte": "low"}


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
    result = evaluate_counts(entries, [[("WBC", 0, 0, 10, 10), ("RBC", 0, 0, 5, 5)]], SMEAR_LABELS)
    assert result["WBC"]["ap50_voc"] == pytest.approx(1.0)
    assert result["RBC"]["count_accuracy"] == pytest.approx(0.0)
    assert math.isnan(average_precision(np.array([]), np.array([], bool), 0))
    assert result["Platelets"]["ap50_voc"] is None and result["Platelets"]["count_accuracy"] is None
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


def test_counting_with_a_classifier_types_every_detected_white_cell(tiny_classifier):
    result = _count([_smear(), _smear(wbc=2)], classifier=tiny_classifier, names=["a.png", "b.png"],
                       detector="classical", refer_below=0.99)
    doc = result.document()
    assert [e["path"] for e in doc["images"]] == ["a.png", "b.png"]
    assert isinstance(result.images[0].annotated, Image.Image) and "annotated" not in doc["images"][0]
    wbc = [b for b in doc["images"][1]["boxes"] if b["label"] == "WBC"]
    assert len(wbc) == 2 and all(b["wbc_type"] in PBC8 and 0 < b["confidence"] <= 1 for b in wbc)
    assert sum(doc["sample"]["wbc_types"].values()) == doc["sample"]["counts"]["WBC"] == 3
    assert doc["sample"]["wbc_referred"] == 3  # an untrained model is never 99 % sure
    assert "about 40%" in render_report(doc)  # no typing record in this checkpoint: the warning paragraph


def test_ap50_by_pycocotools_agrees_with_the_voc_all_point_ap():
    rng = np.random.default_rng(0)
    entries, truths = [], []
    for _ in range(6):
        truth = [("RBC", x, y, x + 20, y + 20) for x, y in rng.integers(0, 200, (8, 2))]
        boxes = [{"label": "RBC", "score": float(rng.uniform(0.3, 1)), "x1": t[1] + float(rng.normal(0, 3)),
                  "y1": t[2] + float(rng.normal(0, 3)), "x2": t[3], "y2": t[4]} for t in truth[:6]]
        boxes += [{"label": "RBC", "score": float(rng.uniform(0, 0.5)), "x1": 300.0, "y1": 300.0, "x2": 320.0, "y2": 320.0}]
        entries.append({"boxes": boxes, "counts": {"RBC": len(boxes), "WBC": 0, "Platelets": 0}})
        truths.append(truth)
    ours = evaluate_counts(entries, truths, SMEAR_LABELS)["RBC"]["ap50_voc"]
    coco = coco_ap50(entries, truths, SMEAR_LABELS)
    assert 0.5 < coco["RBC"] < 0.9 and coco["RBC"] == pytest.approx(ours, abs=0.02)
    assert coco["WBC"] is None and coco["Platelets"] is None  # no box of those classes anywhere


def test_real_cbc_smoke(real_data_root):
    from bloodcell.data.voc import parse_voc

    folder = real_data_root / "cbc" / "Training"
    images = sorted((folder / "Images").glob("*.jpg"))[:3]
    doc = _count([str(p) for p in images]).document()
    assert len(doc["images"]) == 3 and not doc["errors"]
    for path, entry in zip(images, doc["images"]):
        truth = [b for b in parse_voc(folder / "Annotations" / f"{path.stem}.xml").boxes if b.label == "WBC"]
        assert abs(entry["counts"]["WBC"] - len(truth)) <= 1
        assert entry["counts"]["RBC"] > 0


def test_count_cli_refuses_a_file_as_output_and_fails_when_nothing_was_counted(tmp_path):
    from typer.testing import CliRunner

    from bloodcell.cli.main import app
    from bloodcell.errors import ConfigError

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    refused = CliRunner().invoke(app, ["count", str(bad), "-o", str(tmp_path / "c.json")])
    assert isinstance(refused.exception, ConfigError) and "is a folder" in str(refused.exception)
    assert not (tmp_path / "c.json").exists()
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    failed = CliRunner().invoke(app, ["count", str(bad), str(tiny), "-o", str(tmp_path / "out"), "--detector", "classical"])
    assert failed.exit_code == 1 and "0 photos counted, 2 skipped" in failed.output
    report = (tmp_path / "out" / "report.md").read_text()
    assert "not an image file" in report and "too small to be a smear photo" in report


def test_real_bccd_crops_keep_the_held_out_smears_out_of_train(real_data_root, tmp_path):
    from bloodcell.data.bccd import held_out_ids, typed_smears
    from bloodcell.data.manifest import read_manifest
    from bloodcell.workflows.cells import export_bccd_crops

    manifest = read_manifest(export_bccd_crops(tmp_path / "crops", real_data_root))
    smears, _ = typed_smears(real_data_root)
    held = held_out_ids(smears)
    assert manifest.dataset == "folder" and len(manifest.rows) == sum(len(s.boxes) for s in smears)
    assert {r.group for r in manifest.rows if r.split == "test"} == held
    assert not held & {r.group for r in manifest.rows if r.split == "train"}
    assert {r.label for r in manifest.rows} <= set(PBC8) and all((tmp_path / "crops" / r.path).is_file() for r in manifest.rows)


def test_typing_record_measures_held_out_bccd_cells_and_the_report_quotes_it(tiny_classifier, tmp_path):
    import shutil

    from bloodcell.checkpoint import read_checkpoint_meta
    from bloodcell.inference.predictor import load
    from bloodcell.provenance import file_sha256
    from bloodcell.workflows.typing_records import measure_typing, record_typing

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
    result = measure_typing(checkpoint, tmp_path)
    assert result["held_out"] == 2 and result["smears"] == 6 and result["held_out_types"] == {"eosinophil": 1, "neutrophil": 1}
    record_typing(checkpoint, result)
    recorded = read_checkpoint_meta(checkpoint)["smear_typing"]
    assert recorded["held_out_smears"] == 2 and recorded["held_out_accuracy"] == result["direct_accuracy_held_out"]
    assert file_sha256(checkpoint) != file_sha256(tiny_classifier.source)  # the record is in the file
    classifier = load(checkpoint, num_threads=1)
    assert typing_summary(classifier)["held_out_smears"] == 2
    assert "of 2 held-out smears" in render_report(_count([_smear()], classifier=classifier, detector="classical").document())
    from bloodcell.inference.onnx import export_onnx

    exported = load(export_onnx(checkpoint, tmp_path / "model.onnx"), num_threads=1)  # the record travels with it
    assert typing_summary(exported)["held_out_smears"] == 2


def test_counting_skips_the_single_cell_guard_for_detected_white_cells(tiny_classifier):
    import copy

    from bloodcell.inference.ood import fit_guard

    rng = np.random.default_rng(0)
    cells = [Image.fromarray(np.clip(rng.normal(128, 40, (40, 40, 3)), 0, 255).astype(np.uint8)) for _ in range(20)]
    guarded = copy.copy(tiny_classifier)
    guarded.guard = fit_guard(tiny_classifier.pixels(cells), tiny_classifier.features(cells), pass_rate=0.9)
    smear = _smear()
    doc = _count([smear], classifier=guarded, detector="classical").document()
    box = next(b for b in doc["images"][0]["boxes"] if b["label"] == "WBC")
    alone = guarded.predict(crop_around(smear, (box["x1"], box["y1"], box["x2"], box["y2"])))
    assert alone.reason.startswith("unfamiliar lab")  # alone, the guard refers it: unlike the noisy "cells" it saw
    referred = doc["images"][0]["referred"]  # the untrained tiny model is unsure: low confidence is still referred
    assert doc["sample"]["wbc_classified"] == 1 and all(r["reason"].startswith("low confidence") for r in referred)


def test_a_sample_whose_white_cells_are_unlike_every_known_lab_says_so_and_a_known_labs_sample_does_not(
        tiny_classifier):
    """Issue 26 item 2: the lab check per sample in counts.json, report.md and samples.csv."""
    import copy

    from bloodcell.inference.ood import fit_guard
    from bloodcell.workflows.count import sample_row

    rng = np.random.default_rng(0)
    smears = [_smear(wbc=2), _smear(wbc=2)]
    noise = [Image.fromarray(np.clip(rng.normal(128, 40, (40, 40, 3)), 0, 255).astype(np.uint8)) for _ in range(20)]
    elsewhere = copy.copy(tiny_classifier)
    elsewhere.guard = fit_guard(tiny_classifier.pixels(noise), tiny_classifier.features(noise), pass_rate=0.9)
    result = _count(smears, classifier=elsewhere, detector="classical")
    check = result.document()["sample"]["lab_check"]
    assert check["checked"] == check["unfamiliar"] == 4 and check["unfamiliar_lab"]
    assert "bloodcell adapt" in check["message"] and "Review" in check["message"]
    assert "## Lab check" in render_report(result.document()) and "**Warning**" in render_report(result.document())
    assert sample_row(result)["lab_check"].startswith("unfamiliar lab: 4 of 4")
    # the same lab's own cells (the guard calibrated on crops of such white cells): no warning
    crops = [crop_around(s, (b["x1"], b["y1"], b["x2"], b["y2"])) for s in smears * 5
             for b in count_image(s, detector="classical")["boxes"] if b["label"] == "WBC"]
    crops = [c.rotate(angle) for c in crops for angle in (0, 90)]
    home = copy.copy(tiny_classifier)
    home.guard = fit_guard(tiny_classifier.pixels(crops), tiny_classifier.features(crops), pass_rate=0.98)
    known = _count(smears, classifier=home, detector="classical")
    check = known.document()["sample"]["lab_check"]
    assert check["checked"] == 4 and not check["unfamiliar_lab"] and sample_row(known)["lab_check"].startswith("familiar")
    assert "look unlike the cells" not in render_report(known.document())
    # no guard, no check
    assert "lab_check" not in _count(smears, classifier=tiny_classifier, detector="classical").document()["sample"]


def test_an_adapted_models_trust_line_comes_from_its_adaptation_record():
    from bloodcell.smear.differential import trust_note

    note = trust_note({"typer": "my-lab.safetensors", "adapted_to": "St Elsewhere", "adapted_cv_accuracy": 0.9,
                       "adapted_cells": 48})
    assert "adapted to St Elsewhere from 48" in note and "90%" in note and "has not been measured" not in note
    assert "may miss" not in note
    assert "has not been measured" in trust_note({"typer": "x.safetensors"})
    risky = trust_note({"typer": "my-lab.safetensors", "adapted_to": "St Elsewhere", "adapted_cv_accuracy": 0.9,
                        "adapted_cells": 48, "adapted_at_risk": ["monocyte", "basophil"]})
    assert risky.startswith(note[:-1]) and risky.endswith(
        "It was adapted without any monocyte or basophil cells, and before adapting it mistook some of the lab's other "
        "cells for monocyte or basophil, so it may miss monocyte or basophil cells where the lab has them: look for "
        "them by eye.")
    unmeasured = trust_note({"typer": "x.safetensors", "adapted_at_risk": ["monocyte"]})
    assert "has not been measured" in unmeasured and unmeasured.endswith("where the lab has them: look for them by eye.")


@pytest.mark.parametrize(("recipe", "quoted"), [
    ({"at_risk": ["monocyte"]}, ["monocyte"]),
    ({"at_risk": ["monocyte", "bad\nname", "monocyte", 3, "basophil"]}, ["monocyte"]),  # only the model's classes, once
    ({"at_risk": ["eosinophil", "monocyte"]}, ["monocyte", "eosinophil"]),  # in the model's order
    ({"at_risk": "monocyte"}, None), ({"at_risk": []}, None), ({"at_risk": {"monocyte": 1}}, None),
    ({"unshown_restored": {"monocyte": 0.5, "eosinophil": None}, "gated": ["eosinophil"]}, ["monocyte"]),  # older
    ({"unshown_restored": {"monocyte": 0.5}, "gated": "monocyte"}, None), ({}, None)])
def test_the_types_an_adapted_model_may_miss_are_quoted_only_when_the_record_is_sound(recipe, quoted):
    """The record is read from a model file: only the model's own class names are quoted, each once; a model adapted
    before the record named them gets them from its restored and gated types."""
    from bloodcell.smear.typing import recorded_typing

    meta = {"class_names": ["monocyte", "eosinophil", "bad\nname"],
            "adaptation": {"lab": "L", "cv_accuracy": 0.9, "cells": {"a": 5}, "recipe": recipe}}
    assert recorded_typing("m.safetensors", meta).get("adapted_at_risk") == quoted


def test_a_photo_listed_twice_or_copied_in_a_sample_is_counted_once(tmp_path):
    """A repeated --samples row, or a copy of a photo under another name, would double its cells in the sample."""
    import json

    from typer.testing import CliRunner

    from bloodcell.cli.main import app

    photos = tmp_path / "photos"
    photos.mkdir()
    _smear(wbc=2).save(photos / "a.png")
    (photos / "a copy.png").write_bytes((photos / "a.png").read_bytes())
    _smear(wbc=1, rbc=8).save(photos / "b.png")
    listing = tmp_path / "samples.csv"
    listing.write_text("sample_id,photo\nA,photos/a.png\nA,photos/b.png\nA,photos/a.png\nB,photos/a.png\n")
    runner = CliRunner()
    listed = runner.invoke(app, ["count", "--samples", str(listing), "-o", str(tmp_path / "listed"),
                                 "--detector", "classical"])
    assert listed.exit_code == 0, listed.output
    once = runner.invoke(app, ["count", str(photos / "a.png"), "-o", str(tmp_path / "once"), "--detector", "classical"])
    copied = runner.invoke(app, ["count", str(photos), "-o", str(tmp_path / "copied"), "--detector", "classical"])
    assert once.exit_code == 0 and copied.exit_code == 0, (once.output, copied.output)

    def sample(folder):
        return json.loads((folder / "counts.json").read_text())

    alone = sample(tmp_path / "once")["sample"]["counts"]
    a, b = sample(tmp_path / "listed" / "A"), sample(tmp_path / "listed" / "B")
    assert len(a["images"]) == 2 and b["sample"]["counts"] == alone
    assert any("the same photo as" in e["error"] and "counted once" in e["error"] for e in a["errors"])
    both = sample(tmp_path / "copied")
    assert len(both["images"]) == 2 and any("identical bytes" in e["error"] for e in both["errors"])


def test_a_sample_typed_by_an_adapted_model_that_may_miss_a_type_says_so_in_every_output(tiny_classifier):
    """counts.json keeps the types the adapted model may miss; samples.csv's trust column and report.md name them."""
    from bloodcell.workflows.count import sample_row

    typing = {"typer": "lab.safetensors", "adapted_to": "St Elsewhere", "adapted_cv_accuracy": 0.9,
              "adapted_cells": 30, "adapted_at_risk": ["monocyte"]}
    result = count_photos([_smear(wbc=2)], partial(count_image, classifier=tiny_classifier, detector="classical"),
                          typing=typing, typing_unavailable=NO_CLASSIFIER)
    doc = result.document()
    assert SampleResult.model_validate(doc).document()["sample"]["wbc_typing"]["adapted_at_risk"] == ["monocyte"]
    assert "may miss monocyte where present (adapted without any)" in sample_row(result)["trust"]
    assert "so it may miss monocyte cells where the lab has them" in " ".join(render_report(doc).split())
    del typing["adapted_at_risk"]
    plain = count_photos([_smear(wbc=2)], partial(count_image, classifier=tiny_classifier, detector="classical"),
                         typing=typing, typing_unavailable=NO_CLASSIFIER)
    assert "may miss" not in sample_row(plain)["trust"] and "may miss" not in render_report(plain.document())
