"""``bloodcell evaluate``: score a model on a test split or an external folder and write a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from bloodcell.cli.choices import Engine, Split, Taxonomy
from bloodcell.cli.options import EngineOption, Threads, Tta, data_root_option
from bloodcell.outputs import check_output_folder


def evaluate(
    model: str = typer.Option("pbc8", "--model", "-m", help="Bundled model name or model file: .safetensors (torch), .onnx (exported; always onnxruntime) or .skops (classical)."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for metrics.json, report.md, report.html, predictions.csv, figures/."),
    dataset: str = typer.Option("pbc", help="Dataset of the manifest, or 'folder' for a root/<class>/<image> folder."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest CSV with the frozen split (not for --dataset folder)."),
    split: Split = typer.Option(Split.test, help="Split to score (val needs --allow-non-test; train is never scored)."),
    taxonomy: Optional[Taxonomy] = typer.Option(None, help="Class taxonomy (default: the checkpoint's)."),
    data_root: Annotated[Optional[Path], data_root_option("Datasets folder (default $BLOODCELL_DATA), or the folder dataset itself.")] = None,
    label_map: Optional[Path] = typer.Option(None, help="JSON or CSV mapping dataset classes onto the model's classes."),
    tta: Tta = False,
    engine: EngineOption = Engine.torch,
    threads: Threads = 2,
    limit: Optional[int] = typer.Option(None, help="Score a stratified subset of this many images (quick look, not a result)."),
    allow_non_test: bool = typer.Option(False, "--allow-non-test", help="Allow --split val; the report is labelled VALIDATION."),
    ignore_changed_files: bool = typer.Option(False, "--ignore-changed-files", help="Score files whose sha256 no longer matches the manifest (listed in the report)."),
    batch_size: int = typer.Option(32, min=1, help="Images per inference batch."),
    n_boot: int = typer.Option(1000, min=1, help="Bootstrap resamples for the 95% confidence intervals."),
) -> None:
    """Score a model and write metrics, a Markdown summary and a self-contained HTML report."""
    from bloodcell.report.summary import headline_rows
    from bloodcell.workflows.evaluate import evaluate as run_evaluation
    from bloodcell.workflows.evaluate import write_report

    check_output_folder(output, "evaluation report")
    if engine == Engine.torch:
        import torch

        torch.set_num_threads(threads)
    evaluation = run_evaluation(
        model, dataset=dataset, manifest=manifest, split=split.value, taxonomy=taxonomy.value if taxonomy else None, data_root=data_root,
        label_map=label_map, tta=tta, limit=limit, allow_non_test=allow_non_test, batch_size=batch_size, n_boot=n_boot,
        check_files=not ignore_changed_files, engine=engine.value, threads=threads,
    )
    files = write_report(evaluation, output)
    result = evaluation.result
    console = Console()
    style = "bold green" if result["is_test_result"] else "bold red"
    console.print(f"[{style}]{result['label']}[/]: {result['title']}", highlight=False)
    counts = result["counts"]
    reasons = (("unspecified_fine_label", "without a fine label"), ("outside_taxonomy", "outside the taxonomy"),
               ("repeated_rows", "repeated rows (each file scored once)"))
    left_out = ", ".join(f"{counts[key]} {why}" for key, why in reasons if counts.get(key))
    console.print(f"scored {counts['scored']} images, skipped {counts['skipped']} unreadable, "
                  f"not scored (class unknown to the model) {counts['unmapped']}"
                  + (f"; rows left out: {left_out}" if left_out else ""), highlight=False)
    for note in result["notes"]:
        console.print(f"  note: {note}", highlight=False)
    for name, value in headline_rows(result)[:3]:
        console.print(f"  {name}: {value}", highlight=False)
    console.print(f"report: {files['html']}", highlight=False)
