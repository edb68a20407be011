"""``bloodcell review export|apply`` on a counted sample, and ``bloodcell.load_counter`` from Python."""

from __future__ import annotations

import csv
import io
import json

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from bloodcell.cli.main import app
from bloodcell.errors import ConfigError, DataError

PBC8 = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


def _smear(wbc: int, shade: int = 0) -> Image.Image:
    image = Image.new("RGB", (640, 480), (200, 202, 205 - shade))
    draw = ImageDraw.Draw(image)
    for i in range(12):
        x, y = 60 + 110 * (i % 5), 60 + 110 * (i // 5)
        draw.ellipse([x - 38, y - 38, x + 38, y + 38], fill=(205, 150, 140))
    for k in range(wbc):
        x, y = 560, 400 - 200 * k
        draw.ellipse([x - 55, y - 55, x + 55, y + 55], fill=(210, 180, 210))
        draw.ellipse([x - 30, y - 30, x + 30, y + 30], fill=(110, 70, 190))
    return image


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained 8-class classifier checkpoint: never 99 % sure, so every white cell is referred."""
    import torch

    from bloodcell.checkpoint import CheckpointMeta, save_checkpoint
    from bloodcell.models import create_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = create_model("resnet18", num_classes=8, class_names=PBC8, input_size=32)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model, CheckpointMeta(model_name="resnet18", data_config=model.data_config))
    return path


@pytest.fixture()
def counted(tmp_path, tiny_model):
    photos = tmp_path / "samples" / "S-17"  # SAMPLES/<sample id>/<photos>
    photos.mkdir(parents=True)
    _smear(wbc=2).save(photos / "one.png")
    _smear(wbc=1, shade=3).save(photos / "two.png")
    out = tmp_path / "counts"
    result = CliRunner().invoke(app, ["count", str(photos.parent), "-o", str(out), "--detector", "classical",
                                      "--model", str(tiny_model), "--refer-below", "0.99"])
    assert result.exit_code == 0, result.output
    return out


def _run(*args):
    result = CliRunner().invoke(app, ["review", *map(str, args)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_export_writes_the_referred_cells_and_a_template_and_apply_recomputes_the_sample(counted, tiny_model, tmp_path):
    review = tmp_path / "review"
    output = _run("export", counted, "-o", review, "--model", tiny_model)
    assert output.startswith("3 cells to review") and "bloodcell review apply" in output
    rows = list(csv.DictReader((review / "corrections.csv").open()))
    assert [r["item"] for r in rows] == [f"1-{_wbc_box(counted, 1, 0)}", f"1-{_wbc_box(counted, 1, 1)}",
                                         f"2-{_wbc_box(counted, 2, 0)}"]
    assert all(len(r["top_3"].split("; ")) == 3 and r["reason"].startswith("low confidence") for r in rows)
    assert (review / "crops" / f"{rows[0]['item']}.png").is_file() and "![cell" in (review / "review.md").read_text()

    rows[0]["label"] = "lymphocyte"
    rows[1]["decision"] = "accept"
    rows[2]["decision"] = "wrong"
    rows.append({"photo": "two.png", "x1": "20", "y1": "380", "x2": "90", "y2": "450", "decision": "missing",
                 "label": "eosinophil"})
    filled = tmp_path / "filled.csv"
    with filled.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    done = tmp_path / "reviewed"
    output = _run("apply", counted, "--corrections", filled, "-o", done, "--model", tiny_model)
    assert output.startswith("Reviewed by a person: 3 boxes decided (1 accepted, 1 given another class, 1 marked "
                             "wrong); 1 missed cell added.")
    assert "--bank BANK" in output  # one sample rarely has enough cells: the bank gathers every sample's
    banked = _run("apply", counted, "--corrections", filled, "-o", tmp_path / "banked", "--model", tiny_model,
                  "--bank", tmp_path / "bank")
    assert f"cell bank {tmp_path / 'bank'}: " in banked and "before adapting, review about" in banked
    assert "more eosinophil" in banked and (tmp_path / "bank" / "eosinophil").is_dir()
    report = (done / "report.md").read_text()
    assert report.startswith("# Differential report: S-17 (reviewed)\n\nReviewed by a person: 3 boxes decided")
    doc = json.loads((done / "counts.json").read_text())
    assert doc["sample"]["counts"]["WBC"] == 3 and doc["sample"]["wbc_referred"] == 0 and doc["review"]["reviewed"]
    saved = list(csv.DictReader(io.StringIO((done / "corrections.csv").read_text())))
    assert [r["decision"] for r in saved] == ["relabel", "accept", "wrong", "missing"]
    tasks = json.loads((done / "labelstudio.json").read_text())
    assert [t["data"]["image"] for t in tasks] == ["one.png", "two.png"]
    assert '<RectangleLabels name="label" toName="image">' in (done / "labelstudio-config.xml").read_text()

    from bloodcell.workflows.cells import folder_cells

    cells = folder_cells(done / "cells")
    assert sorted(cells.labels) == sorted(["lymphocyte", rows[1]["model_label"], "eosinophil"])
    assert all(label in PBC8 for label in cells.labels)

    again = CliRunner().invoke(app, ["review", "apply", str(done), "--corrections", str(done / "corrections.csv"),
                                     "-o", str(tmp_path / "twice"), "--model", str(tiny_model)])
    assert isinstance(again.exception, DataError) and "already reviewed" in str(again.exception)


def test_the_reviewed_cells_of_every_sample_accumulate_in_the_lab_cell_bank(tmp_path):
    from bloodcell.workflows.cell_bank import add_to_bank, still_needed

    bank = tmp_path / "bank"
    for sample in ("S-1", "S-2"):
        for name, n in (("lymphocyte", 4), ("neutrophil", 6)):
            (tmp_path / sample / "cells" / name).mkdir(parents=True)
            for i in range(n):  # the same names in both samples: nothing is overwritten
                Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / sample / "cells" / name / f"cell_{i}.png")
        held = add_to_bank(tmp_path / sample / "cells", bank)
    assert held == {"lymphocyte": 8, "neutrophil": 12}
    assert still_needed(held) == {"lymphocyte": 2}


def _wbc_box(counted, photo: int, n: int) -> int:
    doc = json.loads((counted / "counts.json").read_text())
    boxes = doc["images"][photo - 1]["boxes"]
    return [i for i, box in enumerate(boxes, start=1) if box["label"] == "WBC"][n]


def test_apply_refuses_a_bad_corrections_file_with_one_sentence(counted, tiny_model, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("item,decision,label\n1-99,relabel,lymphocyte\n")
    result = CliRunner().invoke(app, ["review", "apply", str(counted), "--corrections", str(bad),
                                      "-o", str(tmp_path / "out"), "--model", str(tiny_model)])
    assert isinstance(result.exception, DataError)
    assert str(result.exception).startswith("correction 1: no box '1-99' in this sample")
    missing = CliRunner().invoke(app, ["review", "export", str(tmp_path), "-o", str(tmp_path / "r")])
    assert isinstance(missing.exception, DataError) and "give the folder of one sample" in str(missing.exception)



@pytest.mark.parametrize("tamper, where", [
    (lambda doc: doc["images"][0].update(boxes="many"), "images.0.boxes"),
    (lambda doc: doc["images"][0]["boxes"][0].update(x1="left"), "images.0.boxes.0.x1"),
    (lambda doc: doc["images"][0].update(counts={"RBC": -3}), "images.0.counts.RBC"),
    (lambda doc: doc.pop("sample"), "sample"),
    (lambda doc: doc["images"][0].update(photo_id="../../../evil"), "images.0.photo_id"),
])
def test_a_tampered_counts_json_is_one_sentence_naming_the_field(counted, tmp_path, tamper, where):
    sample = counted  # one sample: its folder is the output folder
    doc = json.loads((sample / "counts.json").read_text())
    tamper(doc)
    (sample / "counts.json").write_text(json.dumps(doc))
    result = CliRunner().invoke(app, ["review", "export", str(sample), "-o", str(tmp_path / "r")])
    assert isinstance(result.exception, DataError)
    assert "not a counts.json written by `bloodcell count`" in str(result.exception) and where in str(result.exception)

def test_load_counter_counts_a_sample_and_reviews_it_from_python(tiny_model):
    import bloodcell
    from bloodcell.smear.review import Correction

    counter = bloodcell.load_counter(tiny_model, detector="classical", refer_below=0.99)
    result = counter.count([_smear(wbc=2), _smear(wbc=1, shade=3), b"not an image"], sample_id="S-17")
    assert result.report["photos"] == 2 and result.report["skipped"] == 1 and result.report["referred"] == 3
    assert "# Differential report: S-17" in result.markdown()
    items = result.review_items()
    assert len(items) == 3 and all(item.crop is not None and len(item.top_k) == 3 for item in items)
    reviewed = result.review([Correction("relabel", item=items[0].id, label="monocyte")])
    assert reviewed.report["reviewed"] is True and result.report["reviewed"] is False
    assert reviewed.report["referred"] == 2
    assert [name.split("/")[0] for name, _ in reviewed.cells()] == ["monocyte"]
    assert "relabel" in reviewed.corrections_csv() and reviewed.labelstudio()[0]["data"]["image"] == "image-1"


def test_review_export_all_gives_every_white_cell_and_an_unfamiliar_labs_sample_gets_them_anyway(tmp_path, tiny_model):
    """Issue 26 item 4: a lab builds its cell bank from every reviewed cell, not only the referred ones."""
    from bloodcell.workflows.review import export_review

    photos = tmp_path / "samples" / "S-18"
    photos.mkdir(parents=True)
    _smear(wbc=2).save(photos / "one.png")
    out = tmp_path / "counts"
    assert CliRunner().invoke(app, ["count", str(photos), "-o", str(out), "--detector", "classical", "--model",
                                    str(tiny_model), "--refer-below", "0"]).exit_code == 0
    plain = export_review(out, tmp_path / "r0").items
    every = export_review(out, tmp_path / "r1", every_cell=True).items
    assert len(every) == 2 and len(plain) < len(every) and {i.id for i in plain} <= {i.id for i in every}
    doc = json.loads((out / "counts.json").read_text())
    doc["sample"]["lab_check"] = {"checked": 2, "unfamiliar": 2, "unfamiliar_lab": True, "message": "unfamiliar lab"}
    (out / "counts.json").write_text(json.dumps(doc))
    exported = _run("export", out, "-o", tmp_path / "r2", "--model", tiny_model)
    assert "2 cells to review (every white cell: this sample's cells look unlike every lab" in exported
    with (tmp_path / "r2" / "corrections.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["decision"] = "accept"
    with (tmp_path / "r2" / "corrections.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    applied = _run("apply", out, "--corrections", tmp_path / "r2" / "corrections.csv", "-o", tmp_path / "reviewed",
                   "--model", tiny_model, "--bank", tmp_path / "bank")
    assert "2 boxes decided (2 accepted)" in applied
    assert len(list((tmp_path / "bank").rglob("*.png"))) == 2
    with (tmp_path / "reviewed" / "corrections.csv").open(newline="") as handle:
        assert all(row["reason"] for row in csv.DictReader(handle))  # why each cell was reviewed is kept


def test_review_export_never_replaces_a_corrections_csv_without_overwrite(counted, tiny_model, tmp_path):
    review = tmp_path / "review"
    review.mkdir()
    (review / "corrections.csv").write_text("item,decision\n1-0,accept\n")  # a reviewer's filled-in file
    result = CliRunner().invoke(app, ["review", "export", str(tmp_path / "no-such-sample"), "-o", str(review)])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)  # refused before reading the sample
    assert str(result.exception) == f"{review / 'corrections.csv'} exists; choose another --output or pass --overwrite"
    assert (review / "corrections.csv").read_text() == "item,decision\n1-0,accept\n"
    assert sorted(p.name for p in review.iterdir()) == ["corrections.csv"]
    output = _run("export", counted, "-o", review, "--model", tiny_model, "--overwrite")
    assert output.startswith("3 cells to review") and (review / "corrections.csv").read_text().startswith("sample_id,")
    assert len(list(csv.DictReader((review / "corrections.csv").open()))) == 3
