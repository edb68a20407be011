"""``bloodcell evaluate``: score a checkpoint on a test split or an external folder and write a report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def evaluate(
    checkpoint: Path = typer.Argument(..., help="Checkpoint: .safetensors (torch) or .skops (classical)."),
    dataset: str = typer.Option("pbc", help="Dataset of the manifest, or 'folder' for a root/<class>/<image> folder."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest CSV with the frozen split (not for --dataset folder)."),
    split: str = typer.Option("test", help="Split to score: test (val needs --allow-non-test; train is refused)."),
    out: Path = typer.Option(..., help="Folder for metrics.json, report.md, report.html, predictions.csv, figures/."),
    taxonomy: Optional[str] = typer.Option(None, help="pbc8 or pbc11 (default: the checkpoint's)."),
    data_root: Optional[Path] = typer.Option(None, help="Datasets folder (default $BLOODCELL_DATA), or the folder dataset itself."),
    label_map: Optional[Path] = typer.Option(None, help="JSON or CSV mapping dataset classes onto the model's classes."),
    tta: bool = typer.Option(False, "--tta", help="Average over the 8 flips/rotations of each image."),
    limit: Optional[int] = typer.Option(None, help="Score a stratified subset of this many images (quick look, not a result)."),
    allow_non_test: bool = typer.Option(False, "--allow-non-test", help="Allow --split val; the report is labelled VALIDATION."),
    batch_size: int = typer.Option(32, help="Images per inference batch."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for the 95% confidence intervals."),
) -> None:
    """Score a checkpoint and write metrics, a Markdown summary and a self-contained HTML report."""
    from rich.console import Console

    from bloodcell.evaluation import evaluate as run_evaluation
    from bloodcell.evaluation import write_report
    from bloodcell.report.summary import headline_rows

    evaluation = run_evaluation(
        checkpoint, dataset=dataset, manifest=manifest, split=split, taxonomy=taxonomy, data_root=data_root,
        label_map=label_map, tta=tta, limit=limit, allow_non_test=allow_non_test, batch_size=batch_size, n_boot=n_boot,
    )
    files = write_report(evaluation, out)
    result = evaluation.result
    console = Console()
    style = "bold green" if result["is_test_result"] else "bold red"
    console.print(f"[{style}]{result['label']}[/]: {result['title']}", highlight=False)
    counts = result["counts"]
    console.print(f"scored {counts['scored']} images, skipped {counts['skipped']}, "
                  f"not scored (unknown class) {counts['unmapped']}", highlight=False)
    for name, value in headline_rows(result)[:3]:
        console.print(f"  {name}: {value}", highlight=False)
    console.print(f"report: {files['html']}", highlight=False)
