"""Review of a counted sample: review items, corrections, recomputed differential, CSV, Label Studio, cells."""

from __future__ import annotations

import csv
import io

import pytest
from PIL import Image, ImageDraw

from bloodcell.errors import DataError
from bloodcell.smear.differential import render_report
from bloodcell.smear.review import (
    Correction,
    apply_corrections,
    corrected_cells,
    corrections_csv,
    labelstudio_config,
    labelstudio_tasks,
    read_corrections,
    review_items,
    review_targets,
    sample_report,
    template_rows,
    to_csv,
)

PBC8 = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


def _box(label, x, y, size=40, **extra):
    return {"label": label, "score": 0.9, "x1": float(x), "y1": float(y), "x2": float(x + size), "y2": float(y + size),
            **extra}


def _doc():
    """Two photos: photo 1 has a referred, a doubtful and a confident white cell; photo 2 one confident cell."""
    referred = _box("WBC", 10, 10, wbc_type="monocyte", confidence=0.41, referred=True)
    doubtful = _box("WBC", 100, 10, wbc_type="neutrophil", confidence=0.95, score=0.42)
    sure = _box("WBC", 200, 10, wbc_type="neutrophil", confidence=0.97)
    photo1 = {"path": "/lab/smears/s1-a.jpg", "width": 320, "height": 240,
              "boxes": [_box("RBC", 10, 100), _box("RBC", 60, 100, count=2), referred, doubtful, sure,
                        _box("Platelets", 150, 150, size=10)],
              "counts": {"RBC": 3, "WBC": 3, "Platelets": 1},
              "wbc_types": {"monocyte": 1, "neutrophil": 2},
              "referred": [{**referred, "reason": "low confidence (0.41 < 0.6)"}]}
    photo2 = {"path": "s1-b.jpg", "width": 320, "height": 240, "boxes": [_box("WBC", 50, 50, wbc_type="lymphocyte",
                                                                              confidence=0.9)],
              "counts": {"RBC": 0, "WBC": 1, "Platelets": 0}, "wbc_types": {"lymphocyte": 1}, "referred": []}
    sample = {"images": 2, "counts": {"RBC": 3, "WBC": 4, "Platelets": 1},
              "wbc_types": {"lymphocyte": 1, "monocyte": 1, "neutrophil": 2}, "wbc_classified": 4, "wbc_referred": 1,
              "wbc_typing": {"typer": "pbc8.safetensors"}}
    return {"sample_id": "S-1", "images": [photo1, photo2], "sample": sample, "errors": []}


def _photos():
    images = {}
    for key in ("1", "2"):
        image = Image.new("RGB", (320, 240), (225, 205, 210))
        ImageDraw.Draw(image).ellipse([20, 20, 40, 40], fill=(110, 70, 190))
        images[key] = image
    return images


CORRECTIONS = [
    Correction("relabel", item="1-3", label="lymphocyte"),   # the referred monocyte is a lymphocyte
    Correction("wrong", item="1-4"),                        # the doubtful box is no white cell
    Correction("accept", item="2-1"),
    Correction("wrong", item="1-2"),                        # a 2-cell red clump box that is not real
    Correction("missing", photo="2", box=(200, 100, 240, 140), label="eosinophil"),
    Correction("missing", photo="s1-a.jpg", box=(250, 150, 260, 160), label="Platelets"),
]


def test_review_items_are_the_referred_and_the_doubtful_white_cells():
    doc = _doc()
    assert review_targets(doc["images"][0]) == [
        (2, "low confidence (0.41 < 0.6)"), (3, "the detector is not sure this is a white cell (score 0.42)")]
    items = review_items(doc, _photos())
    assert [item.id for item in items] == ["1-3", "1-4"]
    assert items[0].image == "/lab/smears/s1-a.jpg" and items[0].crop.size == (60, 60)  # 1.5 x the box
    assert review_items(doc)[0].crop is None and review_targets(doc["images"][1]) == []


def test_corrections_recompute_the_counts_and_the_differential_and_mark_it_reviewed():
    doc = _doc()
    reviewed, decisions = apply_corrections(doc, CORRECTIONS, PBC8)
    assert doc == _doc()  # the counted sample is left as it was
    one, two = reviewed["images"]
    assert one["counts"] == {"RBC": 1, "WBC": 2, "Platelets": 2}
    assert one["wbc_types"] == {"lymphocyte": 1, "neutrophil": 1}
    assert two["counts"] == {"RBC": 0, "WBC": 2, "Platelets": 0}
    assert two["wbc_types"] == {"eosinophil": 1, "lymphocyte": 1}
    assert one["boxes"][3]["reviewed"] == "wrong" and one["boxes"][2]["model_label"] == "monocyte"
    assert two["boxes"][-1] == {"label": "WBC", "score": None, "x1": 200.0, "y1": 100.0, "x2": 240.0, "y2": 140.0,
                                "wbc_type": "eosinophil", "confidence": None, "reviewed": "added"}
    sample = reviewed["sample"]
    assert sample["counts"] == {"RBC": 1, "WBC": 4, "Platelets": 2} and sample["wbc_referred"] == 0
    assert sample["wbc_types"] == {"eosinophil": 1, "lymphocyte": 2, "neutrophil": 1}
    assert sample["wbc_typing"] == {"typer": "pbc8.safetensors"}
    assert [d.decision for d in decisions] == ["relabel", "wrong", "accept", "wrong", "missing", "missing"]
    assert decisions[0].reason.startswith("low confidence") and decisions[0].model_label == "monocyte"
    assert decisions[4].item == "2-2" and decisions[4].label == "eosinophil"
    assert reviewed["review"]["decisions"] == {"accepted": 1, "relabelled": 1, "wrong": 2, "added": 2}
    report = render_report(reviewed, "S-1")
    assert report.startswith("# Differential report: S-1 (reviewed)")
    assert "4 boxes decided (1 accepted, 1 given another class, 2 marked wrong); 2 missed cells added" in report
    assert "White cells referred for review" not in report and "| lymphocyte | 2 | 50.0 |" in report


