"""``bloodcell interpolate``: mix two training stages of one model in weight space (wiring only)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from bloodcell.cli.options import DataRoot
from bloodcell.outputs import check_output_file

console = Console()


def interpolate(
    base: str = typer.Argument(..., help="The earlier stage: a .safetensors checkpoint or a bundled model name (pbc8)."),
    tuned: str = typer.Argument(..., help="The later stage, fine-tuned from BASE (.safetensors)."),
    alpha: float = typer.Option(..., help="Weight of TUNED: 0 gives BASE, 1 gives TUNED."),
    manifest: Path = typer.Option(..., help="The manifest both stages were trained with; its val split fits the temperature."),
    output: Path = typer.Option(..., "--output", "-o", help="Checkpoint to write (.safetensors)."),
    data_root: DataRoot = None,
) -> None:
    """Write (1 - ALPHA) * BASE + ALPHA * TUNED with a temperature fitted on the validation split."""
    from bloodcell.workflows.interpolate import interpolate_checkpoints

    check_output_file(output, (".safetensors",), "mixed checkpoint")
    path, metrics = interpolate_checkpoints(base, tuned, alpha, output, manifest=manifest, data_root=data_root)
    console.print(f"{path}: val accuracy {metrics['val_acc']:.4f}, calibrated NLL {metrics['val_nll_calibrated']:.4f} "
                  f"on {metrics['n_val']} images; run `bloodcell calibrate-ood` to give it a guard", highlight=False)
