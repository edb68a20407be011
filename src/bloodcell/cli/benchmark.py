"""``bloodcell benchmark``: train several models under one protocol and compare them on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from bloodcell.cli.choices import Augment
from bloodcell.cli.options import DataRoot
from bloodcell.errors import ConfigError
from bloodcell.outputs import check_output_folder


def benchmark(
    models: str = typer.Option(..., help="Comma-separated model names, e.g. resnet18,efficientnet_b0,sk/svm."),
    manifest: Path = typer.Option(..., help="Manifest CSV with the frozen train/val/test split."),
    budget: float = typer.Option(..., help="Wall-clock training budget per model, in seconds."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for per-model results and comparison.csv/.md/.png (resumable)."),
    dataset: str = typer.Option("pbc", help="Dataset of the manifest."),
    taxonomy: str = typer.Option("pbc8", help="pbc8 or pbc11."),
    data_root: DataRoot = None,
    epochs_max: Optional[int] = typer.Option(None, help="Stop after this many epochs even if budget remains."),
    limit_train: Optional[int] = typer.Option(None, help="Train every model on the same stratified subset of this size."),
    limit_val: Optional[int] = typer.Option(None, min=1, help="Select each model's epoch on a stratified subset of the validation split of this size (for slow models; recorded per row)."),
    score_limit: Optional[int] = typer.Option(None, min=1, help="Score each trained model on a stratified subset of the test split of this size (for slow models; the row gives its test images)."),
    augment: Augment = typer.Option(Augment.flips, help="Augmentation for every model."),
    batch_size: int = typer.Option(32, help="Training batch size for every model."),
    seed: int = typer.Option(0, help="Random seed for every model."),
    pretrained: str = typer.Option("none", help="ImageNet initialisation: none, all, or available (where weights can be had)."),
    checkpoints: str = typer.Option("", help="Comma-separated trained checkpoints to evaluate alongside (their own recipe)."),
    speed_images: int = typer.Option(64, help="Test images used to measure inference speed."),
    threads: int = typer.Option(2, help="CPU threads for the inference-speed measurement."),
    train_threads: Optional[int] = typer.Option(None, help="CPU threads for training (default: all cores)."),
    n_boot: int = typer.Option(1000, min=1, help="Bootstrap resamples for the 95% confidence intervals."),
) -> None:
    """Train and evaluate several models with one protocol; write a comparison table and chart."""
    from bloodcell.workflows.benchmark import PRETRAINED_POLICIES, run_benchmark

    if pretrained not in PRETRAINED_POLICIES:
        raise ConfigError(f"--pretrained must be one of {', '.join(PRETRAINED_POLICIES)}, got {pretrained!r}")
    check_output_folder(output, "benchmark results")
    console = Console()
    rows = run_benchmark(
        models.split(","), manifest=manifest, out=output, budget_s=budget, dataset=dataset, taxonomy=taxonomy,
        data_root=data_root, epochs_max=epochs_max, limit_train=limit_train, limit_val=limit_val, score_limit=score_limit,
        seed=seed, augment=augment.value,
        batch_size=batch_size, speed_images=speed_images, threads=threads, n_boot=n_boot,
        extra={"pretrained": pretrained, "threads": train_threads}, checkpoints=[c for c in checkpoints.split(",") if c],
    )
    for row in rows:
        console.print(f"{row['model']}: accuracy {100 * row['accuracy']:.2f}%, macro-F1 {100 * row['macro_f1']:.2f}%, "
                      f"{row['images_per_s']:.1f} img/s", highlight=False)
    console.print(f"comparison: {output / 'comparison.md'}", highlight=False)
