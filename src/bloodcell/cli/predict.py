"""``bloodcell predict``: classify cell images (files, folders, globs) into a table, CSV or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from bloodcell.cli.choices import Engine
from bloodcell.cli.options import EngineOption, ModelName, ReferBelow, Threads, Tta, output_option
from bloodcell.errors import ConfigError
from bloodcell.inference.defaults import DEFAULT_REFER_BELOW
from bloodcell.outputs import check_output_folder
from bloodcell.progress import track

if TYPE_CHECKING:
    from bloodcell.inference.files import Inputs
    from bloodcell.inference.predictor import Classifier, Prediction

SMEAR_HINTS = ("not a single blood cell", "white cells in this image")


def predict(
    paths: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) or glob patterns."),
    model: ModelName = None,
    output: Annotated[Optional[Path], output_option("Write results to FILE.csv or FILE.json (as they come) instead of printing a table.")] = None,
    top_k: int = typer.Option(3, "--top-k", min=1, help="Number of most probable classes to report."),
    refer_below: ReferBelow = DEFAULT_REFER_BELOW,
    tta: Tta = False,
    explain: Optional[Path] = typer.Option(None, "--explain", help="Write a LayerCAM heat-map overlay PNG per image into this folder (where the score is most sensitive)."),
    engine: EngineOption = Engine.torch,
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per batch."),
    threads: Threads = 2,
) -> None:
    """Classify single-cell images; bad files become rows with an error, the rest go on."""
    from bloodcell.inference.files import check_records_path, collect_inputs
    from bloodcell.inference.predictor import load

    if explain is not None and engine == "onnx":
        raise ConfigError("--explain needs the torch engine (LayerCAM uses gradients)")
    if output is not None:
        check_records_path(output)
    if explain is not None:
        check_output_folder(explain, "LayerCAM overlays")
    inputs = collect_inputs(paths)
    if engine == Engine.torch:
        import torch

        torch.set_num_threads(threads)
    classifier = load(model, engine=engine.value, num_threads=threads)
    results = _classify(classifier, inputs, output, top_k=top_k, refer_below=refer_below, tta=tta,
                        batch_size=batch_size)
    if explain is not None:
        _write_explanations(classifier, results, explain)
    _summarise(results, inputs, output)


def _classify(classifier: Classifier, inputs: Inputs, output: Path | None, **options) -> list[Prediction]:
    """Predictions of the inputs' paths; written to ``output`` batch by batch when given (after a row with the
    error of each unusable folder entry), else printed as a table."""
    from bloodcell.inference.files import RecordWriter

    results: list[Prediction] = []
    batches = classifier.predict_batches([str(p) for p in inputs.paths], progress=True, **options)
    if output is None:
        for batch in batches:
            results += batch
        _print_table([r.to_record() for r in results])
        return results
    with RecordWriter(output) as writer:
        writer.write([{"path": path, "error": reason} for path, reason in inputs.problems])
        for batch in batches:
            writer.write([r.to_record() for r in batch])
            results += batch
    return results


def _summarise(results: list[Prediction], inputs, output: Path | None) -> None:
    """One line of totals; unusable folder entries and a smear-photo hint on stderr; exit 1 when nothing was read."""
    from bloodcell.inference.ood import UNFAMILIAR

    failed = sum(r.error is not None for r in results)
    referred = sum(bool(r.referred) for r in results)
    not_cells = sum(any(h in (r.reason or "") + (r.note or "") for h in SMEAR_HINTS) for r in results)
    typer.echo(f"{len(results)} images{f' -> {output}' if output else ''} ({failed} unreadable, {referred} referred)")
    for path, reason in inputs.problems:
        typer.echo(f"skipped {path}: {reason}", err=True)
    if not_cells:
        typer.echo(f"{not_cells} image(s) do not look like a single blood cell (see their reason or note); for smear "
                   "photos use `bloodcell count` (counts and a differential)", err=True)
    unfamiliar = sum((r.reason or "").startswith(UNFAMILIAR) for r in results)
    if unfamiliar:
        typer.echo(f"{unfamiliar} image(s) look like cells of a lab unlike those this model learned from; adapt it "
                   "to your lab with a few labelled cells per class: `bloodcell adapt DIR -o adapted.safetensors` (smear photos "
                   "with one white cell look alike: count those with `bloodcell count`)", err=True)
    if failed == len(results):
        typer.echo("no image could be classified", err=True)
        raise typer.Exit(1)


def _write_explanations(classifier: Classifier, results: list[Prediction], folder: Path) -> None:
    used: set[str] = set()
    for result in track([r for r in results if r.error is None], "LayerCAM", unit="images"):
        stem = Path(result.path).stem
        name, n = f"{stem}_gradcam.png", 1
        while name in used:
            n += 1
            name = f"{stem}_{n}_gradcam.png"
        used.add(name)
        classifier.explain(result.path, folder / name, class_index=classifier.class_names.index(result.label))


def _print_table(records: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for column in ("path", "label", "confidence", "referred", "top_k", "error / reason"):
        table.add_column(column, overflow="fold")
    for r in records:
        note = r["error"] or r["reason"] or ""
        confidence = "" if r["confidence"] is None else f"{r['confidence']:.3f}"
        referred = "" if r["referred"] is None else ("yes" if r["referred"] else "no")
        style = "red" if r["error"] else ("yellow" if r["referred"] else None)
        table.add_row(r["path"] or "", r["label"] or "", confidence, referred, r["top_k"].replace(";", " "), note, style=style)
    Console().print(table)
