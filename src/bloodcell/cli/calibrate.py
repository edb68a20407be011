"""``bloodcell calibrate-ood``: fit the out-of-distribution guard on a validation split (wiring only)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from bloodcell.cli.options import DataRoot
from bloodcell.errors import ConfigError
from bloodcell.outputs import check_output_file
from bloodcell.weights import BUNDLED, not_a_checkpoint, resolve

console = Console()


def calibrate_ood(
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint (.safetensors) to equip with the guard, or a bundled name with --output."),
    manifest: Path = typer.Option(..., help="Manifest CSV with the frozen split."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the calibrated checkpoint here instead of rewriting MODEL in place."),
    split: str = typer.Option("val", help="Split to calibrate on (never the test split)."),
    extra: Optional[list[Path]] = typer.Option(None, help="Another lab's manifest (e.g. from `bloodcell data crops`) whose train split joins calibration, so its cells pass the guard (as the model's own validation cells do, but only in images laid out as a single cell's: not its whole photos) (repeatable)."),
    unfamiliar: Optional[list[Path]] = typer.Option(None, help="A folder of another lab's cell images the model did not learn from: its cells will pass with an 'unfamiliar lab' note instead of being referred (as an unfamiliar lab's; in images laid out as a single cell's) (repeatable)."),
    data_root: DataRoot = None,
    limit: int = typer.Option(2000, min=10, help="At most this many images per source (a seeded sample)."),
    pass_rate: float = typer.Option(0.99, help="Fraction of in-distribution images the guard must let through."),
) -> None:
    """Fit the guard that refers non-cell inputs (smears, photos, blanks) to a human; store it in the checkpoint."""
    from bloodcell.workflows.calibrate import calibrate_ood as fit_and_store

    if not 0.5 < pass_rate < 1.0:
        raise ConfigError(f"--pass-rate must be between 0.5 and 1, got {pass_rate}")
    source = resolve(model)
    if source.suffix == ".onnx":
        raise ConfigError(not_a_checkpoint(source))
    if source.suffix != ".safetensors":
        raise ConfigError(f"{source}: the guard is stored in a .safetensors checkpoint")
    if output is None and model in BUNDLED:
        raise ConfigError(f"{model} is a bundled model; pass --output FILE.safetensors for the calibrated copy")
    target = source if output is None else check_output_file(output, (".safetensors",), "calibrated checkpoint")
    params = fit_and_store(source, manifest, split, extra=extra or (), unfamiliar=unfamiliar or (),
                           data_root=data_root, limit=limit, pass_rate=pass_rate, output=target)
    sources = f"{split} images" + "".join(f" + train images of {path}" for path in extra or ())
    console.print(f"guard fitted on {params['num_images']} {sources} and stored in {target}", highlight=False)
