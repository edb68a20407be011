"""Weight-space interpolation of two training stages (``bloodcell interpolate``)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from bloodcell.checkpoint import load_checkpoint, update_metadata
from bloodcell.errors import CheckpointError, ConfigError
from bloodcell.provenance import file_sha256
from bloodcell.train.interpolate import mix_state_dicts
from bloodcell.workflows.interpolate import interpolate_checkpoints
from bloodcell.workflows.train import run_training


def test_mix_is_a_straight_line_between_the_stages_and_keeps_counters_of_the_tuned_one():
    base = {"w": torch.zeros(2, 3), "n": torch.tensor(4)}
    tuned = {"w": torch.full((2, 3), 2.0), "n": torch.tensor(9)}
    assert torch.equal(mix_state_dicts(base, tuned, 0.0)["w"], base["w"])
    assert torch.equal(mix_state_dicts(base, tuned, 1.0)["w"], tuned["w"])
    quarter = mix_state_dicts(base, tuned, 0.25)
    assert torch.allclose(quarter["w"], torch.full((2, 3), 0.5)) and quarter["n"].item() == 9
    with pytest.raises(ConfigError, match="different layers"):
        mix_state_dicts(base, {"w": tuned["w"]}, 0.5)
    with pytest.raises(ConfigError, match="shape"):
        mix_state_dicts(base, {**tuned, "w": torch.zeros(3, 2)}, 0.5)


@pytest.fixture
def stages(base_config, tmp_path):
    """A base run and a run fine-tuned from it (a guard is added to the tuned one's metadata)."""
    base = run_training(replace(base_config, epochs=1, out=str(tmp_path / "base"))).best_checkpoint
    tuned = run_training(replace(base_config, epochs=1, lr=0.05, out=str(tmp_path / "tuned"), init_from=str(base))).best_checkpoint
    update_metadata(tuned, ood={"version": 2})
    return base, tuned


def test_interpolated_checkpoint_mixes_weights_fits_a_temperature_and_records_both_stages(stages, base_config, tmp_path):
    base, tuned = stages
    path, metrics = interpolate_checkpoints(base, tuned, 0.5, tmp_path / "mix.safetensors",
                                            manifest=base_config.manifest, data_root=base_config.data_root)
    a, b, mixed = load_file(base), load_file(tuned), load_file(path)
    floats = [k for k in mixed if mixed[k].is_floating_point()]
    assert any(not torch.equal(a[k], b[k]) for k in floats)
    assert all(torch.allclose(mixed[k], (a[k] + b[k]) / 2, atol=1e-6) for k in floats)
    meta = load_checkpoint(path).meta
    assert meta["interpolation"] == {"base": base.name, "base_sha256": file_sha256(base), "tuned": tuned.name,
                                     "tuned_sha256": file_sha256(tuned), "alpha": 0.5}
    assert "ood" not in meta  # the guard's features changed: it must be calibrated again
    assert meta["manifest_sha256"] == load_checkpoint(tuned).meta["manifest_sha256"]
    assert metrics["n_val"] == 12 and 0.0 <= metrics["val_acc"] <= 1.0  # 3 classes x 4 val images
    assert meta["temperature"] > 0 and meta["metrics"] == metrics


def test_interpolation_refuses_alpha_out_of_range_another_manifest_and_another_model(stages, base_config, tmp_path):
    from train_fixtures import make_synthetic_pbc

    base, tuned = stages
    kwargs = {"manifest": base_config.manifest, "data_root": base_config.data_root}
    with pytest.raises(ConfigError, match="between 0"):
        interpolate_checkpoints(base, tuned, 1.5, tmp_path / "x.safetensors", **kwargs)
    other = make_synthetic_pbc(tmp_path / "other", per_class=10)
    with pytest.raises(ConfigError, match="another manifest"):
        interpolate_checkpoints(base, tuned, 0.5, tmp_path / "x.safetensors", manifest=other,
                                data_root=base_config.data_root)
    with pytest.raises(CheckpointError, match="no such model file"):
        interpolate_checkpoints(tmp_path / "missing.safetensors", tuned, 0.5, tmp_path / "x.safetensors", **kwargs)
    with pytest.raises(ConfigError, match="differ in model_name"):  # a bundled name resolves; another model
        interpolate_checkpoints("pbc8", tuned, 0.5, tmp_path / "x.safetensors", **kwargs)
    wider = run_training(replace(base_config, epochs=1, out=str(tmp_path / "wider"), input_size=28)).best_checkpoint
    with pytest.raises(ConfigError, match="differ in data_config"):
        interpolate_checkpoints(wider, tuned, 0.5, tmp_path / "x.safetensors", **kwargs)
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_interpolate_reports_validation_figures_and_errors(stages, base_config, tmp_path):
    from bloodcell.cli.main import app
    base, tuned = stages
    out = tmp_path / "mix.safetensors"
    args = ["interpolate", str(base), str(tuned), "--manifest", base_config.manifest,
            "--data-root", base_config.data_root, "--output", str(out)]
    result = CliRunner().invoke(app, [*args, "--alpha", "0.3"])
    assert result.exit_code == 0, result.output
    assert "val accuracy" in result.output and "calibrate-ood" in result.output and out.is_file()
    result = CliRunner().invoke(app, [*args, "--alpha", "-1"])
    assert isinstance(result.exception, ConfigError) and "between 0" in str(result.exception)  # main() prints it
