"""``bloodcell reproduce``: a paper's experiment under its own protocol (leaks included) and an honest one."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from bloodcell.models.catalog import paper_models


def reproduce(
    paper: str = typer.Argument(..., help=f"A paper model ({', '.join(paper_models())}) or 'all'."),
    budget: float = typer.Option(600.0, help="Wall-clock training budget per protocol, in seconds."),
    output: Path = typer.Option(Path("runs/reproduce"), "--output", "-o", help="Folder for the runs, reports, reproduction.json/.md and the data built (resumable)."),
    data_root: Optional[Path] = typer.Option(None, help="Datasets folder with pbc/ and bccd/ (default $BLOODCELL_DATA)."),
    manifest: Optional[Path] = typer.Option(None, help="PBC's frozen, duplicate-aware split (the honest PBC protocol; default: the frozen manifests/pbc-seed0.csv)."),
    seed: int = typer.Option(0, help="Random seed of the data built, the splits and the training."),
    copies_per_class: int = typer.Option(1000, help="Images per white-cell type in the Kaggle-like BCCD set."),
    pretrained: str = typer.Option("available", help="ImageNet weights: 'available' (as the recipe says, where they can be had) or 'recipe' (fail without them)."),
    score_limit: Optional[int] = typer.Option(None, help="Score a stratified subset of this many images per scored set (for slow models)."),
    limit_val: Optional[int] = typer.Option(None, help="Validate each epoch on a stratified subset of this many images (for slow models)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for training (default: all cores)."),
    n_boot: int = typer.Option(1000, min=1, help="Bootstrap resamples for the 95% confidence intervals."),
) -> None:
    """Run a paper's experiment under its own protocol (leaks included) and an honest one; report both figures."""
    from bloodcell.workflows.reproduce import FROZEN_MANIFEST, Settings
    from bloodcell.workflows.reproduce import reproduce as run_reproduction

    settings = Settings(budget_s=budget, seed=seed, data_root=data_root, pbc_manifest=manifest or FROZEN_MANIFEST,
                        copies_per_class=copies_per_class, pretrained=pretrained, score_limit=score_limit,
                        limit_val=limit_val, threads=threads, n_boot=n_boot,
                        command=" ".join(["bloodcell", *map(shlex.quote, sys.argv[1:])]))
    console = Console()
    for record in run_reproduction(paper, output, settings):
        claimed = "; ".join(f"{k}: {v}" for k, v in record["claimed"].items()) or "not recorded"
        figures = [(label, record[key]["accuracy"]) for label, key in
                   (("paper's protocol", "ours_paper_protocol"), ("honest protocol", "ours_honest"))]
        console.print(f"{record['model']}: claimed {claimed}", highlight=False)
        for label, acc in figures:
            console.print(f"  ours, {label}: {100 * acc['estimate']:.1f} % "
                          f"[{100 * acc['low']:.1f}, {100 * acc['high']:.1f}]", highlight=False)
    console.print(f"summary: {output / 'reproductions.md'}", highlight=False)
