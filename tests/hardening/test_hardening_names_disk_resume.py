"""Hardening (issue 30): file names are data, outputs whole or not at all, a full disk is one sentence, and
``predict``/``count`` resume an interrupted batch."""

from __future__ import annotations

import csv
import errno
import json
import os
from pathlib import Path

import pydantic_core
import pytest
from hardening_helpers import cell_png, save_tiny
from PIL import Image
from typer.testing import CliRunner

from bloodcell.cli.main import app
from bloodcell.errors import OutputError

runner = CliRunner()
LATIN1 = os.fsdecode(b"\xe9t\xe9.png")  # "été.png" from a Latin-1 lab PC: not valid UTF-8
LONG = "x" * 247 + ".png"  # 251 characters


def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("names") / "tiny.safetensors")


def _cells(folder: Path, names) -> Path:
    for index, name in enumerate(names):
        cell_png(folder / name, seed=index)
    return folder


def _rows(out: Path) -> list[dict]:
    if out.suffix == ".json":
        return json.loads(out.read_text(encoding="utf-8"))
    with out.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _predict(checkpoint, *args):
    return runner.invoke(app, ["predict", *map(str, args), "--model", str(checkpoint), "--batch-size", "2"])


# -- file names are data ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_non_utf8_name_is_written_escaped_and_no_row_is_lost(tmp_path, checkpoint, suffix):
    folder = _cells(tmp_path / "cells", ["a.png", LATIN1, "b.png", "c.png", "d.png", "e.png", "f.png", "g.png"])
    out = tmp_path / f"p{suffix}"
    result = _predict(checkpoint, folder, "--output", out)
    assert result.exit_code == 0, (result.output, result.exception)
    names = [row["path"].rsplit("/", 1)[-1] for row in _rows(out)]
    assert len(names) == 8 and "\\xe9t\\xe9.png" in names
    assert all(row["label"] for row in _rows(out))
    assert f"1 file name(s) are not valid UTF-8: {out} shows them" in result.output


