"""Configuration layering (defaults < file < flags) and the ``bloodcell train`` command."""

from __future__ import annotations

import json

import pytest
from train_fixtures import TINY_MODEL
from typer.testing import CliRunner

from bloodcell.errors import ConfigError
from bloodcell.resources import CONFIGS, manifest_path, style_bank_path
from bloodcell.train.config import TrainConfig, read_config_file, resolve_config


def test_layers_defaults_then_file_then_flags(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"lr": 0.02, "epochs": 7, "augment": "literature"}))
    (tmp_path / "c.toml").write_text('lr = 0.03\nclass_weights = true\nschedule = "onecycle"\n')
    config = resolve_config(tmp_path / "c.json", {"epochs": 2, "batch_size": None})
    assert (config.lr, config.epochs, config.augment) == (0.02, 2, "literature")
    assert config.batch_size == TrainConfig().batch_size
    toml = resolve_config(tmp_path / "c.toml", {})
    assert (toml.lr, toml.class_weights, toml.schedule) == (0.03, True, "onecycle")
    assert resolve_config(None, {"extra_train": "lab.csv"}).extra_train == ["lab.csv"]
    assert resolve_config(None, {"extra_train": ["a.csv", "b.csv"]}).extra_train == ["a.csv", "b.csv"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"learning_rate": 0.1}, "unknown training option"),
        ({"epochs": "many"}, "invalid value"),
        ({"optimizer": "lamb"}, "optimizer must be one of"),
        ({"augment": "wild"}, "augment must be one of"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"pretrained": "yes"}, "invalid value"),
        ({"extra_train": 3}, "invalid value"),
        ({"extra_repeat": 0}, "extra_repeat must be at least 1"),
    ],
)
def test_bad_config_values_raise_one_sentence(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=message):
        resolve_config(path)


def test_unreadable_config_file(tmp_path):
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse"):
        read_config_file(tmp_path / "c.json")
    with pytest.raises(ConfigError, match="not found"):
        read_config_file(tmp_path / "missing.json")


def _cli(args):
    from bloodcell.cli.main import app
    return CliRunner().invoke(app, args)


def test_cli_train_saves_the_resolved_config_and_reports_user_errors(synthetic_root, tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"lr": 0.02, "epochs": 5, "batch_size": 6, "weight_decay": 0.0}))
    out = tmp_path / "run"
    args = ["train", "--model", TINY_MODEL, "--manifest", str(synthetic_root / "manifest.csv"),
            "--data-root", str(synthetic_root), "--out", str(out), "--config", str(tmp_path / "c.json"),
            "--epochs", "1", "--threads", "1", "--no-cache", "--augment", "none"]
    result = _cli(args)
    assert result.exit_code == 0, result.output
    assert "best epoch 1" in result.output
    saved = json.loads((out / "config.json").read_text())
    assert (saved["epochs"], saved["lr"], saved["batch_size"], saved["optimizer"]) == (1, 0.02, 6, "adamw")

    again = _cli(args)
    assert again.exit_code != 0 and "--overwrite" in str(again.exception)

    resumed = _cli(["train", "--out", str(out), "--resume", "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert len((out / "metrics.csv").read_text().splitlines()) == 3

    unknown = _cli(["train", "--model", "no-such-model-xyz", "--manifest", str(synthetic_root / "manifest.csv"),
                    "--out", str(tmp_path / "other")])
    assert isinstance(unknown.exception, ConfigError) and "unknown model" in str(unknown.exception)
    missing = _cli(["train", "--model", TINY_MODEL, "--manifest", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    assert "manifest" in str(missing.exception) and "not found" in str(missing.exception)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.json")),
                         ids=lambda path: path.name)
def test_every_shipped_config_resolves(path):
    config = resolve_config(path, {})
    assert config.model and config.manifest and config.epochs > 0
    assert manifest_path(config.manifest).is_file()  # the files it names are shipped too, found by name
    assert config.style_bank is None or style_bank_path(config.style_bank).is_file()
