"""Hardening of documents read back (issue 30): counts.json, corrections CSVs and review requests, one validator."""

from __future__ import annotations

import json

import pytest
from hardening_helpers import CLASSES
from PIL import Image
from typer.testing import CliRunner

from bloodcell.cli.main import app
from bloodcell.errors import DataError
from bloodcell.workflows.review import apply_review, export_review

WIDTH, HEIGHT = 64, 48


def _sample(folder, box: dict | None = None, raw: str | None = None):
    """A counted sample folder: one photo and a counts.json with one doubtful white cell (``box``)."""
    folder.mkdir(parents=True)
    Image.new("RGB", (WIDTH, HEIGHT), (200, 150, 150)).save(folder / "p.png")
    box = box or {"x1": 10, "y1": 10, "x2": 30, "y2": 30}
    doc = {"sample_id": "S", "sample": {}, "errors": [],
           "images": [{"path": "p.png", "counts": {"WBC": 1}, "wbc_types": {},
                       "boxes": [{"label": "WBC", "score": 0.3, **box}]}]}
    (folder / "counts.json").write_text(raw if raw is not None else json.dumps(doc))
    return folder


def test_a_white_cell_box_larger_than_its_photo_is_refused_before_any_crop(tmp_path, monkeypatch):
    import bloodcell.smear.review as logic

    sample = _sample(tmp_path / "s", {"x1": 0, "y1": 0, "x2": 4000, "y2": 4000})
    monkeypatch.setattr(logic, "crop_around", lambda *a, **k: pytest.fail("cropped"))
    with pytest.raises(DataError, match=r"counts.json photo 1 box 1: the box 0,0,4000,4000 is not on the 64x48 photo"):
        export_review(sample, tmp_path / "r")


def test_a_sane_sample_still_exports(tmp_path):
    items = export_review(_sample(tmp_path / "s"), tmp_path / "r").items
    assert len(items) == 1 and (tmp_path / "r" / "crops" / f"{items[0].id}.png").is_file()


@pytest.mark.parametrize("raw, words", [
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ('{"images": [', "not valid JSON"),
])
def test_deep_or_broken_json_is_one_sentence(tmp_path, raw, words):
    sample = _sample(tmp_path / "s", raw=raw)
    result = CliRunner().invoke(app, ["review", "export", "--counts", str(sample), "-o", str(tmp_path / "r")])
    assert result.exit_code == 1 and isinstance(result.exception, DataError), repr(result.exception)
    assert words in str(result.exception) and "give the folder of one sample" in str(result.exception)


def test_an_oversized_counts_json_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    from bloodcell.smear import documents

    sample = _sample(tmp_path / "s")
    monkeypatch.setattr(documents, "MAX_JSON_BYTES", 100)
    with pytest.raises(DataError, match="more than the 100 byte limit for the counted sample"):
        export_review(sample, tmp_path / "r")


def _corrections(tmp_path, text: str):
    path = tmp_path / "corrections.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, words", [
    ("item,decision,label,reason\n1-1,accept,," + "x" * 20_000 + "\n", "line 2: a field is longer than 10000 characters"),
    ("item,decision,label,reason\n1-1,accept,," + "x" * 200_000 + "\n", r"not a readable CSV \(field larger than"),
    ('item,decision,label\n1-1,accept,"' + "x" * 200_000 + "\n", r"not a readable CSV \(field larger than"),
])
def test_a_corrections_csv_with_huge_fields_is_one_sentence(tmp_path, text, words):
    sample = _sample(tmp_path / "s")
    with pytest.raises(DataError, match=words):
        apply_review(sample, _corrections(tmp_path, text), tmp_path / "out", CLASSES)


@pytest.mark.parametrize("box", ["0,0,1e300,10", "0,0,nan,10", "5,5,500,40", "-1e9,0,10,10"])
def test_the_cli_refuses_a_missing_cell_box_the_service_refuses(tmp_path, box):
    sample = _sample(tmp_path / "s")
    text = f"photo,x1,y1,x2,y2,decision,label,item\n1,{box},missing,lymphocyte,\n"
    with pytest.raises(DataError, match="correction"):
        apply_review(sample, _corrections(tmp_path, text), tmp_path / "out", CLASSES)


def test_a_missing_cell_on_the_photo_is_added(tmp_path):
    sample = _sample(tmp_path / "s")
    text = "photo,x1,y1,x2,y2,decision,label,item\n1,5,5,25,25,missing,lymphocyte,\n"
    result = apply_review(sample, _corrections(tmp_path, text), tmp_path / "out", CLASSES)
    assert result.cells == {"lymphocyte": 1}


def test_the_cli_and_the_service_share_one_box_rule():
    from bloodcell.service.limits import RequestRejected
    from bloodcell.service.review import check_box as service_check
    from bloodcell.smear.documents import check_box

    for box in ([0, 0, 1e300, 10], [0, 0, 80, 40], [5, 5, 4, 40]):
        with pytest.raises(DataError) as cli:
            check_box(box, WIDTH, HEIGHT, "box")
        with pytest.raises(RequestRejected) as service:
            service_check(box, WIDTH, HEIGHT, "box")
        assert service.value.message == str(cli.value) and service.value.status == 422
