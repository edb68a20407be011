"""Hardening (issue 30): every command's outputs are written whole or not at all, and a full disk is one sentence.

The disk fills as an output is put in place (``os.replace`` fails with ENOSPC): the file it would have
replaced keeps its old content, no temporary file is left beside it, and the error names the file.
"""

from __future__ import annotations

import errno
import os

import pytest
from hardening_helpers import CLASSES, cell_png, save_tiny
from typer.testing import CliRunner

from bloodcell.cli.main import app
from bloodcell.errors import OutputError

runner = CliRunner()
FULL = r"cannot write it \(the disk is full\); nothing was written there"


@pytest.fixture()
def disk_full_at(monkeypatch):
    """``disk_full_at(name)``: from now on, putting a file named ``name`` in place fails with ENOSPC."""
    real = os.replace

    def arm(name: str) -> None:
        def replace(source, target, *args, **kwargs):
            if os.path.basename(os.fspath(target)) == name:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(source, target, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace)
    return arm


def _only(folder, *names):
    """``folder`` holds exactly ``names`` (no temporary file left by a failed write)."""
    assert sorted(os.listdir(folder)) == sorted(names)


HISTORY = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.1, "val_acc": 0.4, "lr": 0.01,
            "seconds": 2.0, "images_per_s": 10.0}]


def _metrics(path):
    from bloodcell.train.run import write_metrics_csv
    write_metrics_csv(HISTORY, path)


def _config(path):
    from bloodcell.train.config import TrainConfig, save_config
    save_config(TrainConfig(), path)


def _curves(path):
    from bloodcell.train.history import plot_curves
    plot_curves(HISTORY, path)


@pytest.mark.parametrize(("name", "write"), [("metrics.csv", _metrics), ("config.json", _config),
                                             ("curves.png", _curves)])
def test_a_training_runs_records_are_kept_whole_on_a_full_disk(tmp_path, disk_full_at, name, write):
    write(tmp_path / name)
    before = (tmp_path / name).read_bytes()
    disk_full_at(name)
    with pytest.raises(OutputError, match=f"{name}: {FULL}"):
        write(tmp_path / name)
    assert (tmp_path / name).read_bytes() == before
    _only(tmp_path, name)


def test_a_benchmark_table_is_whole_or_absent_on_a_full_disk(tmp_path, disk_full_at):
    from bloodcell.workflows.benchmark import write_comparison

    row = {"model": "tiny", "pretrained": False, "accuracy": 0.5, "macro_f1": 0.4, "kappa": 0.3, "ece": 0.1,
           "parameters": 100, "train_seconds": 3.0, "epochs": 1, "test_images": 6, "images_per_s": 50.0}
    protocol = {"manifest": "m.csv", "manifest_sha256": "0" * 64, "taxonomy": "pbc8", "augment": "none", "seed": 0,
                "budget_s": 10, "speed_images": 6, "speed_threads": 1, "machine": "test"}
    disk_full_at("comparison.md")
    with pytest.raises(OutputError, match=f"comparison.md: {FULL}"):
        write_comparison([row], protocol, tmp_path)
    _only(tmp_path, "comparison.csv")
    assert "tiny" in (tmp_path / "comparison.csv").read_text()


def test_a_reproduction_record_keeps_the_last_one_whole_on_a_full_disk(tmp_path, monkeypatch, disk_full_at):
    import bloodcell.workflows.reproduce as rep

    monkeypatch.setattr(rep, "missing_weights", lambda name, settings: "no ImageNet weights on this machine")
    rep.reproduce_paper("khalil2022-vgg16", tmp_path, rep.Settings())
    folder = tmp_path / "khalil2022-vgg16"
    before = (folder / rep.RESULT_FILE).read_bytes()
    disk_full_at(rep.RESULT_FILE)
    with pytest.raises(OutputError, match=f"{rep.RESULT_FILE}: {FULL}"):
        rep.reproduce_paper("khalil2022-vgg16", tmp_path, rep.Settings())
    assert (folder / rep.RESULT_FILE).read_bytes() == before
    _only(folder, rep.RESULT_FILE, "reproduction.md")


def test_a_split_manifest_on_a_full_disk_is_one_sentence_and_no_file(tmp_path, disk_full_at):
    for index in range(12):
        cell_png(tmp_path / "cells" / CLASSES[index % 3] / f"{index}.png", seed=index)
    out = tmp_path / "manifests"
    out.mkdir()
    disk_full_at("m.csv")
    result = runner.invoke(app, ["data", "split", "folder", "--data-root", str(tmp_path / "cells"),
                                 "--output", str(out / "m.csv")])
    assert result.exit_code == 1 and isinstance(result.exception, OutputError), repr(result.exception)
    assert str(result.exception) == f"{out / 'm.csv'}: cannot write it (the disk is full); nothing was written there"
    _only(out)