def test_an_undecided_cell_stays_referred_and_the_review_says_so():
    reviewed, _ = apply_corrections(_doc(), [Correction("wrong", item="1-4")], PBC8)
    assert reviewed["sample"]["wbc_referred"] == 1 and reviewed["review"]["undecided"] == 1
    assert "1 cell for review left undecided (still referred)" in reviewed["review"]["summary"]
    again, _ = apply_corrections(reviewed, [], PBC8)  # a reviewed sample reviewed again keeps what is left to do
    assert review_targets(again["images"][0]) == [(2, "low confidence (0.41 < 0.6)")]
    combined, decisions = apply_corrections(_doc(), [], PBC8, reviewed=False)
    assert "review" not in combined and decisions == [] and combined["sample"]["counts"]["WBC"] == 4


@pytest.mark.parametrize("correction, message", [
    (Correction("relabel", item="1-9", label="lymphocyte"), "no box '1-9' in this sample (photo 1 has 6 boxes)"),
    (Correction("relabel", item="7-1", label="lymphocyte"), "no box '7-1' in this sample"),
    (Correction("relabel", item="1-3", label="neutrofil"), "'neutrofil' is not a class the reviewer can give"),
    (Correction("relabel", item="1-3"), "no class is not a class"),
    (Correction("maybe", item="1-3"), "decision 'maybe' is not one of accept, relabel, wrong, missing"),
    (Correction("missing", photo="3", box=(0, 0, 5, 5), label="RBC"), "no photo '3' in this sample"),
    (Correction("missing", photo="1", box=(10, 10, 5, 20), label="RBC"), "needs a box x1,y1,x2,y2 with x2 > x1"),
])
def test_a_bad_correction_is_one_sentence_naming_it(correction, message):
    with pytest.raises(DataError, match="^correction 1: ") as info:
        apply_corrections(_doc(), [correction], PBC8)
    assert message in str(info.value)


def test_a_box_decided_twice_is_refused():
    with pytest.raises(DataError, match="correction 2: box 1-3 is decided twice"):
        apply_corrections(_doc(), [Correction("accept", item="1-3"), Correction("wrong", item="1-3")], PBC8)


def test_the_filled_in_template_round_trips_through_csv():
    doc = _doc()
    items = review_items(doc, _photos())
    rows = template_rows(items, "S-1")
    rows[0]["label"] = "lymphocyte"              # a label alone decides: relabel (not the model's call)
    rows[1]["decision"] = "Wrong"
    rows.append({"photo": "2", "x1": "200", "y1": "100", "x2": "240", "y2": "140", "decision": "missing",
                 "label": "eosinophil"})
    text = to_csv(rows, list(rows[0]) + ["top_3"])
    corrections = read_corrections("\ufeff" + text)  # a BOM from a spreadsheet is fine
    assert [(c.decision, c.item, c.label) for c in corrections] == [
        ("relabel", "1-3", "lymphocyte"), ("wrong", "1-4", None), ("missing", None, "eosinophil")]
    _, decisions = apply_corrections(doc, corrections, PBC8)
    saved = list(csv.DictReader(io.StringIO(corrections_csv(decisions, "S-1"))))
    assert saved[0] == {"sample_id": "S-1", "photo": "1", "image": "s1-a.jpg", "item": "1-3", "x1": "10", "y1": "10",
                        "x2": "50", "y2": "50", "model_label": "monocyte", "confidence": "0.41",
                        "reason": "low confidence (0.41 < 0.6)", "decision": "relabel", "label": "lymphocyte"}
    assert saved[1]["label"] == "" and saved[2]["item"] == "2-2"
    with pytest.raises(DataError, match="line 2: x1 must be a number"):
        read_corrections("photo,x1,y1,x2,y2,decision,label\n1,a,0,5,5,missing,RBC\n")
    with pytest.raises(DataError, match="needs the columns item, decision and label"):
        read_corrections("a,b\n1,2\n")