def test_the_table_shows_a_non_utf8_name(tmp_path, checkpoint):
    folder = _cells(tmp_path / "cells", [LATIN1, "a.png"])
    result = runner.invoke(app, ["predict", str(folder), "--model", str(checkpoint)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.output.count("\\xe9") == 2  # the name in the table (wide enough not to fold it)
    assert "1 file name(s) are not valid UTF-8: the table shows them" in result.output


def test_heat_maps_of_long_and_non_utf8_names_are_all_written(tmp_path, checkpoint):
    folder = _cells(tmp_path / "cells", [LONG, "y" * 247 + ".png", LATIN1, "a.png"])
    maps = tmp_path / "maps"
    result = _predict(checkpoint, folder, "--output", tmp_path / "p.csv", "--explain", maps)
    assert result.exit_code == 0, (result.output, result.exception)
    made = sorted(p.name for p in maps.iterdir() if p.name != "index.csv")
    assert len(made) == 4 and all(len(name.encode()) <= 255 and name.endswith("_gradcam.png") for name in made)
    assert "\\xe9t\\xe9_gradcam.png" in made and all(Image.open(maps / name).size for name in made)
    index = (maps / "index.csv").read_text(encoding="utf-8")  # valid UTF-8: the odd name escaped as in the results
    assert "\\xe9t\\xe9.png" in index and "\\xe9t\\xe9_gradcam.png" in index and index.count("\n") == 5
    shortened = [name for name in made if len(name) > 200]
    assert len(shortened) == 2 and shortened[0] != shortened[1]


def test_count_writes_long_and_non_utf8_photo_names_and_review_finds_them_again(tmp_path):
    from bloodcell.workflows.count import count_samples, samples_from_folders
    from bloodcell.workflows.review import export_review

    folder = tmp_path / "S"
    for index, name in enumerate([LONG, LATIN1]):
        cell_png(folder / name, seed=index, size=96)
    out = tmp_path / "out"
    docs = count_samples(samples_from_folders([folder]), out, None, detector="classical")
    assert len(docs[0]["images"]) == 2 and not docs[0]["errors"]
    doc = pydantic_core.from_json((out / "counts.json").read_bytes())  # valid UTF-8 JSON, as review reads it
    paths = [entry["path"] for entry in doc["images"]]
    assert any(path.endswith("\\xe9t\\xe9.png") for path in paths)
    annotated = sorted(p.name for p in (out / "annotated").iterdir())
    assert len(annotated) == 2 and all(len(name.encode()) <= 255 for name in annotated)
    assert (out / "report.md").read_text(encoding="utf-8") and (out / "samples.csv").is_file()
    from bloodcell.workflows.review import load_photos, read_counted

    assert len(load_photos(read_counted(out))) == 2  # the escaped names lead back to the photos
    export_review(out, tmp_path / "review")


def test_output_names_are_shortened_with_a_hash_and_kept_apart():
    from bloodcell.writing import name_from_text, name_text, output_name

    used: set[str] = set()
    first, second = output_name("z" * 300 + "a", ".png", used), output_name("z" * 300 + "b", ".png", used)
    assert first != second and all(len(n.encode()) <= 255 for n in (first, second))
    assert output_name("z" * 300 + "a", ".png", used) != first  # the same input twice gets _2
    assert name_from_text(name_text(LATIN1)) == LATIN1


# -- whole or not at all; a full disk is one sentence ----------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_full_disk_keeps_the_finished_results_says_so_and_resume_finishes(monkeypatch, tmp_path, checkpoint,
                                                                            suffix):
    from bloodcell.inference import records as files
    from bloodcell.inference.predictor import Classifier

    folder = _cells(tmp_path / "cells", ["a_0.png", "a_1.png", "b_0.png", "b_1.png", "c_0.png", "c_1.png"])
    real_write = files.RecordWriter._write

    def disk_fills_on_c(self, records):
        real_write(self, records)  # part of it may reach the file before the disk is full
        if any("c_" in str(r.get("path")) for r in records):
            _full_disk()

    monkeypatch.setattr(files.RecordWriter, "_write", disk_fills_on_c)
    out = tmp_path / f"p{suffix}"
    result = _predict(checkpoint, folder, "--output", out)
    assert result.exit_code == 1 and isinstance(result.exception, OutputError), repr(result.exception)
    message = str(result.exception)
    assert "the disk is full" in message and "the 4 results finished are kept in" in message and "--resume" in message
    assert not out.exists()  # no half-written file under the output's name
    assert len(files.read_records(out)) == 4

    monkeypatch.setattr(files.RecordWriter, "_write", real_write)
    seen = []
    real_batch = Classifier._predict_batch
    monkeypatch.setattr(Classifier, "_predict_batch", lambda self, items, *a: seen.extend(items) or
                        real_batch(self, items, *a))
    resumed = _predict(checkpoint, folder, "--output", out, "--resume")
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    assert sorted(Path(str(item)).name for item in seen) == ["c_0.png", "c_1.png"]
    assert sorted(row["path"].rsplit("/", 1)[-1] for row in _rows(out)) == [
        "a_0.png", "a_1.png", "b_0.png", "b_1.png", "c_0.png", "c_1.png"]
    assert "4 kept from the earlier run" in resumed.output
    assert not files.partial_path(out).exists()


def test_a_full_disk_while_counting_is_one_sentence_and_keeps_the_finished_sample(monkeypatch, tmp_path, checkpoint):
    samples = tmp_path / "samples"
    cell_png(samples / "a" / "smear_a.png", size=96)
    cell_png(samples / "b" / "smear_b.png", seed=1, size=96)
    real_save = Image.Image.save

    def disk_fills_in_b(self, fp, *args, **kwargs):
        if "smear_b" in str(getattr(fp, "name", fp)):
            real_save(self, fp, *args, **kwargs)
            _full_disk()
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", disk_fills_in_b)
    out = tmp_path / "counts"
    result = runner.invoke(app, ["count", str(samples), "--output", str(out), "--detector", "classical",
                                 "--model", str(checkpoint)])
    assert result.exit_code == 1 and isinstance(result.exception, OutputError), repr(result.exception)
    message = str(result.exception)
    assert "the disk is full" in message and "1 of 2 samples were finished" in message and "--resume" in message
    assert (out / "a" / "counts.json").is_file() and not (out / "b" / "counts.json").exists()
    assert not list(out.rglob("*.part")) and not list((out / "b" / "annotated").iterdir())
    with (out / "samples.csv").open(newline="") as handle:
        assert [row["sample_id"] for row in csv.DictReader(handle)] == ["a"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(monkeypatch, tmp_path):
    from bloodcell import writing

    path = tmp_path / "counts.json"
    path.write_text("old")
    monkeypatch.setattr(writing.os, "replace", _full_disk)
    with pytest.raises(OutputError, match=r"counts.json: cannot write it \(the disk is full\); nothing was written"):
        writing.write_text(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["counts.json"]


def test_a_full_disk_during_heat_maps_keeps_the_ones_made(monkeypatch, tmp_path, checkpoint):
    from bloodcell.inference.predictor import Classifier

    folder = _cells(tmp_path / "cells", ["a.png", "b.png", "c.png"])
    real = Classifier.explain
    made = []

    def fills_on_the_second(self, image, out_path, class_index=None):
        if made:
            _full_disk()
        made.append(out_path)
        return real(self, image, out_path, class_index=class_index)

    monkeypatch.setattr(Classifier, "explain", fills_on_the_second)
    maps = tmp_path / "maps"
    result = _predict(checkpoint, folder, "--output", tmp_path / "p.csv", "--explain", maps)
    assert isinstance(result.exception, OutputError) and "the 1 heat maps made before are kept" in str(result.exception)
    assert sorted(p.name for p in maps.iterdir()) == ["a_gradcam.png", "index.csv"]
    assert "a.png,a_gradcam.png," in (maps / "index.csv").read_text() and "b.png" not in (maps / "index.csv").read_text()
    assert len(_rows(tmp_path / "p.csv")) == 3


# -- interruptions and --resume --------------------------------------------------------------------------------

def test_ctrl_c_in_predict_says_what_was_written_and_resume_finishes(monkeypatch, tmp_path, checkpoint):
    from bloodcell.inference.predictor import Classifier

    folder = _cells(tmp_path / "cells", ["a_0.png", "a_1.png", "b_0.png", "b_1.png"])
    real = Classifier._predict_batch

    def stop_on_b(self, items, *args):
        if any("b_" in str(item) for item in items):
            raise KeyboardInterrupt
        return real(self, items, *args)

    monkeypatch.setattr(Classifier, "_predict_batch", stop_on_b)
    out = tmp_path / "p.json"
    result = _predict(checkpoint, folder, "--output", out)
    assert result.exit_code == 130
    assert f"interrupted: {out} holds 2 results, 2 images are still to do" in result.output
    assert "--resume" in result.output and len(_rows(out)) == 2  # a whole JSON file of what was done
    monkeypatch.setattr(Classifier, "_predict_batch", real)
    (folder / "a_1.png").write_bytes(cell_png(tmp_path / "other.png", seed=9).read_bytes())  # changed since
    seen = []
    monkeypatch.setattr(Classifier, "_predict_batch", lambda self, items, *a: seen.extend(items) or real(self, items, *a))
    resumed = _predict(checkpoint, folder, "--output", out, "--resume")
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    assert sorted(Path(str(item)).name for item in seen) == ["a_1.png", "b_0.png", "b_1.png"]
    assert len(_rows(out)) == 4


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_resume_refuses_results_made_with_another_model_or_options(tmp_path, checkpoint, suffix):
    folder = _cells(tmp_path / "cells", ["a.png", "b.png"])
    out = tmp_path / f"p{suffix}"
    assert _predict(checkpoint, folder, "--output", out).exit_code == 0
    before = out.read_bytes()
    assert all("tiny.safetensors sha256:" in row["made_with"] and "tta=False" in row["made_with"] for row in _rows(out))
    other = save_tiny(tmp_path / "other.safetensors", note="another model")
    for changed in (["--tta"], ["--refer-below", "0.9"], ["--top-k", "2"], ["--engine", "onnx"]):
        refused = _predict(checkpoint, folder, "--output", out, "--resume", *changed)
        assert "holds results made with tiny.safetensors" in str(refused.exception), changed  # one sentence (main)
    refused = runner.invoke(app, ["predict", str(folder), "--model", str(other), "--output", str(out), "--resume"])
    assert "rerun with that model and those options, or without --resume" in str(refused.exception)
    assert out.read_bytes() == before  # nothing mixed in
    same = _predict(checkpoint, folder, "--output", out, "--resume")
    assert same.exit_code == 0 and "2 kept from the earlier run" in same.output


def test_a_killed_predict_leaves_a_part_file_that_resume_reads(tmp_path):
    from bloodcell.inference.records import partial_path, read_records

    out = tmp_path / "p.json"
    good = json.dumps({"path": "a.png", "label": "x", "sha256": "0" * 64})
    partial_path(out).write_text(f'[\n  {good},\n  {{"path": "b.png", "lab')  # killed mid-record
    assert [r["path"] for r in read_records(out)] == ["a.png"]


def _counting(monkeypatch, stop_after: int | None = None) -> list:
    """The photos ``count`` counts from now on (Ctrl-C once ``stop_after`` are counted)."""
    import bloodcell.workflows.count as workflow

    real, counted = getattr(workflow.count_image, "real", workflow.count_image), []

    def count(image, *args, **kwargs):
        if len(counted) == stop_after:
            raise KeyboardInterrupt
        counted.append(image)
        return real(image, *args, **kwargs)

    count.real = real
    monkeypatch.setattr(workflow, "count_image", count)
    return counted


def test_ctrl_c_in_count_says_what_was_finished_and_resume_counts_only_the_rest(monkeypatch, tmp_path, checkpoint):
    samples = tmp_path / "samples"
    for index, name in enumerate("abc"):
        cell_png(samples / name / f"smear_{name}.png", seed=index, size=96)
    _counting(monkeypatch, stop_after=1)
    out = tmp_path / "counts"
    args = ["count", str(samples), "--output", str(out), "--detector", "classical", "--model", str(checkpoint)]
    result = runner.invoke(app, args)
    assert result.exit_code == 130
    assert f"interrupted: 1 of 3 samples are finished in {out} (samples.csv)" in result.output
    assert "--resume" in result.output
    counted = _counting(monkeypatch)
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    assert len(counted) == 2  # b and c only
    with (out / "samples.csv").open(newline="") as handle:
        assert [row["sample_id"] for row in csv.DictReader(handle)] == ["a", "b", "c"]


def test_count_resume_refuses_samples_and_photos_counted_with_another_model_or_options(monkeypatch, tmp_path,
                                                                                       checkpoint):
    samples = tmp_path / "samples"
    for index, name in enumerate("ab"):
        cell_png(samples / name / f"smear_{name}.png", seed=index, size=96)
    cell_png(samples / "b" / "smear_b2.png", seed=5, size=96)
    _counting(monkeypatch, stop_after=2)  # a finished, b stopped after one of its two photos
    out = tmp_path / "counts"
    args = ["count", str(samples), "--output", str(out), "--detector", "classical", "--model", str(checkpoint)]
    assert runner.invoke(app, args).exit_code == 130
    assert "made_with" in json.loads((out / "a" / "counts.json").read_text())
    other = save_tiny(tmp_path / "other.safetensors", note="another model")
    for changed in (["--tta"], ["--refer-below", "0.9"], ["--model", str(other)]):
        counted = _counting(monkeypatch)
        refused = runner.invoke(app, [*args, "--resume", *changed])
        assert "rerun with that model and those options, or without --resume" in str(refused.exception), changed
        assert not counted  # nothing counted, nothing mixed in
    (out / "a" / "counts.json").unlink()  # only b's logged photo is left to refuse
    counted = _counting(monkeypatch)
    refused = runner.invoke(app, [*args, "--resume", "--tta"])
    assert f"{out / 'b'} was counted with classifier tiny.safetensors" in str(refused.exception)
    assert not counted  # refused before a was counted again
    counted = _counting(monkeypatch)
    assert runner.invoke(app, [*args, "--resume"]).exit_code == 0 and len(counted) == 2  # a again, and b's second


def test_a_full_disk_anywhere_else_is_one_sentence(monkeypatch, capsys):
    import bloodcell.cli.main as cli

    def disk_full():
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/best.safetensors")

    monkeypatch.setattr(cli, "app", disk_full)
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "runs/x/best.safetensors: cannot write it (the disk is full)" in err and "Traceback" not in err


def test_a_full_disk_while_writing_an_evaluation_keeps_each_file_whole(monkeypatch, tmp_path, checkpoint):
    from bloodcell import writing
    from bloodcell.workflows.evaluate import evaluate, write_report

    for index, name in enumerate(["lymphocyte", "monocyte", "neutrophil"] * 2):
        cell_png(tmp_path / "cells" / name / f"{index}.png", seed=index)
    evaluation = evaluate(checkpoint, dataset="folder", data_root=tmp_path / "cells", n_boot=2)
    real = os.replace

    def disk_fills_at_the_html(source, target):
        if str(target).endswith("report.html"):
            _full_disk()
        return real(source, target)

    monkeypatch.setattr(writing.os, "replace", disk_fills_at_the_html)
    out = tmp_path / "eval"
    with pytest.raises(OutputError, match=r"report.html: cannot write it \(the disk is full\)"):
        write_report(evaluation, out)
    assert not (out / "report.html").exists() and not list(out.rglob("*.part"))
    assert len(_rows(out / "predictions.csv")) == 6 and json.loads((out / "metrics.json").read_text())


def test_resume_keeps_the_photos_an_interrupted_sample_had_counted(monkeypatch, tmp_path, checkpoint):
    from bloodcell.workflows.count import PROGRESS

    photos = tmp_path / "S-17"
    for index in range(4):
        cell_png(photos / f"p{index}.png", seed=index, size=96)
    _counting(monkeypatch, stop_after=2)
    out = tmp_path / "counts"
    args = ["count", str(photos), "--output", str(out), "--detector", "classical", "--model", str(checkpoint)]
    assert runner.invoke(app, args).exit_code == 130
    assert not (out / "counts.json").exists() and len(list((out / "annotated").iterdir())) == 2
    counted = _counting(monkeypatch)
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    assert len(counted) == 2  # p2 and p3 only
    doc = json.loads((out / "counts.json").read_text())
    assert [Path(e["path"]).name for e in doc["images"]] == ["p0.png", "p1.png", "p2.png", "p3.png"]
    assert sorted(p.name for p in (out / "annotated").iterdir()) == ["p0.png", "p1.png", "p2.png", "p3.png"]
    assert not (out / PROGRESS).exists()


@pytest.mark.parametrize("sample_ids", [(os.fsdecode(b"\xe9chantillon-\xe9t\xe9"), "échantillon-été"),
                                        ("S" * 300 + "-a", "S" * 300 + "-b")])
def test_the_cells_zip_names_non_utf8_and_long_sample_ids_as_other_outputs_do(sample_ids):
    import base64
    import io
    import zipfile

    from bloodcell.service.review import _zip
    from bloodcell.smear.review import Correction, apply_corrections, corrected_cells

    box = {"label": "WBC", "score": 0.9, "x1": 40.0, "y1": 40.0, "x2": 90.0, "y2": 90.0, "wbc_type": "monocyte",
           "confidence": 0.4, "referred": True}
    photo = {"path": "a.png", "width": 160, "height": 120, "boxes": [box], "counts": {"RBC": 0, "WBC": 1, "Platelets": 0},
             "wbc_types": {"monocyte": 1}, "referred": [{**box, "reason": "low confidence"}]}
    doc = {"images": [photo], "sample": {"images": 1, "counts": {"RBC": 0, "WBC": 1, "Platelets": 0},
                                         "wbc_types": {"monocyte": 1}}}
    reviewed, decisions = apply_corrections(doc, [Correction("accept", item="1-1")], ["lymphocyte", "monocyte"])
    crops = {"1": Image.new("RGB", (160, 120), (225, 205, 210))}
    cells = [cell for sample_id in sample_ids
             for cell in corrected_cells(reviewed, decisions, crops, sample_id, ["lymphocyte", "monocyte"])]
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(_zip(cells))))
    names = archive.namelist()
    assert len(names) == 2 and len(set(names)) == 2  # two samples' cells never share a name
    for name in names:
        assert name.startswith("cells/monocyte/") and name.endswith("_box1.png" if len(name) < 100 else ".png")
        assert len(name.rpartition("/")[2].encode("utf-8")) <= 255
    if "été" in sample_ids[1]:
        assert sorted(names) == ["cells/monocyte/\\xe9chantillon-\\xe9t\\xe9_photo1_box1.png",
                                 "cells/monocyte/échantillon-été_photo1_box1.png"]


def test_sample_ids_in_any_script_get_their_own_folders(tmp_path):
    from bloodcell.workflows.count import Sample, sample_folder_names

    names = sample_folder_names([Sample(i, []) for i in ("血液", "мазок", "S 3 é", "a/../b", "S" * 300 + "-a",
                                                         "S" * 300 + "-b")])
    assert list(names.values())[:4] == ["血液", "мазок", "S_3_é", "a_.._b"]
    marks = sample_folder_names([Sample("रक्त", []), Sample("cafe\u0301", [])])  # combining marks, decomposed é
    assert list(marks.values()) == ["रक्त", "caf\u00e9"]
    assert len(set(names.values())) == 6 and all(len(n.encode()) <= 255 for n in names.values())
    with pytest.raises(Exception, match="would share the output folder"):
        sample_folder_names([Sample("a b", []), Sample("a/b", [])])


def test_a_full_disk_inside_the_heat_map_writer_names_the_heat_map_not_a_temporary_file(monkeypatch, tmp_path, checkpoint):
    import bloodcell.inference.explain as explain

    folder = _cells(tmp_path / "cells", ["a.png"])
    real = explain.save_image

    def full(image, path, *args, **kwargs):  # the disk fills while the picture is written (atomic_file's OSError)
        return real(_Unsaveable(), path, *args, **kwargs)

    monkeypatch.setattr(explain, "save_image", full)
    maps = tmp_path / "maps"
    result = _predict(checkpoint, folder, "--output", tmp_path / "p.csv", "--explain", maps)
    assert isinstance(result.exception, OutputError), result.output
    message = str(result.exception)
    assert "a_gradcam.png: cannot write it (the disk is full)" in message and ".part" not in message
    assert "the 0 heat maps made before are kept" in message
    assert not [p for p in maps.iterdir() if p.suffix == ".png"] and len(_rows(tmp_path / "p.csv")) == 1


class _Unsaveable:
    def save(self, *_args, **_kwargs):
        _full_disk()