def test_an_onnx_export_on_a_full_disk_leaves_no_model_file(tmp_path, disk_full_at):
    from bloodcell.inference.onnx import export_onnx

    checkpoint = save_tiny(tmp_path / "tiny.safetensors")
    out = tmp_path / "onnx"
    out.mkdir()
    disk_full_at("tiny.onnx")
    with pytest.raises(OutputError, match=f"tiny.onnx: {FULL}"):
        export_onnx(checkpoint, out / "tiny.onnx")
    _only(out)


def _fills_on_write(monkeypatch, name: str) -> None:
    """Writing a file whose name starts with ``name`` fails with ENOSPC after half its bytes (a real full disk)."""
    import builtins

    real_open = builtins.open

    class Filling:
        def __init__(self, handle):
            self._handle = handle

        def write(self, data):
            self._handle.write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, attr):
            return getattr(self._handle, attr)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._handle.close()

    def filling_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode and os.path.basename(os.fspath(file)).lstrip(".").startswith(name):
            return Filling(handle)
        return handle

    monkeypatch.setattr(builtins, "open", filling_open)
    import io
    monkeypatch.setattr(io, "open", filling_open)


def test_a_full_disk_while_saving_the_training_state_keeps_the_previous_one(tmp_path, monkeypatch):
    import torch

    from bloodcell.train.run import STATE_FILE, load_state, save_state

    save_state(tmp_path / STATE_FILE, {"format": "test/1", "epoch": 1, "w": torch.ones(1000)})
    _fills_on_write(monkeypatch, STATE_FILE)
    with pytest.raises(OutputError, match=f"{STATE_FILE}: {FULL}"):
        save_state(tmp_path / STATE_FILE, {"format": "test/1", "epoch": 2, "w": torch.ones(1000)})
    monkeypatch.undo()
    assert load_state(tmp_path / STATE_FILE, "test/1")["epoch"] == 1
    _only(tmp_path, STATE_FILE)


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    from bloodcell.checkpoint import load_checkpoint

    path = save_tiny(tmp_path / "best.safetensors", note="first")
    _fills_on_write(monkeypatch, "best.safetensors")
    with pytest.raises(OutputError, match=f"best.safetensors: {FULL}"):
        save_tiny(path, note="second")
    monkeypatch.undo()
    assert load_checkpoint(path).meta["note"] == "first"
    _only(tmp_path, "best.safetensors", "best.json")


def test_a_temporary_file_left_by_a_killed_write_does_not_block_a_fresh_run(tmp_path):
    from bloodcell.train.run import check_run_dir, clear_run_files

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / ".metrics.0123abcd.part").write_text("epoch,tra")
    check_run_dir(tmp_path, ("config.json", "metrics.csv"), resume=False, overwrite=False)
    clear_run_files(tmp_path, ("config.json", "metrics.csv"))
    _only(tmp_path)


def test_calibrate_ood_writes_the_guarded_copy_whole_and_leaves_the_model_alone(tmp_path, disk_full_at):
    from bloodcell.checkpoint import load_checkpoint

    for index in range(30):
        cell_png(tmp_path / "cells" / CLASSES[index % 3] / f"{index}.png", seed=index)
    cells = str(tmp_path / "cells")
    assert runner.invoke(app, ["data", "split", "folder", "--data-root", cells, "--output", str(tmp_path / "m.csv"),
                               "--ratios", "0.4,0.6,0"]).exit_code == 0
    model = save_tiny(tmp_path / "tiny.safetensors")
    before = model.read_bytes()
    out = tmp_path / "guarded"
    out.mkdir()
    args = ["calibrate-ood", "--model", str(model), "--manifest", str(tmp_path / "m.csv"), "--data-root", cells,
            "--limit", "10", "--output", str(out / "g.safetensors")]
    assert runner.invoke(app, args).exit_code == 0
    assert "ood" in load_checkpoint(out / "g.safetensors").meta and model.read_bytes() == before
    (out / "g.safetensors").unlink()
    (out / "g.json").unlink()
    disk_full_at("g.safetensors")
    result = runner.invoke(app, args)
    assert isinstance(result.exception, OutputError) and "g.safetensors: cannot write it (the disk is full)" in str(
        result.exception)
    _only(out)
    assert model.read_bytes() == before
