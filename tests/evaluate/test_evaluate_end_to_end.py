"""``evaluate`` end to end with a tiny checkpoint on a synthetic PBC-shaped dataset."""

from __future__ import annotations

import csv
import json

import pytest
from evaluate_fixtures import make_pbc_dataset, trained_tiny_checkpoint
from typer.testing import CliRunner

from bloodcell.errors import ConfigError
from bloodcell.evaluation.evaluate import VALIDATION_LABEL
from bloodcell.provenance import file_sha256
from bloodcell.report.plots import EVALUATION_FIGURES
from bloodcell.workflows.evaluate import evaluate, write_report


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pbcdata")
    manifest = make_pbc_dataset(root, {"train": 1, "val": 3, "test": 6}, corrupt=1)
    good = trained_tiny_checkpoint(root / "good.safetensors", temperature=1.7)
    weak = trained_tiny_checkpoint(root / "weak.safetensors", weak=True)
    return root, manifest, good, weak


def test_report_files_provenance_and_skipped(setup, tmp_path):
    root, manifest, good, _ = setup
    ev = evaluate(good, dataset="pbc", manifest=manifest, data_root=root, n_boot=100)
    files = write_report(ev, tmp_path)
    result = json.loads(files["metrics"].read_text())
    prov = result["provenance"]
    assert result["label"] == "TEST RESULT" and result["is_test_result"]
    assert prov["checkpoint_sha256"] == file_sha256(good)
    assert prov["manifest_sha256"] == file_sha256(manifest)
    assert prov["temperature"] == pytest.approx(1.7) and prov["bloodcell_version"]
    assert result["counts"] == {"images": 49, "scored": 48, "skipped": 1, "unmapped": 0,
                                "unspecified_fine_label": 0, "outside_taxonomy": 0, "repeated_rows": 0}
    assert [s["path"] for s in result["skipped"]] == ["basophil/BA_corrupt0.png"]
    assert result["metrics"]["accuracy"] > 0.9  # colours are easy
    md = files["markdown"].read_text()
    assert "BA_corrupt0.png" in md and file_sha256(good) in md and file_sha256(manifest) in md
    for key in EVALUATION_FIGURES:
        assert (tmp_path / "figures" / f"{key}.png").is_file()
        assert f"id='fig-{key}'" in files["html"].read_text()
    with files["predictions"].open() as handle:
        assert len(list(csv.DictReader(handle))) == 48


def test_temperature_changes_calibration_not_accuracy(setup):
    root, manifest, good, _ = setup
    ev = evaluate(good, dataset="pbc", manifest=manifest, data_root=root, n_boot=20)
    m, raw = ev.result["metrics"], ev.result["uncalibrated"]
    assert m["calibration"]["ece"] != pytest.approx(raw["ece"])
    # T = 1.7 softens: mean confidence lower than the uncalibrated one would be
    assert m["calibration"]["mean_confidence"] < 1.0


def test_gallery_shows_misclassified_images(setup, tmp_path):
    root, manifest, _, weak = setup
    ev = evaluate(weak, dataset="pbc", manifest=manifest, data_root=root, n_boot=20, tta=True)
    errors = ev.result["misclassified"]
    assert errors and all(e["true"] != e["predicted"] for e in errors)
    assert [e["confidence"] for e in errors] == sorted((e["confidence"] for e in errors), reverse=True)
    page = write_report(ev, tmp_path)["html"].read_text()
    assert page.count("<figure class='error'>") == min(len(errors), 24)
    first = errors[0]
    assert f"true: {first['true']} · predicted: {first['predicted']}" in page
    assert ev.result["provenance"]["tta"] is True


def test_refuses_train_and_unflagged_validation(setup):
    root, manifest, good, _ = setup
    with pytest.raises(ConfigError, match="train split is never evaluated"):
        evaluate(good, dataset="pbc", manifest=manifest, data_root=root, split="train", allow_non_test=True)
    with pytest.raises(ConfigError, match="--allow-non-test"):
        evaluate(good, dataset="pbc", manifest=manifest, data_root=root, split="val")


def test_validation_is_labelled_everywhere(setup, tmp_path):
    root, manifest, good, _ = setup
    ev = evaluate(good, dataset="pbc", manifest=manifest, data_root=root, split="val", allow_non_test=True, n_boot=20)
    files = write_report(ev, tmp_path)
    result = json.loads(files["metrics"].read_text())
    assert result["label"] == VALIDATION_LABEL and result["is_test_result"] is False
    assert result["counts"]["scored"] == 24
    assert VALIDATION_LABEL in files["markdown"].read_text()
    assert files["html"].read_text().count(VALIDATION_LABEL) >= 4


