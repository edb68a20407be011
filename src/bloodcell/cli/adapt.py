"""``bloodcell adapt``: fit a model to your lab from a few labelled cells (wiring only)."""

from __future__ import annotations

from pathlib import Path

import typer

from bloodcell.outputs import check_output_file


def adapt(
    cells: Path = typer.Argument(..., help="Folder of your lab's labelled cells: CELLS/<class>/<images>, a few per class (it says when there are too few); classes may be a subset of the model's."),
    output: Path = typer.Option(..., "--output", "-o", help="Adapted checkpoint to write (.safetensors); use it with --model."),
    model: str = typer.Option("pbc8", "--model", "-m", help="Bundled model name or .safetensors checkpoint to adapt."),
    seed: int = typer.Option(0, help="Seed of the cross-validation folds."),
) -> None:
    """Adapt a model to your lab from a few labelled cells, and say how well it then does there."""
    from bloodcell.workflows.adapt import adapt as run_adapt

    check_output_file(output, (".safetensors",), "adapted checkpoint")
    result = run_adapt(model, cells, output, seed=seed)
    fit = result.fit
    counts = ", ".join(f"{name} {n}" for name, n in result.cells.items())
    typer.echo(f"adapted on {sum(result.cells.values())} cells ({counts}) -> {result.path}")
    typer.echo(f"estimated accuracy on your lab ({fit.folds}-fold cross-validation over these cells): "
               f"{fit.cv_accuracy:.1%} adapted, {fit.cv_accuracy_before:.1%} before adapting")
    towards = "the model's own layer" if fit.anchor == "model" else "zero (a fresh layer on the model's features)"
    typer.echo(f"recipe (chosen by that cross-validation): last layer pulled towards {towards}, strength {fit.strength:g}")
    for path, reason in result.skipped:
        typer.echo(f"skipped {path}: {reason}", err=True)
    if result.few:
        listed = ", ".join(f"{name} {n}" for name, n in result.few.items())
        typer.echo(f"few cells for {listed} (fewer than 5): used, but the adapted model's calls of those types rest on "
                   "very little; add reviewed cells of them and adapt again", err=True)
    if result.without_cells:
        typer.echo(f"no cells given for {', '.join(result.without_cells)}: those types keep the model's own weights "
                   "(not adapted to your lab); give cells of every type your lab sees", err=True)
    if fit.cv_accuracy < fit.cv_accuracy_before:
        typer.echo("adapting did not help on these cells: keep the original model, or add more cells", err=True)