def test_label_studio_tasks_hold_the_reviewed_boxes_as_annotation_and_the_counted_ones_as_prediction():
    doc = _doc()
    reviewed, _ = apply_corrections(doc, CORRECTIONS, PBC8)
    tasks = labelstudio_tasks(reviewed, doc, "S-1")
    assert [t["data"] for t in tasks] == [{"image": "s1-a.jpg", "sample_id": "S-1", "photo": 1},
                                          {"image": "s1-b.jpg", "sample_id": "S-1", "photo": 2}]
    annotation = tasks[0]["annotations"][0]["result"]
    assert [r["id"] for r in annotation] == ["1-1", "1-3", "1-5", "1-6", "1-7"]  # wrong boxes 1-2 and 1-4 left out
    region = annotation[1]
    assert region["type"] == "rectanglelabels" and region["from_name"] == "label" and region["to_name"] == "image"
    assert region["value"]["rectanglelabels"] == ["lymphocyte"] and region["original_width"] == 320
    assert region["value"]["x"] == pytest.approx(100 * 10 / 320) and region["value"]["height"] == pytest.approx(100 * 40 / 240)
    assert len(tasks[0]["predictions"][0]["result"]) == 6
    config = labelstudio_config(PBC8)
    assert '<RectangleLabels name="label" toName="image">' in config and '<Label value="Platelets"/>' in config


def test_reviewed_cells_form_a_folder_that_adapt_reads(tmp_path):
    from bloodcell.workflows.cells import folder_cells

    doc = _doc()
    reviewed, decisions = apply_corrections(doc, CORRECTIONS, PBC8)
    cells = corrected_cells(reviewed, decisions, _photos(), "S-1 / 2026", PBC8)
    assert [name for name, _ in cells] == ["lymphocyte/S-1_2026_photo1_box3.png", "lymphocyte/S-1_2026_photo2_box1.png",
                                           "eosinophil/S-1_2026_photo2_box2.png"]  # the added platelet is no model class
    for name, crop in cells:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        crop.save(tmp_path / name)
    read = folder_cells(tmp_path)
    assert sorted(read.labels) == ["eosinophil", "lymphocyte", "lymphocyte"] and not read.skipped
    assert all(label in PBC8 for label in read.labels)


def test_the_sample_report_is_plain_sentences_with_reference_intervals_and_flags():
    doc = _doc()
    report = sample_report(doc, "S-1")
    assert report["counts"] == [{"cell": "Red cells", "count": 3}, {"cell": "White cells", "count": 4},
                                {"cell": "Platelets", "count": 1}]
    rows = {row["type"]: row for row in report["differential"]}
    # 4 white cells support no flag (the 95% interval of 1 in 4 is 0.6-80.6%): the notes say how many are needed
    assert rows["monocyte"] == {"type": "monocyte", "count": 1, "percent": 25.0, "reference": "2-10%", "flag": ""}
    assert rows["basophil"]["flag"] == "" and rows["eosinophil"]["flag"] == ""
    assert report["notes"][-1] == ("Warning: only 4 white cells classified (a manual differential counts 100): "
                                   "percentages are imprecise.")
    assert any(n.startswith("Not flagged: monocyte is above its reference interval, but with 4 white cells")
               for n in report["notes"])
    assert "has not been measured" in report["trust"] and "`" not in report["trust"]
    assert report["reviewed"] is False and report["referred"] == 2 and report["photos"] == 2  # referred + doubtful
    reviewed, _ = apply_corrections(doc, CORRECTIONS, PBC8)
    after = sample_report(reviewed, "S-1")
    assert after["reviewed"] is True and after["review_summary"].startswith("Reviewed by a person")
    untyped = {**doc, "sample": {**doc["sample"], "wbc_typing_unavailable": "no cell classifier loaded"}}
    assert sample_report(untyped, "S-1")["differential"] == []
    assert sample_report(untyped, "S-1")["typing_unavailable"] == "White-cell types are unavailable: no cell classifier loaded."


def test_the_page_report_carries_the_lab_check_only_when_the_sample_looks_unfamiliar():
    from bloodcell.smear.lab_check import lab_check
    from bloodcell.smear.review import sample_report

    boxes = [{"label": "WBC", "unfamiliar_lab": odd} for odd in (True, True, True, False)]
    unfamiliar = {"images": [], "sample": {"wbc_types": {"neutrophil": 4}, "lab_check": lab_check(boxes)}}
    text = sample_report(unfamiliar, "S1")["lab_check"]
    assert text.startswith("3 of 4 white cells look unlike") and "bloodcell adapt" in text and "`" not in text
    familiar = {"images": [], "sample": {"wbc_types": {"neutrophil": 4}, "lab_check": lab_check(boxes[3:] * 4)}}
    assert sample_report(familiar, "S1")["lab_check"] is None
    assert lab_check([{"label": "WBC"}]) is None  # nothing checked (no guard): no verdict
    assert not lab_check([{"unfamiliar_lab": True}])["unfamiliar_lab"]  # a single odd cell is not a lab
