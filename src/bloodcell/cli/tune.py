"""``bloodcell tune``: Optuna search over learning rate, weight decay, augmentation and input size."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bloodcell.cli.options import DataRoot, training_overrides

#: The search's own parameters (the others are TrainConfig options of every trial).
TUNE_PARAMETERS = ("out", "trials", "config", "input_sizes", "timeout", "overwrite")


def _sizes(text: Optional[str]) -> tuple[int, ...] | None:
    from bloodcell.errors import ConfigError

    if not text:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--input-sizes must be comma-separated integers, got {text!r}") from None


def tune(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Registered or timm model name."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest CSV (trials use its train and validation splits)."),
    out: Path = typer.Option(..., "--output", "-o", help="Folder for trials.csv, best_config.json and the trial runs."),
    trials: int = typer.Option(20, help="Number of Optuna trials."),
    epochs: Optional[int] = typer.Option(None, help="Epochs per trial."),
    config: Optional[Path] = typer.Option(None, help="JSON or TOML file of the trials' base training options."),
    taxonomy: Optional[str] = typer.Option(None, help="Class taxonomy: pbc8, pbc11 or labels (the manifest's own labels)."),
    data_root: DataRoot = None,
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", help="Start trials from pretrained weights."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size."),
    input_sizes: Optional[str] = typer.Option(None, help="Comma-separated input sizes to try (default: 0.75x, 1x, 1.25x the model's)."),
    limit_train: Optional[int] = typer.Option(None, help="Stratified training subset per trial."),
    limit_val: Optional[int] = typer.Option(None, help="Stratified validation subset per trial."),
    threads: Optional[int] = typer.Option(None, help="Torch threads."),
    cache: Optional[bool] = typer.Option(None, "--cache/--no-cache", help="Cache decoded, resized images on disk."),
    cache_dir: Optional[Path] = typer.Option(None, help="Folder of the decoded-image cache."),
    seed: Optional[int] = typer.Option(None, help="Seed of the sampler and of every trial."),
    timeout: Optional[float] = typer.Option(None, help="Stop starting new trials after this many seconds."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Tune again into an existing --output."),
) -> None:
    """Search hyperparameters on the validation split; writes best_config.json for 'bloodcell train --config'."""
    given = training_overrides(locals(), not_options=TUNE_PARAMETERS)  # first: the base trials' TrainConfig options
    from bloodcell.train.config import TrainConfig
    from bloodcell.workflows.tune import tune as run_tune

    base = TrainConfig.resolve(config, given)
    result = run_tune(base, trials, out, input_sizes=_sizes(input_sizes), timeout_s=timeout, overwrite=overwrite)
    typer.echo(f"best trial {result.best_trial}: val loss {result.best_val_loss:.4f} -> {result.best_config_path}")
