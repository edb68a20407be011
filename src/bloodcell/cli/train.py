"""``bloodcell train``: configuration layered as defaults (or the run being resumed) -> --config file -> the flags
given (:meth:`~bloodcell.train.config.RunConfig.resolve`; each option is a TrainConfig field, its default there
alone), then the training workflow."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bloodcell.cli.options import ConfigFile, DataRoot, Overwrite, Resume, training_overrides


def train(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Registered or timm model name (see 'bloodcell models list')."),
    dataset: Optional[str] = typer.Option(None, help="Dataset name, e.g. pbc."),
    taxonomy: Optional[str] = typer.Option(None, help="Class taxonomy: pbc8, pbc11 or labels (the manifest's own labels)."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest CSV with the frozen train/val/test split."),
    data_root: DataRoot = None,
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder for checkpoints, metrics and curves."),
    config: ConfigFile = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", help="Start from pretrained weights."),
    input_size: Optional[int] = typer.Option(None, help="Input size overriding the model's own."),
    epochs: Optional[int] = typer.Option(None, help="Number of epochs."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (per process under torchrun)."),
    optimizer: Optional[str] = typer.Option(None, help="adamw, adam or sgd."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    weight_decay: Optional[float] = typer.Option(None, help="Weight decay (not applied to biases and norms)."),
    schedule: Optional[str] = typer.Option(None, help="cosine, onecycle or constant."),
    warmup_epochs: Optional[float] = typer.Option(None, help="Linear warmup length in epochs."),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing of the training loss."),
    class_weights: Optional[bool] = typer.Option(None, "--class-weights/--no-class-weights", help="Inverse-frequency class weights."),
    augment: Optional[str] = typer.Option(None, help="Augmentation: none, flips, literature, strong or balanced."),
    freeze_epochs: Optional[int] = typer.Option(None, help="Epochs training only the head before unfreezing the backbone."),
    early_stopping_patience: Optional[int] = typer.Option(None, help="Stop after this many epochs without a better validation loss."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    threads: Optional[int] = typer.Option(None, help="Torch threads per process (default: all cores)."),
    workers: Optional[int] = typer.Option(None, help="DataLoader worker processes."),
    cache: Optional[bool] = typer.Option(None, "--cache/--no-cache", help="Cache decoded, resized images on disk."),
    cache_dir: Optional[Path] = typer.Option(None, help="Folder of the decoded-image cache."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="Channels-last memory format."),
    limit_train: Optional[int] = typer.Option(None, help="Train on a stratified subset of this many images."),
    limit_val: Optional[int] = typer.Option(None, help="Validate on a stratified subset of this many images."),
    time_budget_s: Optional[float] = typer.Option(None, "--time-budget", help="Stop cleanly after this many seconds."),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help="Keep and checkpoint an exponential moving average of the weights."),
    init_from: Optional[str] = typer.Option(None, help="Fine-tune: start from this checkpoint or bundled model (same model; other classes get a fresh head)."),
    extra_train: Optional[list[Path]] = typer.Option(None, help="Fine-tune: a manifest whose train split joins training (repeatable), e.g. your lab's cells."),
    extra_repeat: Optional[int] = typer.Option(None, help="Times each extra training image is seen per epoch (default 1)."),
) -> None:
    """Train a model on a manifest's train split, validating on its validation split every epoch."""
    given = training_overrides(locals())  # first: the options by name, which are TrainConfig's field names
    from bloodcell.train.config import TrainConfig
    from bloodcell.workflows.train import run_training

    resolved = TrainConfig.resolve(config, given, resume=resume)
    try:
        result = run_training(resolved, resume=resume, overwrite=overwrite)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {resolved.out} keeps the run as last saved (every finished epoch, and within an "
                   "epoch every checkpoint_every_s seconds when the config sets it); continue it with the same command and "
                   "--resume", err=True)
        raise typer.Exit(130) from None
    if result.rank == 0:
        metrics = result.metrics
        typer.echo(
            f"best epoch {result.best_epoch}: val loss {metrics.get('val_loss', float('nan')):.4f}, "
            f"val acc {metrics.get('val_acc', float('nan')):.3f}, temperature {result.temperature:.3f} "
            f"({result.stop_reason}) -> {result.best_checkpoint}"
        )
