"""Configuration layering (defaults < run being resumed < file < flags) for both trainers, and ``bloodcell train``."""

from __future__ import annotations

import json

import pytest
from train_fixtures import TINY_MODEL
from typer.testing import CliRunner

from bloodcell.errors import ConfigError
from bloodcell.resources import CONFIGS, manifest_path, style_bank_path
from bloodcell.train.config import TrainConfig, read_config_file, resolve_config, save_config
from bloodcell.train.detector import DetectorTrainConfig


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
        ({"input_size": 100_000}, "input_size must be at most 1024 pixels"),  # a cache of 600 GB before any epoch
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
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_config_file(tmp_path / "deep.json")


#: Per trainer: a file's options, flags over them, and what the resolved config must then hold.
BOTH = [
    (TrainConfig, {"lr": 0.02, "epochs": 7, "manifest": "m.csv"}, {"epochs": 2, "batch_size": None, "seed": 3},
     {"lr": 0.02, "epochs": 2, "batch_size": TrainConfig().batch_size, "seed": 3, "manifest": "m.csv"}),
    (DetectorTrainConfig, {"lr": 0.01, "epochs": 7, "manifest": "m.csv", "out": "run", "scale_range": [0.9, 1.2]},
     {"epochs": 2, "batch_size": None, "exclude_sources": "kaggle-bcd, raabin"},
     {"lr": 0.01, "epochs": 2, "batch_size": 8, "scale_range": (0.9, 1.2), "exclude_sources": ("kaggle-bcd", "raabin")}),
]


@pytest.mark.parametrize(("cls", "file", "flags", "expected"), BOTH, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_both_trainers_layer_defaults_file_and_flags_the_same_way(tmp_path, cls, file, flags, expected, suffix):
    path = tmp_path / f"c{suffix}"
    path.write_text(json.dumps(file) if suffix == ".json" else
                    "\n".join(f"{k} = {json.dumps(v)}" for k, v in file.items()))
    config = cls.resolve(path, flags)
    assert isinstance(config, cls)
    assert {k: getattr(config, k) for k in expected} == expected


@pytest.mark.parametrize("cls", [TrainConfig, DetectorTrainConfig])
def test_an_unknown_option_is_refused_in_one_sentence_by_both(tmp_path, cls):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"manifest": "m.csv", "out": "run", "learning_rate": 0.1}))
    for source, flags in ((path, {}), (None, {"manifest": "m.csv", "out": "run", "learning_rate": 0.1})):
        with pytest.raises(ConfigError) as raised:
            cls.resolve(source, flags)
        message = str(raised.value)
        assert message == f"unknown {cls.LABEL} option(s): learning_rate" and "\n" not in message


@pytest.mark.parametrize("cls", [TrainConfig, DetectorTrainConfig])
def test_resume_starts_from_the_runs_saved_config_for_both(tmp_path, cls):
    run = tmp_path / "run"
    run.mkdir()
    saved = cls.from_dict({"manifest": "m.csv", "out": str(run), "lr": 0.0123, "epochs": 3, "seed": 7})
    save_config(saved, run / "config.json")
    resumed = cls.resolve(None, {"out": str(run), "epochs": 5}, resume=True)
    assert (resumed.manifest, resumed.lr, resumed.seed, resumed.epochs) == ("m.csv", 0.0123, 7, 5)
    assert resumed.to_dict() == {**saved.to_dict(), "epochs": 5}
    with pytest.raises(ConfigError, match="holds no config.json to resume from"):
        cls.resolve(None, {"out": str(tmp_path / "elsewhere")}, resume=True)
    with pytest.raises(ConfigError, match="--resume needs --output"):
        cls.resolve(None, {}, resume=True)


