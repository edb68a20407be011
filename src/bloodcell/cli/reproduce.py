"""``bloodcell reproduce``: a paper's experiment under its own protocol (leaks included) and an honest one."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from bloodcell.cli.options import data_root_option
from bloodcell.errors import ConfigError
from bloodcell.models.catalog import PAPER_EXPERIMENTS


def reproduce(
    paper: Optional[str] = typer.Argument(None, help=f"A paper model ({', '.join(PAPER_EXPERIMENTS)}) or 'all'; may be left out with --report."),
    budget: Optional[float] = typer.Option(None, help="Cap each protocol's training at this many seconds (default: train to the recipe's end; an interrupted run resumes from its last epoch)."),
    output: Path = typer.Option(Path("runs/reproduce"), "--output", "-o", help="Folder for the runs, reports, reproduction.json/.md and the data built (resumable)."),
    data_root: Annotated[Optional[Path], data_root_option("Datasets folder with pbc/ and bccd/ (default $BLOODCELL_DATA).")] = None,
    manifest: Path = typer.Option(Path("pbc-seed0"), help="PBC's frozen, duplicate-aware split (the honest PBC protocol)."),
    seed: int = typer.Option(0, help="Random seed of the data built, the splits and the training."),
    copies_per_class: int = typer.Option(1000, help="Images per white-cell type in the Kaggle-like BCCD set."),
    pretrained: str = typer.Option("available", help="ImageNet weights: 'available' (as the recipe says, where they can be had) or 'recipe' (fail without them)."),
    score_limit: Optional[int] = typer.Option(None, help="Score a stratified subset of this many images per scored set (for slow models)."),
    limit_val: Optional[int] = typer.Option(None, help="Validate each epoch on a stratified subset of this many images (for slow models)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for training (default: all cores)."),
    checkpoint_every: float = typer.Option(900.0, help="Also save each training's state within an epoch every so many seconds, so a stopped run loses at most that much."),
    imagenet_weights: Optional[Path] = typer.Option(None, help="A local .safetensors/.pth file of the ImageNet weights a transfer-learning recipe starts from (default: an offline package or timm's download)."),
    n_boot: int = typer.Option(1000, min=1, help="Bootstrap resamples for the 95% confidence intervals."),
    report: bool = typer.Option(False, "--report", help="Then write OUTPUT/report.html: the table, training curves, confusion matrices and, per paper, what could not be reproduced and why (alone: from the finished reproductions)."),
) -> None:
    """Run a paper's experiment under its own protocol (leaks included) and an honest one; report both figures."""
    if paper is None and not report:
        raise ConfigError("name a paper model or 'all' (or pass --report to write the page of finished reproductions)")

    from bloodcell.resources import manifest_path
    from bloodcell.workflows.reproduce import NOT_RUN, Settings, write_report_page
    from bloodcell.workflows.reproduce import reproduce as run_reproduction

    settings = Settings(budget_s=budget, seed=seed, data_root=data_root, pbc_manifest=manifest_path(manifest),
                        copies_per_class=copies_per_class, pretrained=pretrained, score_limit=score_limit,
                        limit_val=limit_val, threads=threads, checkpoint_every_s=checkpoint_every,
                        imagenet_weights=imagenet_weights, n_boot=n_boot,
                        command=" ".join(["bloodcell", *map(shlex.quote, sys.argv[1:])]))
    console = Console()
    for record in run_reproduction(paper, output, settings) if paper is not None else []:
        claimed = "; ".join(f"{k}: {v}" for k, v in record["claimed"].items()) or "not recorded"
        console.print(f"{record['model']}: claimed {claimed}", highlight=False)
        if record.get("status") == NOT_RUN:
            console.print(f"  not run: {record['ours_paper_protocol']['reason']}", highlight=False)
            continue
        for label, key in (("paper's protocol", "ours_paper_protocol"), ("honest protocol", "ours_honest")):
            acc = record[key]["accuracy"]
            console.print(f"  ours, {label}: {100 * acc['estimate']:.1f} % "
                          f"[{100 * acc['low']:.1f}, {100 * acc['high']:.1f}]", highlight=False)
    if paper is not None:
        console.print(f"summary: {output / 'reproductions.md'}", highlight=False)
    if report:
        console.print(f"report: {write_report_page(output)}", highlight=False)