def test_limit_takes_a_stratified_subset(setup):
    root, manifest, good, _ = setup
    ev = evaluate(good, dataset="pbc", manifest=manifest, data_root=root, limit=16, n_boot=20)
    assert ev.result["counts"]["scored"] == 16
    assert all(row["support"] == 2 for row in ev.result["metrics"]["per_class"])
    assert any("stratified subset" in note for note in ev.result["notes"])


def test_cli_evaluate_and_refusal(setup, tmp_path):
    root, manifest, good, _ = setup
    from bloodcell.cli.main import app
    runner = CliRunner()
    args = ["evaluate", "--model", str(good), "--manifest", str(manifest), "--data-root", str(root), "--n-boot", "20"]
    ok = runner.invoke(app, args + ["--output", str(tmp_path / "ok")])
    assert ok.exit_code == 0, ok.output
    assert "TEST RESULT" in ok.output and (tmp_path / "ok" / "report.html").is_file()
    refused = runner.invoke(app, args + ["--output", str(tmp_path / "val"), "--split", "val"])
    assert refused.exit_code != 0 and isinstance(refused.exception, ConfigError)
    assert not (tmp_path / "val" / "metrics.json").exists()


def test_the_onnx_engine_scores_as_torch_does(setup, tmp_path):
    root, manifest, good, _ = setup
    torch_run = evaluate(good, dataset="pbc", manifest=manifest, data_root=root, n_boot=20)
    onnx_run = evaluate(good, dataset="pbc", manifest=manifest, data_root=root, n_boot=20, engine="onnx", threads=2)
    assert onnx_run.result["provenance"]["engine"] == "onnx" and torch_run.result["provenance"]["engine"] == "torch"
    assert [r["predicted"] for r in onnx_run.predictions] == [r["predicted"] for r in torch_run.predictions]
    assert [r["path"] for r in onnx_run.predictions] == [r["path"] for r in torch_run.predictions]
    assert onnx_run.result["counts"] == torch_run.result["counts"]
    from bloodcell.cli.main import app
    args = ["evaluate", "--model", str(good), "--manifest", str(manifest), "--data-root", str(root), "--n-boot", "20",
            "--engine", "onnx", "--threads", "1", "--tta", "-o", str(tmp_path / "onnx")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "onnx" / "metrics.json").read_text())["provenance"]["tta"] is True


def test_an_exported_onnx_model_is_evaluated_as_its_checkpoint(setup, tmp_path):
    """A lab checks the file it deploys: the .onnx scores as its checkpoint does, and the report names that file."""
    from bloodcell.checkpoint import read_checkpoint_meta
    from bloodcell.inference.onnx import export_onnx

    root, manifest, good, _ = setup
    exported = export_onnx(good, tmp_path / "good.onnx")
    from_checkpoint = evaluate(good, dataset="pbc", manifest=manifest, data_root=root, n_boot=20)
    from_onnx = evaluate(exported, dataset="pbc", manifest=manifest, data_root=root, n_boot=20)
    assert [r["predicted"] for r in from_onnx.predictions] == [r["predicted"] for r in from_checkpoint.predictions]
    assert from_onnx.result["counts"] == from_checkpoint.result["counts"]
    provenance = from_onnx.result["provenance"]
    assert provenance["engine"] == "onnx" and provenance["checkpoint_sha256"] == file_sha256(exported)
    assert provenance["model_kind"] == "onnx" and from_checkpoint.result["provenance"]["model_kind"] == "torch"
    assert provenance["temperature"] == pytest.approx(1.7)
    if read_checkpoint_meta(good).get("manifest_sha256"):
        assert not any("another manifest" in note for note in from_onnx.result["notes"])
    from bloodcell.cli.main import app
    result = CliRunner().invoke(app, ["evaluate", "--model", str(exported), "--manifest", str(manifest), "--data-root",
                                      str(root), "--n-boot", "20", "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "TEST RESULT" in result.output and (tmp_path / "report" / "report.html").is_file()


def test_a_full_disk_while_writing_figures_says_which_files_are_whole(setup, tmp_path, monkeypatch):
    import bloodcell.workflows.evaluate as workflow
    from bloodcell.errors import OutputError

    root, manifest, good, _ = setup
    evaluation = evaluate(good, dataset="pbc", manifest=manifest, data_root=root, n_boot=20)
    real = workflow.atomic_file

    def full_for_figures(path, mode="w", **options):
        if str(path).endswith(".png"):
            raise OutputError(f"{path}: cannot write it (the disk is full); nothing was written there")
        return real(path, mode, **options)

    monkeypatch.setattr(workflow, "atomic_file", full_for_figures)
    with pytest.raises(OutputError) as refused:
        write_report(evaluation, tmp_path / "report")
    assert "report holds predictions.csv, metrics.json whole, not the rest of the report" in str(refused.value)
    assert sorted(p.name for p in (tmp_path / "report").iterdir() if p.is_file()) == ["metrics.json", "predictions.csv"]
