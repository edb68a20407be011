"""``bloodcell adapt``: fit a model to your lab from a few labelled cells (wiring only)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bloodcell.outputs import check_output_file


def adapt(
    cells: Optional[Path] = typer.Argument(None, help="Folder of your lab's labelled cells: CELLS/<class>/<images>, a few per class (it says when there are too few); classes may be a subset of the model's. Not with --store."),
    output: Path = typer.Option(..., "--output", "-o", help="Adapted checkpoint to write (.safetensors); use it with --model."),
    model: str = typer.Option("pbc8", "--model", "-m", help="Bundled model name or .safetensors checkpoint to adapt."),
    store: Optional[str] = typer.Option(None, "--store", help="Adapt from the lab's cell bank in this sample store (an SQLite file or a postgresql:// URL): the white cells of its reviewed and signed samples whose class a person confirmed or corrected; each sample used keeps the adaptation in its audit trail. Needs --lab."),
    lab: Optional[str] = typer.Option(None, "--lab", help="With --store: the lab whose cell bank is used (\"\" for samples kept without a lab name)."),
    seed: int = typer.Option(0, help="Seed of the cross-validation folds."),
) -> None:
    """Adapt a model to your lab from a few labelled cells, and say how well it then does there."""
    from bloodcell.errors import ConfigError

    if (cells is None) == (store is None):
        raise ConfigError("give CELLS (a folder of labelled cells) or --store with --lab, one of the two")
    if (store is None) != (lab is None):
        raise ConfigError("--store and --lab go together: the lab whose cell bank in the store is used")
    check_output_file(output, (".safetensors",), "adapted checkpoint")
    if store is None:
        from bloodcell.workflows.adapt import adapt as run_adapt

        result = run_adapt(model, cells, output, seed=seed)
    else:
        from bloodcell.store.components import system_account
        from bloodcell.store.database import open_store
        from bloodcell.workflows.bank_adapt import adapt_from_bank

        kept = open_store(store)
        try:
            result = adapt_from_bank(kept, model, output, lab=lab, actor=system_account(), seed=seed)
        finally:
            kept.close()
    fit = result.fit
    counts = ", ".join(f"{name} {n}" for name, n in result.cells.items())
    typer.echo(f"adapted on {sum(result.cells.values())} cells ({counts}) -> {result.path}")
    typer.echo(f"estimated accuracy on your lab ({fit.folds}-fold cross-validation over these cells): "
               f"{fit.cv_accuracy:.1%} adapted, {fit.cv_accuracy_before:.1%} before adapting")
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
