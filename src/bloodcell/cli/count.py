"""``bloodcell count``: smear photos of one or more samples -> counts, annotated PNGs, differentials, reports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Optional

import typer

from bloodcell.errors import BloodcellError, CheckpointError, ConfigError, WeightsUnavailableError
from bloodcell.cli.choices import Engine
from bloodcell.cli.options import EngineOption, Threads, Tta
from bloodcell.inference.defaults import DEFAULT_REFER_BELOW
from bloodcell.outputs import check_output_folder
from bloodcell.writing import is_escaped, write_text


def count(
    paths: Optional[list[str]] = typer.Argument(None, help="Smear photos: files, folders (recursive) or glob patterns; a folder of sub-folders is one sample per sub-folder."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for counts.json, annotated/*.png, report.md (a sub-folder per sample) and samples.csv."),
    samples: Optional[Path] = typer.Option(None, "--samples", help="CSV with columns sample_id,photo (paths relative to the CSV) instead of PATHS."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Bundled model name or checkpoint that types the white cells (default pbc8; an adapted checkpoint from `bloodcell adapt` fits your lab)."),
    detector: str = typer.Option("learned", "--detector", help="Cell detector: learned (the bundled one), classical, or a detector checkpoint PATH.safetensors."),
    cell_size_px: Optional[float] = typer.Option(None, "--cell-size-px", help="Typical red-cell diameter in the photos' pixels; default: estimated per photo."),
    refer_below: float = typer.Option(DEFAULT_REFER_BELOW, "--refer-below", min=0.0, max=1.0, help="Refer white cells typed below this confidence."),
    evaluate: bool = typer.Option(False, "--evaluate", help="Compare with the labels beside the photos (VOC or YOLO) and write evaluation.json."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Folder of <photo stem>.xml (VOC) or .txt (YOLO) labels (default: ../Annotations or ../labels next to the images)."),
    resume: bool = typer.Option(False, "--resume", help="Keep the samples an interrupted or failed run already finished in --output (same photos, unchanged by SHA-256) and count only the rest."),
    store: Optional[str] = typer.Option(None, "--store", help="Also keep each sample in this sample store (an SQLite file or a postgresql:// URL) for review, sign-off and export."),
    engine: EngineOption = Engine.torch,
    threads: Threads = 2,
    tta: Tta = False,
) -> None:
    """Count red cells, white cells and platelets on smear photos and report each sample's differential."""
    from bloodcell.inference.predictor import load
    from bloodcell.smear.detectors import resolve_detector
    from bloodcell.smear.learned_detector import check_cell_size
    from bloodcell.store.components import system_account
    from bloodcell.store.database import open_store
    from bloodcell.workflows.count import (
        SAMPLES_CSV,
        CountInterrupted,
        check_labelled,
        count_samples,
        samples_from_csv,
        samples_from_folders,
    )

    if (paths is None) == (samples is None):
        raise ConfigError("give the smear photos either as PATHS or with --samples FILE.csv (not both)")
    check_cell_size(cell_size_px)
    if output.suffix.lower() in (".json", ".md", ".png", ".csv"):
        raise ConfigError(f"{output}: --output is a folder (counts.json, report.md and annotated/ go inside it)")
    with _removed_if_refused(output):  # checked before any input is read; left only once counting can start
        resolve_detector(detector)
        groups = samples_from_csv(samples) if samples is not None else samples_from_folders(paths)
        if evaluate:
            check_labelled(groups, labels)
        if engine == Engine.torch:
            import torch

            torch.set_num_threads(threads)
        try:
            classifier, reason = load(model, engine=engine.value, num_threads=threads), None
        except (WeightsUnavailableError, CheckpointError) as exc:
            if model is not None:
                raise
            classifier, reason = None, str(exc)
        kept = open_store(store) if store else None
    try:
        docs = count_samples(groups, output, classifier, detector=detector, refer_below=refer_below,
                             cell_size_px=cell_size_px, typing_unavailable=reason, resume=resume, store=kept,
                             actor=system_account(), tta=tta)
    except CountInterrupted as stop:
        typer.echo(f"interrupted: {stop.finished} of {stop.total} samples are finished in {output} "
                   f"({SAMPLES_CSV}); rerun the same command with --resume to do the rest (the photos already "
                   "counted are kept)", err=True)
        raise typer.Exit(130) from None
    counted = sum(len(d["images"]) for d in docs)
    skipped = sum(len(d["errors"]) for d in docs)
    for doc in docs:
        c = doc["sample"]["counts"]
        typer.echo(f"{doc['sample_id']}: {len(doc['images'])} photos ({len(doc['errors'])} skipped): "
                   f"RBC {c['RBC']}, WBC {c['WBC']}, Platelets {c['Platelets']}")
        for error in doc["errors"]:
            typer.echo(f"  skipped {error['path']}: {error['error']}", err=True)
        check = doc["sample"].get("lab_check")
        if check and check["unfamiliar_lab"]:
            typer.echo(f"  unfamiliar lab: {check['message']}", err=True)
    typer.echo(f"{counted} photos counted, {skipped} skipped -> {output}" + (f" and {kept.where}" if kept else ""))
    escaped = sum(is_escaped(str(photo)) for group in groups for photo in group.photos)
    if escaped:
        typer.echo(f"{escaped} photo name(s) are not valid UTF-8: the outputs have them with \\xNN escapes for "
                   "those bytes", err=True)
    if reason:
        typer.echo(f"white-cell types unavailable: {reason}", err=True)
    if not counted:
        typer.echo("no photo could be counted", err=True)
        raise typer.Exit(1)
    if evaluate:
        _evaluate([e for d in docs for e in d["images"]], labels, output)


@contextmanager
def _removed_if_refused(output: Path) -> Iterator[None]:
    """Check the output folder (made when missing) and remove it again, if it was made here, when the block is
    refused: a bad input, detector, model or store leaves no empty folder behind."""
    new_folder = not output.exists()
    check_output_folder(output, "counts")
    try:
        yield
    except BloodcellError:
        if new_folder:
            with suppress(OSError):
                output.rmdir()
        raise


def _evaluate(entries: list[dict], labels: Path | None, output: Path) -> None:
    from bloodcell.workflows.count import evaluate_against_labels

    result = evaluate_against_labels(entries, labels)
    write_text(output / "evaluation.json", json.dumps(result, indent=2) + "\n")
    for source, figures in result["sources"].items():
        for label in ("RBC", "WBC", "Platelets"):
            r = {k: "n/a" if v is None else f"{v:.3f}" for k, v in figures[label].items() if not isinstance(v, int)}
            typer.echo(f"{source} {label}: count accuracy {r['count_accuracy']}, AP50 {r['ap50']}, "
                       f"MAPE {r['mape']}, exact {r['exact_fraction']}")
    if result["unlabelled_photos"]:
        typer.echo(f"{len(result['unlabelled_photos'])} photos had no labels and were not scored", err=True)
