"""The run-folder, schedule, metrics and state helpers shared by both trainers (bloodcell.train.run)."""

from __future__ import annotations

import csv
from dataclasses import replace

import pytest
import torch

from bloodcell.errors import CheckpointError, ConfigError
from bloodcell.train import engine
from bloodcell.train.run import (
    STATE_FILE,
    build_schedule,
    check_run_dir,
    clear_run_files,
    load_state,
    save_state,
    write_metrics_csv,
)
from bloodcell.workflows.train import run_training

RUN_FILES = ("config.json", "metrics.csv", STATE_FILE, "best.safetensors", "best.json")


def _killed_during_first_save(folder):
    """What a kill while first writing last.pt leaves: config.json, epoch-1 files and a stale last.pt.tmp."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "metrics.csv").write_text("epoch\n1\n")
    (folder / "best.safetensors").write_bytes(b"weights")
    (folder / f"{STATE_FILE}.tmp").write_bytes(b"half a state")
    return folder


def test_a_run_killed_during_its_first_save_is_started_fresh_and_resume_says_so(tmp_path):
    run = _killed_during_first_save(tmp_path / "run")
    with pytest.raises(ConfigError, match="no complete last.pt.*without --resume"):
        check_run_dir(run, RUN_FILES, resume=True, overwrite=False)
    check_run_dir(run, RUN_FILES, resume=False, overwrite=False)  # no --overwrite needed: nothing to lose
    clear_run_files(run, RUN_FILES)
    assert not any(run.iterdir())


def test_run_folder_verdicts(tmp_path):
    with pytest.raises(ConfigError, match="no last.pt to resume from; start a new run without --resume"):
        check_run_dir(tmp_path / "missing", RUN_FILES, resume=True, overwrite=False)
    check_run_dir(tmp_path / "missing", RUN_FILES, resume=False, overwrite=False)

    done = tmp_path / "done"
    done.mkdir()
    save_state(done / STATE_FILE, {"format": "x"})
    (done / "config.json").write_text("{}")
    check_run_dir(done, RUN_FILES, resume=True, overwrite=False)
    with pytest.raises(ConfigError, match="--resume to continue it or --overwrite"):
        check_run_dir(done, RUN_FILES, resume=False, overwrite=False)
    check_run_dir(done, RUN_FILES, resume=False, overwrite=True)

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    (other / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="not empty.*notes.txt"):
        check_run_dir(other, RUN_FILES, resume=False, overwrite=False)
    clear_run_files(other, RUN_FILES)  # --overwrite: only the run's own files go
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        check_run_dir(tmp_path / "file", RUN_FILES, resume=False, overwrite=False)


def test_classifier_run_killed_during_its_first_save(base_config, tmp_path, monkeypatch):
    config = replace(base_config, epochs=1)

    def killed(path, state):
        (path.parent / f"{path.name}.tmp").write_bytes(b"half a state")
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "save_state", killed)
    with pytest.raises(KeyboardInterrupt):
        run_training(config)
    monkeypatch.undo()
    run = tmp_path / "run"
    assert (run / "config.json").is_file() and not (run / STATE_FILE).exists()
    with pytest.raises(ConfigError, match="no complete last.pt.*without --resume"):
        run_training(config, resume=True)
    result = run_training(config)  # a fresh start needs no --overwrite
    assert [row["epoch"] for row in result.history] == [1] and (run / STATE_FILE).is_file()
    assert not (run / f"{STATE_FILE}.tmp").exists()


def _lrs(schedule: str, epochs: int = 2, steps: int = 5, warmup: float = 0.0) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_schedule(optimizer, schedule, epochs, steps, warmup)
    lrs = []
    for _ in range(epochs * steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_schedules():
    assert _lrs("constant") == [1.0] * 10
    cosine = _lrs("cosine")
    assert cosine[0] == 1.0 and all(a > b for a, b in zip(cosine, cosine[1:])) and cosine[-1] < 0.05
    warm = _lrs("cosine", warmup=1.0)  # 5 warmup steps rising to the peak, then the decay
    assert warm[:6] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    onecycle = _lrs("onecycle")
    assert max(onecycle) == pytest.approx(1.0, rel=1e-3) and onecycle[0] < 0.1 and onecycle[-1] < 0.01
    with pytest.raises(ConfigError, match="schedule"):
        _lrs("linear")


def test_metrics_csv_and_state_round_trip(tmp_path):
    history = [{"epoch": 1, "loss": 0.5, "extra": "a"}, {"epoch": 2, "loss": 1 / 3, "new": 1}]
    write_metrics_csv(history, tmp_path / "all.csv")
    rows = list(csv.DictReader(open(tmp_path / "all.csv")))
    assert list(rows[0]) == ["epoch", "loss", "extra", "new"] and rows[1]["loss"] == "0.333333"
    write_metrics_csv(history, tmp_path / "some.csv", ("epoch", "loss"))
    assert list(csv.DictReader(open(tmp_path / "some.csv")))[0] == {"epoch": "1", "loss": "0.5"}

    state = {"format": "test-state/1", "epoch": 3, "weights": torch.arange(4), "history": history}
    save_state(tmp_path / STATE_FILE, state)
    assert not (tmp_path / f"{STATE_FILE}.tmp").exists()
    loaded = load_state(tmp_path / STATE_FILE, "test-state/1")
    assert loaded["epoch"] == 3 and torch.equal(loaded["weights"], torch.arange(4)) and loaded["history"] == history
    with pytest.raises(CheckpointError, match="not a bloodcell training state"):
        load_state(tmp_path / STATE_FILE, "other/1")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_state(tmp_path / "bad.pt", "test-state/1")
    torch.save({"format": "test-state/1", "code": _lrs}, tmp_path / "unsafe.pt")  # not loadable with weights_only
    with pytest.raises(CheckpointError, match="cannot read"):
        load_state(tmp_path / "unsafe.pt", "test-state/1")
