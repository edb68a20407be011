"""Optuna tuning: two tiny trials on the synthetic set, a usable best_config.json."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest

from bloodcell.errors import ConfigError
from bloodcell.train.config import resolve_config
from bloodcell.workflows.tune import LR_RANGE, tune


def test_two_trials_write_a_best_config_usable_by_train(base_config, tmp_path):
    base = replace(base_config, epochs=2, out=None)
    result = tune(base, trials=2, out=tmp_path / "tune", input_sizes=(20, 24), augments=("none", "flips"))
    rows = list(csv.DictReader(open(result.trials_csv)))
    assert [r["trial"] for r in rows] == ["0", "1"]
    assert all(r["state"] == "complete" and r["epochs"] == "2" for r in rows)
    losses = [float(r["val_loss"]) for r in rows]
    assert result.best_val_loss == pytest.approx(min(losses), rel=1e-5)

    best = json.loads(result.best_config_path.read_text())
    winner = rows[losses.index(min(losses))]
    assert best["lr"] == pytest.approx(float(winner["lr"]), rel=1e-5)
    assert best["input_size"] == int(winner["input_size"]) and best["augment"] == winner["augment"]
    assert LR_RANGE[0] <= best["lr"] <= LR_RANGE[1]
    assert best["out"] is None and best["model"] == base.model and best["epochs"] == 2
    assert resolve_config(result.best_config_path, {"epochs": 9}).lr == best["lr"]
    assert (tmp_path / "tune" / "trials" / "trial-001" / "best.safetensors").is_file()

    again = tune(base, trials=2, out=tmp_path / "tune", input_sizes=(20, 24), augments=("none", "flips"),
                 overwrite=True)
    assert again.best_config.to_dict() == result.best_config.to_dict()  # the seeded sampler repeats itself

    with pytest.raises(ConfigError, match="--overwrite"):
        tune(base, trials=1, out=tmp_path / "tune")
