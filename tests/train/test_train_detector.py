"""The smear-detector trainer: box transforms, thresholds, the workflow's splits, a tiny run, resume."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from detector_fixtures import make_cbc_tree
from typer.testing import CliRunner

from bloodcell.checkpoint import load_checkpoint
from bloodcell.data import smears
from bloodcell.data.boxes import SMEAR_LABELS as LABELS
from bloodcell.data.boxes import Box
from bloodcell.data.smear_manifest import read_smear_manifest
from bloodcell.errors import ConfigError
from bloodcell.train import detector as detector_engine
from bloodcell.train.detector import (
    STATE_FORMAT,
    DetectorTrainConfig,
    Sample,
    crop_boxes,
    hflip_boxes,
    rot90_boxes,
    select_thresholds,
    vflip_boxes,
)
from bloodcell.train.run import STATE_FILE
from bloodcell.workflows import detector as detector_workflow
from bloodcell.workflows.detector import load_split_samples, red_cell_size


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _box_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_box_transforms_match_image_operations():
    image = np.zeros((30, 40), np.uint8)  # height 30, width 40
    image[5:12, 20:33] = 1
    box = np.array([[20.0, 5.0, 33.0, 12.0]])
    assert hflip_boxes(box, 40)[0].tolist() == _box_of(image[:, ::-1])
    assert vflip_boxes(box, 30)[0].tolist() == _box_of(image[::-1])
    for k in range(4):
        assert rot90_boxes(box, 40, 30, k)[0].tolist() == _box_of(np.rot90(image, k)), k
    boxes, labels = crop_boxes(np.array([[20.0, 5.0, 33.0, 12.0], [0.0, 0.0, 6.0, 6.0]]), np.array([0, 2]), 10, 0, 20)
    assert labels.tolist() == [0] and boxes[0].tolist() == [10.0, 5.0, 20.0, 12.0]


def _sample(counts: list[int]) -> Sample:
    boxes = [(10.0 * i, 0.0, 10.0 * i + 8, 8.0) for i in range(sum(counts))]
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    return Sample("s", np.zeros((8, 8, 3), np.uint8), np.array(boxes, np.float32).reshape(-1, 4), np.array(labels))


def test_select_thresholds_minimises_count_error():
    truths = [_sample([2, 1, 0]), _sample([1, 0, 1])]
    dets = [
        [Box("RBC", 0, 0, 8, 8, 0.9), Box("RBC", 10, 0, 18, 8, 0.6), Box("RBC", 50, 50, 60, 60, 0.3),
         Box("WBC", 20, 0, 28, 8, 0.8), Box("Platelets", 90, 90, 99, 99, 0.4)],
        [Box("RBC", 0, 0, 8, 8, 0.7), Box("RBC", 70, 70, 80, 80, 0.2),
         Box("Platelets", 10, 0, 18, 8, 0.5), Box("WBC", 40, 40, 50, 50, 0.3)],
    ]
    chosen = select_thresholds(dets, truths, "count")
    assert 0.3 < chosen["RBC"]["threshold"] <= 0.6 and chosen["RBC"]["mae"] == 0 and chosen["RBC"]["f1"] == 1
    assert 0.3 < chosen["WBC"]["threshold"] <= 0.8 and chosen["WBC"]["mae"] == 0
    assert 0.4 < chosen["Platelets"]["threshold"] <= 0.5 and chosen["Platelets"]["count_accuracy"] == 1
    with pytest.raises(ConfigError):
        select_thresholds(dets, truths, "accuracy")


def test_red_cell_size_prefers_whole_red_cells_then_white_cells():
    boxes = np.array([[0, 0, 30, 30], [10, 10, 50, 50], [60, 60, 100, 100], [100, 10, 140, 50], [0, 80, 84, 164]],
                     np.float32)
    assert red_cell_size(boxes, np.array([0, 0, 0, 0, 1]), 200, 200) == pytest.approx(40.0)  # the cut cell left out
    assert red_cell_size(boxes[4:], np.array([1]), 200, 200) == pytest.approx(84 / 2.1)
    assert red_cell_size(boxes[:0], np.array([], np.int64), 200, 200) is None


# ---- the workflow and a tiny training run on synthetic smears --------------------------

@pytest.fixture(scope="module")
def smear_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    manifest, folder, split = make_cbc_tree(root)
    return root, manifest, folder, split


def _app():
    from bloodcell.cli.main import app

    return app


@pytest.fixture(scope="module")
def trained(smear_data, tmp_path_factory):
    root, manifest, _, split = smear_data
    out = tmp_path_factory.mktemp("run") / "run"
    opened: list[str] = []
    patch = pytest.MonkeyPatch()
    for module, name in ((detector_workflow, "read_image"), (smears, "parse_voc")):
        original = getattr(module, name)
        patch.setattr(module, name, lambda path, _f=original, **kw: (opened.append(str(path)), _f(path, **kw))[1])
    args = ["detector", "train", "--manifest", str(manifest), "--out", str(out), "--data-root", str(root),
            "--epochs", "3", "--batch-size", "4", "--input-size", "128", "--no-pretrained", "--threads", "1"]
    try:
        first = CliRunner().invoke(_app(), args)
        resumed = CliRunner().invoke(_app(), args[:8] + ["--epochs", "4", "--resume"])
    finally:
        patch.undo()
    assert first.exit_code == 0, first.output
    assert resumed.exit_code == 0, resumed.output
    return out, opened, split


def test_training_never_opens_the_test_split(trained, smear_data):
    out, opened, split = trained
    root, manifest, _, _ = smear_data
    test_ids = {i for i, s in split.items() if s == "test"}
    assert opened and not any(i in path for path in opened for i in test_ids)
    assert {i for i, s in split.items() if s != "test"} <= {p.split("/")[-1].split(".")[0] for p in opened}
    config = DetectorTrainConfig(manifest=str(manifest), out=str(out), data_root=str(root), input_size=128)
    with pytest.raises(ConfigError, match="test"):
        load_split_samples(manifest, "test", config)


def test_training_run_writes_metrics_and_resumes(trained):
    out, _, _ = trained
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]  # 3 epochs, then 1 more after --resume
    assert all(math.isfinite(float(r["train_loss"])) and float(r["seconds_per_iter"]) > 0 for r in rows)
    assert json.loads((out / "config.json").read_text())["epochs"] == 4
    meta = json.loads((out / "best.json").read_text())
    assert meta["model_name"] == "centernet-lite0" and meta["class_names"] == list(LABELS)
    assert meta["detector"]["input_size"] == 128 and set(meta["detector"]["thresholds"]) == set(LABELS)
    assert meta["detector"]["thresholds_chosen_on"] == "val" and meta["metrics"]["n_val"] == 2


def test_the_resumable_state_keeps_its_format(trained):
    """The format of runs already in progress (e.g. started by the older trainer) stays readable."""
    out, _, _ = trained
    state = torch.load(out / STATE_FILE, weights_only=True)
    assert state["format"] == STATE_FORMAT == "bloodcell-detector-state/1"
    assert set(state) == {"format", "epoch", "model", "optimizer", "scheduler", "history", "best", "manifest_sha256"}
    assert state["epoch"] == 4 and [row["epoch"] for row in state["history"]] == [1, 2, 3, 4]


def test_fixed_cell_size_and_shared_head(smear_data, tmp_path):
    root, manifest, _, _ = smear_data
    config = DetectorTrainConfig(manifest=str(manifest), out=str(tmp_path / "run"), data_root=str(root),
                                 input_size=128, cell_size_px=40, scale_range=(0.9, 1.1), shared_head=True,
                                 pretrained=False, epochs=1, batch_size=4, limit_train=2)
    samples = load_split_samples(manifest, "val", config)
    assert [s.image.shape for s in samples] == [(240, 320, 3)] * 2  # red cells 80 px across -> 40 px
    result = detector_workflow.train_detector(config)
    checkpoint = load_checkpoint(result["checkpoint"])
    assert checkpoint.meta["model_kwargs"] == {"shared_head": True}
    assert checkpoint.meta["detector"]["cell_size_px"] == 40 and checkpoint.meta["metrics"]["n_train"] == 2
    assert checkpoint.meta["train_config"]["scale_range"] == [0.9, 1.1]


def test_a_detector_run_killed_during_its_first_save(smear_data, tmp_path, monkeypatch):
    root, manifest, _, _ = smear_data
    out = tmp_path / "run"
    args = ["detector", "train", "--manifest", str(manifest), "--out", str(out), "--data-root", str(root),
            "--epochs", "1", "--batch-size", "4", "--input-size", "128", "--no-pretrained", "--limit-train", "2"]

    def killed(path, state):
        (path.parent / f"{path.name}.tmp").write_bytes(b"half a state")
        raise KeyboardInterrupt

    monkeypatch.setattr(detector_engine, "save_state", killed)
    assert CliRunner().invoke(_app(), args).exit_code != 0  # click turns the interrupt into "Aborted!"
    monkeypatch.undo()
    assert (out / "config.json").is_file() and not (out / STATE_FILE).exists()
    resumed = CliRunner().invoke(_app(), [*args, "--resume"])
    assert isinstance(resumed.exception, ConfigError) and "without --resume" in str(resumed.exception)
    again = CliRunner().invoke(_app(), args)  # no --overwrite needed
    assert again.exit_code == 0, f"{again.output} {again.exception!r}"
    assert (out / STATE_FILE).is_file() and not (out / f"{STATE_FILE}.tmp").exists()


def test_cli_options_reach_the_config_and_resume_keeps_them(smear_data, tmp_path, monkeypatch):
    root, manifest, _, _ = smear_data
    seen = []
    monkeypatch.setattr(detector_workflow, "train_detector",
                        lambda config, resume=False, overwrite=False: seen.append(config) or {"best_epoch": 1, "best": {},
                                                                                              "checkpoint": "x"})
    out = tmp_path / "run"
    args = ["detector", "train", "--manifest", str(manifest), "--out", str(out), "--data-root", str(root),
            "--dataset", "txl", "--cell-size-px", "40", "--scale-range", "0.7,1.4", "--shared-head",
            "--exclude-sources", "kaggle-bcd, raabin", "--input-size", "192"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, f"{result.output} {result.exception!r}"
    config = seen[-1]
    assert (config.cell_size_px, config.scale_range, config.shared_head, config.exclude_sources) == (
        40, (0.7, 1.4), True, ("kaggle-bcd", "raabin"))
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config.to_dict()))
    same = CliRunner().invoke(_app(), [*args, "--resume", "--epochs", "80"])
    assert same.exit_code == 0, f"{same.output} {same.exception!r}"
    assert seen[-1].epochs == 80 and seen[-1].scale_range == (0.7, 1.4)
    changed = CliRunner().invoke(_app(), [*args[:8], "--scale-range", "0.8,1.2", "--resume"])
    assert isinstance(changed.exception, ConfigError) and "--scale-range differs" in str(changed.exception)
    bad = CliRunner().invoke(_app(), [*args[:8], "--scale-range", "2"])
    assert isinstance(bad.exception, ConfigError) and "LOW,HIGH" in str(bad.exception)


def test_detector_split_is_seeded_and_reproducible(smear_data, tmp_path):
    root = smear_data[0]
    runs = [CliRunner().invoke(_app(), ["detector", "split", "--out", str(tmp_path / f"{n}.csv"), "--data-root", str(root),
                                        "--seed", str(seed)]) for n, seed in (("a", 0), ("b", 0), ("c", 1))]
    assert all(r.exit_code == 0 for r in runs), runs[0].output
    assert "8 smears -> train 6, val 1, test 1" in runs[0].output
    a, b, c = (read_smear_manifest(tmp_path / f"{n}.csv").split_of() for n in "abc")
    assert a == b and a != c and sorted(a) == [f"BloodImage_{i:05d}" for i in range(8)]
    empty = tmp_path / "empty" / "cbc"
    (empty / "Annotations").mkdir(parents=True)
    failed = CliRunner().invoke(_app(), ["detector", "split", "--out", str(tmp_path / "x.csv"), "--data-root", str(tmp_path / "empty")])
    assert failed.exit_code != 0 and "no VOC annotation files" in str(failed.exception)


def test_split_txl_command_calls_the_workflow(tmp_path, monkeypatch):
    import bloodcell.workflows.detector_split as detector_split

    calls = []

    def fake(out, cbc_manifest, data_root=None):
        calls.append((out, cbc_manifest, data_root))
        return {"manifest": str(out), "sha256": "f" * 64, "counts": {"train/bccd": 3, "val/pbc": 1},
                "unmatched_copies": 2}

    monkeypatch.setattr(detector_split, "txl_detector_split", fake)
    result = CliRunner().invoke(_app(), ["detector", "split-txl", "--out", str(tmp_path / "txl.csv"),
                                         "--cbc-manifest", str(tmp_path / "cbc.csv")])
    assert result.exit_code == 0, f"{result.output} {result.exception!r}"
    assert calls == [(tmp_path / "txl.csv", tmp_path / "cbc.csv", None)]
    assert "train/bccd 3, val/pbc 1" in result.output and "2 BCCD-source fields" in result.output
