"""``bloodcell review export|apply``: a person checks a counted sample's doubtful cells; the sample is recounted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bloodcell.cli.options import replace_option

app = typer.Typer(help="Review a counted sample's referred cells; recompute its differential with the corrections.",
                  no_args_is_help=True, rich_markup_mode=None)

COUNTS_HELP = "Folder of one counted sample (holding counts.json), e.g. OUTPUT/<sample id> of `bloodcell count`."
MODEL_HELP = "The model that typed the white cells (as given to `bloodcell count --model`; default: the bundled one)."


@app.command("export")
def export(
    counts: Path = typer.Argument(..., help=COUNTS_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for crops/<item>.png, corrections.csv (to fill in) and review.md."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    every_cell: bool = typer.Option(False, "--all", help="Every white cell, not only the referred and doubtful ones (to build your lab's cell bank); a sample whose white cells look unlike every lab the model knows gets every cell anyway."),
    overwrite: Annotated[bool, replace_option("Export again into an --output that holds a corrections.csv (replacing it, and any decisions filled in).")] = False,
) -> None:
    """Write the referred and doubtful white cells of a counted sample for review: crops, top 3, a corrections CSV."""
    from bloodcell.inference.predictor import load
    from bloodcell.workflows.review import export_review

    exported = export_review(counts, output, load(model), every_cell=every_cell, overwrite=overwrite)
    why = " (every white cell: this sample's cells look unlike every lab the model knows)" if exported.unfamiliar_lab else ""
    typer.echo(f"{len(exported.items)} cells to review{why} -> {output}")
    if exported.items:
        typer.echo(f"fill in decision (accept, relabel, wrong; missing for a missed cell) and label in "
                   f"{output / 'corrections.csv'}, then: bloodcell review apply {counts} "
                   f"--corrections {output / 'corrections.csv'} -o REVIEWED")


@app.command("apply")
def apply(
    counts: Path = typer.Argument(..., help=COUNTS_HELP),
    corrections: Path = typer.Option(..., "--corrections", help="The corrections CSV of `bloodcell review export`, filled in."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the reviewed counts.json, report.md, corrections.csv, labelstudio.json and cells/<class>/ (a `bloodcell adapt` folder)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP + " Its classes are the ones a reviewer may give."),
    bank: Optional[Path] = typer.Option(None, "--bank", help="Your lab's cell bank: a folder the reviewed cells of every sample are added to (a `bloodcell adapt` folder); says how many more of each type it needs."),
) -> None:
    """Apply a reviewer's corrections to a counted sample: recompute its differential, save the corrections and cells."""
    from bloodcell.inference.predictor import load
    from bloodcell.workflows.review import apply_review

    classes = load(model).class_names
    result = apply_review(counts, corrections, output, classes)
    review = result.doc["review"]
    typer.echo(review["summary"])
    cells = ", ".join(f"{name} {n}" for name, n in result.cells.items()) or "none"
    typer.echo(f"reviewed sample -> {output} (report.md, counts.json, corrections.csv, labelstudio.json); "
               f"reviewed cells: {cells}")
    if bank is not None:
        from bloodcell.workflows.cell_bank import WANTED, add_to_bank, still_needed

        held = add_to_bank(output / "cells", bank)
        needed = still_needed(held)
        typer.echo(f"cell bank {bank}: " + (", ".join(f"{name} {n}" for name, n in held.items()) or "empty"))
        if needed:
            typer.echo(f"before adapting, review about {', '.join(f'{n} more {name}' for name, n in needed.items())} "
                       f"({WANTED} per type your lab sees)")
        else:
            typer.echo(f"adapt the model to your lab with: bloodcell adapt {bank} -o adapted.safetensors")
    elif result.cells:
        typer.echo("one sample rarely has enough cells of every type: add the reviewed cells of every sample to your "
                   "lab's cell bank with --bank BANK, then adapt from the bank (`bloodcell adapt BANK`)")
