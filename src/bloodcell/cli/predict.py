"""``bloodcell predict``: classify cell images (files, folders, globs) into a table, CSV or JSON."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from bloodcell.cli.choices import Engine
from bloodcell.cli.options import EngineOption, ModelName, ReferBelow, Threads, Tta, output_option
from bloodcell.errors import ConfigError, OutputError
from bloodcell.inference.defaults import DEFAULT_REFER_BELOW
from bloodcell.outputs import check_output_folder
from bloodcell.progress import track
from bloodcell.writing import is_escaped, name_text, output_name, write_failed

if TYPE_CHECKING:
    from bloodcell.data.inputs import Inputs
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
    resume: bool = typer.Option(False, "--resume", help="Keep the results an interrupted or failed run already wrote to --output (files unchanged since, by SHA-256) and classify only the rest."),
) -> None:
    """Classify single-cell images; bad files become rows with an error, the rest go on."""
    from bloodcell.data.inputs import collect_inputs
    from bloodcell.inference.records import check_records_path
    from bloodcell.inference.predictor import load, torch_threads

    if explain is not None and engine == "onnx":
        raise ConfigError("--explain needs the torch engine (LayerCAM uses gradients)")
    if output is not None:
        check_records_path(output)
    if resume and output is None:
        raise ConfigError("--resume needs --output (the results file to finish)")
    if explain is not None:
        check_output_folder(explain, "LayerCAM overlays")
    inputs = collect_inputs(paths)
    import torch

    torch.set_num_threads(torch_threads(engine.value, threads))
    classifier = load(model, engine=engine.value, num_threads=threads)
    made_with = _made_with(classifier, top_k, refer_below, tta) if output is not None else None
    kept = _resumable(inputs, output, made_with) if resume else []
    results: list[Prediction] = []
    try:
        _classify(classifier, inputs, output, results, kept, made_with, top_k=top_k, refer_below=refer_below,
                  tta=tta, batch_size=batch_size)
        if explain is not None:
            _write_explanations(classifier, results, explain)
    except KeyboardInterrupt:
        _interrupted(results, kept, output, len(inputs.paths))
    _summarise(results, inputs, output, len(kept))


def _made_with(classifier: Classifier, top_k: int, refer_below: float | None, tta: bool) -> str:
    """How this run makes its results: the model file and its SHA-256, the engine, and the options that change a
    result."""
    from bloodcell.store.components import classifier_used

    name, sha256 = classifier_used(classifier)
    return (f"{name} sha256:{(sha256 or '')[:16]} engine={classifier.engine} top_k={top_k} "
            f"refer_below={refer_below} tta={tta}")


def _resumable(inputs: Inputs, output: Path, made_with: str) -> list[dict]:
    """The earlier run's records of files unchanged since (by SHA-256); their paths leave ``inputs``. ConfigError
    when the earlier run made its results another way (another model or options): they would be mixed in."""
    from bloodcell.data.inputs import input_sha256
    from bloodcell.inference.records import read_records

    earlier = read_records(output)
    others = sorted(str(r["made_with"] or "") for r in earlier if r["made_with"] != made_with)
    if others:
        raise ConfigError(f"--resume: {name_text(str(output))} holds results made with "
                          f"{others[-1] or 'a model and options it does not record'}, not {made_with}; rerun with "
                          "that model and those options, or without --resume to start over")
    hashes = {name_text(str(p)): input_sha256(p) for p in inputs.paths}
    kept = [r for r in earlier if hashes.get(r["path"]) == r["sha256"]]
    done = {r["path"] for r in kept}
    inputs.paths = [p for p in inputs.paths if name_text(str(p)) not in done]
    return kept


def _classify(classifier: Classifier, inputs: Inputs, output: Path | None, results: list[Prediction],
              kept: list[dict], made_with: str | None, **options) -> None:
    """Predictions of the inputs' paths into ``results``; written to ``output`` batch by batch when given (after the
    ``kept`` records of an earlier run and a row with the error of each unusable folder entry), else printed."""
    from bloodcell.data.inputs import input_sha256
    from bloodcell.inference.records import RecordWriter

    batches = classifier.predict_batches([str(p) for p in inputs.paths], progress=True, **options)
    if output is None:
        for batch in batches:
            results += batch
        _print_table([r.to_record() for r in results])
        return
    with RecordWriter(output) as writer:
        writer.write(kept + [{"path": path, "error": reason} for path, reason in inputs.problems])
        for batch in batches:
            writer.write([{**r.to_record(), "sha256": input_sha256(r.path), "made_with": made_with} for r in batch])
            results += batch


def _interrupted(results: list[Prediction], kept: list[dict], output: Path | None, total: int) -> None:
    """Ctrl-C: say what was written and how to finish; exit 130."""
    if output is None:
        typer.echo(f"interrupted after {len(results)} images; nothing was written (no --output)", err=True)
    elif len(results) < total:
        typer.echo(f"interrupted: {output} holds {len(kept) + len(results)} results, {total - len(results)} images "
                   "are still to do; rerun the same command with --resume to finish", err=True)
    else:
        typer.echo(f"interrupted while making heat maps; all {len(kept) + len(results)} results are in {output}",
                   err=True)
    raise typer.Exit(130)


def _summarise(results: list[Prediction], inputs, output: Path | None, kept: int = 0) -> None:
    """One line of totals; unusable folder entries and a smear-photo hint on stderr; exit 1 when nothing was read."""
    from bloodcell.inference.ood import UNFAMILIAR

    failed = sum(r.error is not None for r in results)
    referred = sum(bool(r.referred) for r in results)
    not_cells = sum(any(h in (r.reason or "") + (r.note or "") for h in SMEAR_HINTS) for r in results)
    earlier = f"; {kept} kept from the earlier run" if kept else ""
    typer.echo(f"{len(results)} images{f' -> {output}' if output else ''} ({failed} unreadable, {referred} "
               f"referred{earlier})")
    for path, reason in inputs.problems:
        typer.echo(f"skipped {name_text(path)}: {reason}", err=True)
    escaped = sum(is_escaped(str(r.path)) for r in results)
    if escaped:
        typer.echo(f"{escaped} file name(s) are not valid UTF-8: {output or 'the table'} shows them with \\xNN "
                   "escapes for those bytes", err=True)
    if not_cells:
        typer.echo(f"{not_cells} image(s) do not look like a single blood cell (see their reason or note); for smear "
                   "photos use `bloodcell count` (counts and a differential)", err=True)
    unfamiliar = sum((r.reason or "").startswith(UNFAMILIAR) for r in results)
    if unfamiliar:
        typer.echo(f"{unfamiliar} image(s) look like cells of a lab unlike those this model learned from: have a "
                   "person review them, then adapt the model to your lab from about 10 reviewed cells per type: "
                   "`bloodcell adapt DIR -o adapted.safetensors`", err=True)
    if failed == len(results) and not kept:
        typer.echo("no image could be classified", err=True)
        raise typer.Exit(1)


def _write_explanations(classifier: Classifier, results: list[Prediction], folder: Path) -> None:
    """One heat map per classified image, named after it (escaped, shortened with a hash when too long, numbered when
    two images share a name) and listed in ``index.csv`` beside them (image path as in the results, heat-map file,
    label), so that each is found from its row; each written whole or not at all, and a failed one stops the rest
    with one sentence saying how many were made (the index lists those)."""
    used: set[str] = set()
    made: list[tuple[str, str, str]] = []
    for result in track([r for r in results if r.error is None], "LayerCAM", unit="images"):
        path = folder / output_name(Path(result.path).stem, "_gradcam.png", used)
        try:  # written whole or not at all (writing.save_image)
            classifier.explain(result.path, path, class_index=classifier.class_names.index(result.label))
        except (OSError, OutputError) as exc:
            with suppress(OutputError):  # the disk that refused the heat map may refuse its index too
                _write_heat_map_index(folder, made)
            kept = f"the {len(made)} heat maps made before are kept in {folder}, listed in index.csv"
            raise (write_failed(path, exc, kept) if isinstance(exc, OSError) else OutputError(f"{exc}; {kept}")) from None
        made.append((name_text(result.path), name_text(path.name), result.label))
    _write_heat_map_index(folder, made)


def _write_heat_map_index(folder: Path, made: list[tuple[str, str, str]]) -> None:
    import csv

    from bloodcell.writing import atomic_file

    with atomic_file(folder / "index.csv") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "heat_map", "label"))
        writer.writerows(made)


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
        table.add_row(name_text(r["path"] or ""), r["label"] or "", confidence, referred, r["top_k"].replace(";", " "), note, style=style)
    Console().print(table)
