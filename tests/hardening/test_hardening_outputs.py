"""Hardening item 2: output places are checked before any work, and results are written as they come.

The tests run as root, where chmod does not stop writing: an unwritable place is a path whose
parent is a regular file.
"""

from __future__ import annotations

import csv
import json

import pytest
from hardening_helpers import cell_png, save_tiny
from PIL import Image
from typer.testing import CliRunner

from bloodcell.cli.main import app
from bloodcell.errors import ConfigError

runner = CliRunner()


def _forbid(monkeypatch, module, *names):
    """Make ``module.name`` fail the test if it is called (work that must not start)."""
    for name in names:
        def refuse(*_a, _name=name, **_k):
            raise AssertionError(f"{_name} ran before the output place was checked")
        monkeypatch.setattr(module, name, refuse)


@pytest.fixture()
def blocker(tmp_path):
    """A regular file: nothing can be created under it."""
    path = tmp_path / "file.txt"
    path.write_text("a file, not a folder")
    return path


@pytest.fixture()
def image(tmp_path):
    return cell_png(tmp_path / "cells" / "a.png")


def _refused(result, *words):
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, ConfigError), repr(result.exception)
    for word in words:
        assert word in str(result.exception), str(result.exception)


@pytest.mark.parametrize("where", ["a folder named X.csv", "under a file", "a folder named X.json"])
def test_predict_output_is_checked_before_the_model_is_loaded(monkeypatch, tmp_path, blocker, image, where):
    from bloodcell.inference import predictor

    _forbid(monkeypatch, predictor, "load", "read_image")
    out = {"a folder named X.csv": tmp_path / "X.csv", "under a file": blocker / "out.csv",
           "a folder named X.json": tmp_path / "X.json"}[where]
    if where.startswith("a folder"):
        out.mkdir()
    _refused(runner.invoke(app, ["predict", str(image), "--output", str(out)]),
             str(out) if where.startswith("a folder") else f"{blocker}: is a file")


def test_predict_explain_folder_is_checked_before_the_model_is_loaded(monkeypatch, blocker, image):
    from bloodcell.inference import predictor

    _forbid(monkeypatch, predictor, "load")
    _refused(runner.invoke(app, ["predict", str(image), "--explain", str(blocker / "cams")]), "LayerCAM")
    _refused(runner.invoke(app, ["predict", str(image), "--explain", str(blocker)]), "is a file")


def test_count_output_is_checked_before_any_photo_is_read(monkeypatch, blocker, image):
    import bloodcell.workflows.count as workflow
    from bloodcell.inference import predictor

    _forbid(monkeypatch, predictor, "load")
    _forbid(monkeypatch, workflow, "count_samples", "samples_from_folders")
    _refused(runner.invoke(app, ["count", str(image), "--output", str(blocker / "counts"),
                                 "--detector", "classical"]), "counts")
    _refused(runner.invoke(app, ["count", str(image), "--output", str(blocker), "--detector", "classical"]), "is a file")


def test_evaluate_output_is_checked_before_anything_is_scored(monkeypatch, blocker, tmp_path):
    import bloodcell.workflows.evaluate as workflow

    _forbid(monkeypatch, workflow, "evaluate")
    _refused(runner.invoke(app, ["evaluate", "--output", str(blocker / "report"), "--dataset", "folder",
                                 "--data-root", str(tmp_path)]), "evaluation report")


def test_export_output_is_checked_before_the_model_is_loaded(monkeypatch, blocker):
    import bloodcell.inference.onnx as onnx
    import bloodcell.workflows.calibrate as calibrate

    _forbid(monkeypatch, onnx, "export_onnx")
    _forbid(monkeypatch, calibrate, "int8_calibration_batches")
    _refused(runner.invoke(app, ["export", "--output", str(blocker / "model.onnx")]), "ONNX model")


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_failure_in_the_third_batch_keeps_the_first_two_batches(monkeypatch, tmp_path, suffix):
    from bloodcell.inference.predictor import Classifier

    folder = tmp_path / "cells"
    for index, stem in enumerate(["a_0", "a_1", "b_0", "b_1", "c_0", "c_1"]):
        cell_png(folder / f"{stem}.png", seed=index)
    checkpoint = save_tiny(tmp_path / "tiny.safetensors")
    real = Classifier._predict_batch

    def third_batch_fails(self, items, *args):
        if any("c_" in str(item) for item in items):
            raise RuntimeError("the engine failed on the third batch")
        return real(self, items, *args)

    monkeypatch.setattr(Classifier, "_predict_batch", third_batch_fails)
    out = tmp_path / f"predictions{suffix}"
    result = runner.invoke(app, ["predict", str(folder), "--model", str(checkpoint), "--output", str(out),
                                 "--batch-size", "2"])
    assert isinstance(result.exception, RuntimeError) and result.exit_code != 0
    if suffix == ".csv":
        with out.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = json.loads(out.read_text())
    assert [row["path"].rsplit("/", 1)[-1] for row in rows] == ["a_0.png", "a_1.png", "b_0.png", "b_1.png"]
    assert all(row["label"] and not row["error"] for row in rows)


def test_a_failure_in_the_second_sample_keeps_the_first_samples_counts(monkeypatch, tmp_path):
    import bloodcell.workflows.count as workflow

    samples = tmp_path / "samples"
    cell_png(samples / "a" / "smear_a.png", size=96)
    cell_png(samples / "b" / "smear_b.png", seed=1, size=96)
    real = workflow.count_image
    with Image.open(samples / "b" / "smear_b.png") as b:
        b_pixel = b.convert("RGB").getpixel((0, 0))

    def fails_on_b(image, *args, **kwargs):
        if image.getpixel((0, 0)) == b_pixel:
            raise RuntimeError("the detector failed on the second sample")
        return real(image, *args, **kwargs)

    monkeypatch.setattr(workflow, "count_image", fails_on_b)
    out = tmp_path / "counts"
    result = runner.invoke(app, ["count", str(samples), "--output", str(out), "--detector", "classical",
                                 "--model", str(save_tiny(tmp_path / "tiny.safetensors"))])
    assert isinstance(result.exception, RuntimeError)
    with (out / "samples.csv").open(newline="") as handle:
        assert [row["sample_id"] for row in csv.DictReader(handle)] == ["a"]
    assert json.loads((out / "a" / "counts.json").read_text())["images"][0]["path"].endswith("smear_a.png")
    assert (out / "a" / "annotated" / "smear_a.png").is_file()


@pytest.mark.parametrize("command", [
    ["evaluate", "--dataset", "folder", "--data-root", "cells"],
    ["benchmark", "--models", "resnet18", "--manifest", "m.csv", "--budget", "1"],
    ["reproduce", "asghar2023-cnn"],
])
def test_zero_bootstrap_resamples_are_refused_before_any_work(tmp_path, command):
    """The bootstrap needs at least one resample: `--n-boot 0` used to be accepted and to fail only after every
    model was trained and every image scored."""
    out = tmp_path / "out"
    result = runner.invoke(app, [*command, "--output", str(out), "--n-boot", "0"])
    assert result.exit_code == 2 and "--n-boot" in result.output
    assert not out.exists()
