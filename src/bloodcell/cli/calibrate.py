"""``bloodcell calibrate-ood``: fit the out-of-distribution guard on a validation split (wiring only)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console()


def calibrate_ood(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.safetensors) to equip with the guard; rewritten in place."),
    manifest: Path = typer.Option(..., help="Manifest CSV with the frozen split."),
    split: str = typer.Option("val", help="Split to calibrate on (never the test split)."),
    extra: Optional[list[Path]] = typer.Option(None, help="Another lab's manifest (e.g. from `bloodcell data crops`) whose train split joins calibration, so its cells pass the guard (repeatable)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Datasets folder (default $BLOODCELL_DATA)."),
    limit: int = typer.Option(2000, help="At most this many images (a seeded sample)."),
    pass_rate: float = typer.Option(0.99, help="Fraction of in-distribution images the guard must let through."),
) -> None:
    """Fit the guard that refers non-cell inputs (smears, photos, blanks) to a human; store it in the checkpoint."""
    from bloodcell.errors import ConfigError
    from bloodcell.inference.ood import calibrate_ood as fit_guard

    if split == "test":
        raise ConfigError("the guard is calibrated on the validation split; the test split is kept for evaluation")
    if not 0.5 < pass_rate < 1.0:
        raise ConfigError(f"--pass-rate must be between 0.5 and 1, got {pass_rate}")
    params = fit_guard(checkpoint, manifest, split, extra=extra or (), data_root=data_root, limit=limit, pass_rate=pass_rate)
    sources = f"{split} images" + "".join(f" + train images of {path}" for path in extra or ())
    console.print(f"guard fitted on {params['num_images']} {sources} and stored in {checkpoint}", highlight=False)
