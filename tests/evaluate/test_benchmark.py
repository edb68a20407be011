"""``benchmark``: same protocol for every model, comparison table and chart, resumable."""

from __future__ import annotations

import csv
import json

import pytest
from evaluate_fixtures import TINY, make_pbc_dataset, trained_tiny_checkpoint

from bloodcell.errors import ConfigError
from bloodcell.evaluation.scoring import load_scoring_model
from bloodcell.workflows import benchmark as bench


@pytest.mark.slow
def test_benchmark_trains_evaluates_compares_and_resumes(tmp_path, monkeypatch):
    manifest = make_pbc_dataset(tmp_path / "data", {"train": 3, "val": 2, "test": 3})
    out = tmp_path / "bench"
    kwargs = dict(manifest=manifest, out=out, budget_s=5, data_root=tmp_path / "data", epochs_max=1,
                  batch_size=8, speed_images=16, n_boot=50, extra={"cache": False, "threads": 1})
    rows = bench.run_benchmark([TINY], **kwargs)
    (row,) = rows
    assert row["model"] == TINY and row["test_images"] == 24
    assert row["epochs"] == 1 and row["train_images_seen"] == 24
    assert row["parameters"] == 8 * 3 * 9 + 8 + 8 * 8 + 8
    assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]
    assert row["images_per_s"] > 0
    folder = out / bench.model_dir_name(TINY)
    saved = json.loads((folder / bench.RESULT_FILE).read_text())
    assert saved["config"]["time_budget_s"] == 5 and saved["config"]["seed"] == 0
    assert json.loads((folder / "evaluation" / "metrics.json").read_text())["split"] == "test"
    with (out / "comparison.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["model"] for r in table] == [TINY] and float(table[0]["accuracy"]) == pytest.approx(row["accuracy"])
    md = (out / "comparison.md").read_text()
    assert "| accuracy (95% CI) |" in md and TINY in md and "![accuracy with 95% CI](comparison.png)" in md
    assert (out / "comparison.png").read_bytes().startswith(b"\x89PNG")

    # resumable: an existing result is not trained again
    def refuse(*args, **kwargs):
        raise AssertionError("a finished model was trained again")

    monkeypatch.setattr(bench, "run_training", refuse)
    assert bench.run_benchmark([TINY], **kwargs) == rows


@pytest.mark.slow
def test_slow_models_can_select_and_score_on_stratified_subsets_and_the_row_says_so(tmp_path):
    manifest = make_pbc_dataset(tmp_path / "data", {"train": 3, "val": 2, "test": 3})
    rows = bench.run_benchmark([TINY], manifest=manifest, out=tmp_path / "bench", budget_s=5, data_root=tmp_path / "data",
                               epochs_max=1, batch_size=8, speed_images=8, n_boot=20, limit_val=8, score_limit=8,
                               extra={"cache": False, "threads": 1})
    assert rows[0]["val_images"] == 8 and rows[0]["test_images"] == 8  # of 16 and 24
    protocol = json.loads((tmp_path / "bench" / "protocol.json").read_text())
    assert protocol["limit_val"] == 8 and protocol["score_limit"] == 8
    assert "| test images |" in (tmp_path / "bench" / "comparison.md").read_text()


def test_throughput_uses_requested_threads(tmp_path):
    import torch

    make_pbc_dataset(tmp_path, {"test": 1})
    model = load_scoring_model(trained_tiny_checkpoint(tmp_path / "m.safetensors"))
    paths = sorted((tmp_path / "pbc").rglob("*.png"))
    before = torch.get_num_threads()
    assert bench.measure_throughput(model, paths, threads=1, batch_size=4) > 0
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("models, budget, message", [("", 5, "no models"), ("a,a", 5, "twice"), ("a", 0, "positive")])
def test_benchmark_rejects_bad_options(tmp_path, models, budget, message):
    with pytest.raises(ConfigError, match=message):
        bench.run_benchmark(models.split(","), manifest=tmp_path / "m.csv", out=tmp_path, budget_s=budget)



def test_trained_checkpoint_is_evaluated_as_its_own_row(tmp_path):
    manifest = make_pbc_dataset(tmp_path / "data", {"train": 2, "val": 1, "test": 2})
    checkpoint = trained_tiny_checkpoint(tmp_path / "tiny.safetensors")
    row = bench.checkpoint_row(checkpoint, tmp_path / "bench", manifest=manifest, dataset="pbc", taxonomy="pbc8",
                               data_root=tmp_path / "data", speed_images=4, threads=1, n_boot=20, seed=0)
    assert "own recipe" in row["model"] and row["test_images"] == 16
    assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]
    assert row["train_seconds"] is None and row["pretrained"] is False
    saved = list((tmp_path / "bench").glob("*/result.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["row"]["checkpoint"] == str(checkpoint)


def test_pretrained_policy_available_only_where_weights_exist(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr("bloodcell.models.pretrained._download", no_network)
    assert bench.pretrained_available("asghar2023-cnn") is False  # trained from scratch by design
    assert bench.pretrained_available("resnet18") is False  # weights only by download
    assert bench.pretrained_available("efficientnet_lite0") is True  # offline package weights