def test_a_resumed_detector_run_may_change_only_its_resumable_options(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for cls in (TrainConfig, DetectorTrainConfig):
        save_config(cls.from_dict({"manifest": "m.csv", "out": str(run), "lr": 0.01}), run / "config.json")
        assert cls.resolve(None, {"out": str(run), "epochs": 9, "threads": 1}, resume=True).epochs == 9
        if cls is TrainConfig:  # any option (its workflow refuses another model, classes or manifest itself)
            assert cls.resolve(None, {"out": str(run), "lr": 0.02}, resume=True).lr == 0.02
            continue
        with pytest.raises(ConfigError, match=r"^--lr differs from the run being resumed \(0.01\); only manifest, out"):
            cls.resolve(None, {"out": str(run), "lr": 0.02}, resume=True)
        assert cls.resolve(None, {"out": str(run), "lr": 0.01}, resume=True).lr == 0.01  # the same value is no change


def test_a_missing_required_option_is_one_sentence():
    with pytest.raises(ConfigError, match="^no manifest given; pass --manifest or set manifest in the config file$"):
        DetectorTrainConfig.resolve(None, {"out": "run"})
    with pytest.raises(ConfigError, match="^no out given; pass --output"):
        DetectorTrainConfig.resolve(None, {"manifest": "m.csv"})


def test_the_saved_config_json_of_both_trainers_loads_again(tmp_path):
    """Run folders written before the shared configuration (lists where tuples are now) still resume."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({
        "manifest": "cbc-seed0", "out": str(run), "dataset": "cbc", "subset": "Training", "data_root": None, "epochs": 60,
        "input_size": 384, "batch_size": 8, "lr": 0.002, "weight_decay": 0.0001, "warmup_epochs": 1.0,
        "pretrained": True, "criterion": "count", "threads": 1, "seed": 0, "limit_train": None, "limit_val": None,
        "time_budget_s": None, "cell_size_px": 40, "scale_range": [0.85, 1.15], "shared_head": False,
        "exclude_sources": ["kaggle-bcd"], "architecture": "centernet-lite0"}))
    config = DetectorTrainConfig.resolve(None, {"out": str(run), "scale_range": "0.85,1.15"}, resume=True)
    assert (config.scale_range, config.exclude_sources, config.cell_size_px) == ((0.85, 1.15), ("kaggle-bcd",), 40)


@pytest.mark.parametrize(("command", "cls"), [(["train"], TrainConfig), (["detector", "train"], DetectorTrainConfig)])
def test_a_training_commands_options_are_its_configs_fields_with_no_default_of_their_own(command, cls):
    """One source: the flags name the configuration's fields, and every default lives in the configuration."""
    from dataclasses import fields

    import typer

    from bloodcell.cli.main import app
    from bloodcell.cli.options import RUN_PARAMETERS

    click_command = typer.main.get_command(app)
    for name in command:
        click_command = click_command.commands[name] if hasattr(click_command, "commands") else click_command
    names = {f.name for f in fields(cls)}
    options = {p.name: p for p in click_command.params if p.name not in RUN_PARAMETERS}
    assert set(options) <= names, set(options) - names
    assert all(p.default is None for p in options.values()), [n for n, p in options.items() if p.default is not None]
    assert {opt for p in options.values() for opt in p.opts} >= {cls.flag(name) for name in options}


def test_only_the_options_given_reach_the_config():
    from pathlib import Path

    from bloodcell.cli.options import training_overrides

    given = training_overrides({"config": Path("c.json"), "resume": True, "overwrite": False, "epochs": None,
                                "out": Path("run"), "extra_train": [], "lr": 0.1, "pretrained": False})
    assert given == {"out": "run", "lr": 0.1, "pretrained": False}


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


@pytest.mark.parametrize("line", ["epochs = inf", "weight_decay = nan", "warmup_epochs = nan", "momentum = inf",
                                  "batch_size = 1e400", "scale_range = [0.9, nan]"])
def test_a_value_that_is_not_a_finite_number_is_one_sentence(tmp_path, line):
    """TOML's inf and nan (and a number too large for an int) are refused, never a traceback nor a NaN accepted."""
    path = tmp_path / "bad.toml"
    path.write_text(line + "\n")
    cls = DetectorTrainConfig if line.startswith("scale_range") else TrainConfig
    with pytest.raises(ConfigError, match="invalid value"):
        cls.resolve(path)


def test_ctrl_c_in_train_says_what_was_kept_and_how_to_go_on(tmp_path, monkeypatch):
    import bloodcell.workflows.train as workflow
    from bloodcell.cli.main import app

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(workflow, "run_training", interrupted)
    result = CliRunner().invoke(app, ["train", "--model", TINY_MODEL, "-o", str(tmp_path / "run")])
    assert result.exit_code == 130
    assert f"interrupted: {tmp_path / 'run'} keeps the run as last saved" in " ".join(result.output.split())
    assert "--resume" in result.output
