"""``bloodcell adapt``: fit a model to your lab from a few labelled cells, or from its unlabelled cells (wiring only)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bloodcell.errors import ConfigError
from bloodcell.outputs import check_output_file
from bloodcell.smear.lab_name import check_lab, look_up_lab


def adapt(
    cells: Optional[Path] = typer.Argument(None, help="Folder of your lab's labelled cells: CELLS/<class>/<images>, a few per class (it says when there are too few); classes may be a subset of the model's."),
    output: Path = typer.Option(..., "--output", "-o", help="Adapted checkpoint to write (.safetensors); use it with --model."),
    model: str = typer.Option("pbc8", "--model", "-m", help="Bundled model name or .safetensors checkpoint to adapt."),
    store: Optional[str] = typer.Option(None, "--store", help="Instead of CELLS: the lab's cell bank in this sample store (an SQLite file or a postgresql:// URL): the white cells of its reviewed and signed samples whose class a person confirmed or corrected; each sample used keeps the adaptation in its audit trail. Needs --lab."),
    lab: Optional[str] = typer.Option(None, "--lab", help="With --store: the lab whose cell bank is used (\"\" for samples kept without a lab name). With CELLS: the lab's name the adapted model records (default: the folder's name)."),
    unlabelled: Optional[Path] = typer.Option(None, "--unlabelled", help="Instead of labelled cells: a folder of your lab's white-cell images, no labels (at least 20)."),
    counted: Optional[Path] = typer.Option(None, "--counted", help="Instead of labelled cells: the output folder of `bloodcell count` (one sample, or a folder of samples); their typed white cells, no labels."),
    keep: Optional[List[str]] = typer.Option(None, "--keep", help="A type your lab sees but gave fewer than 5 cells of (repeat for more): a cell the model calls so more confidently than any of your given cells of other types it mistook for it keeps that type, so the adapted model still finds it. Labelled cells only."),
    seed: int = typer.Option(0, help="Seed of the cross-validation folds."),
    allow_worse: bool = typer.Option(False, "--allow-worse", help="Write the adapted model even when its cross-validated accuracy on your cells is below the unadapted model's on the same cells (refused otherwise; the model records it)."),
) -> None:
    """Adapt a model to your lab from its reviewed cells, or its unlabelled ones, and say what that changed.

    Labelled: CELLS (a folder of class folders) or --store with --lab (the lab's cell bank); the cross-validated
    accuracy is printed. Unlabelled: --unlabelled DIR or --counted DIR; the model is kept unadapted when a
    label-free rule says adapting would not help."""
    sources = (("CELLS", cells), ("--store", store), ("--unlabelled", unlabelled), ("--counted", counted))
    given = [name for name, value in sources if value is not None]
    if len(given) != 1:
        raise ConfigError("give one of CELLS (labelled cells), --store with --lab, --unlabelled DIR or --counted DIR"
                        + (f", not {' and '.join(given)}" if given else ""))
    if store is not None and lab is None:
        raise ConfigError("--store needs --lab: the lab whose cell bank in the store is used")
    if lab is not None:  # --store reads a lab's bank, under any name the store holds; CELLS names a lab anew
        lab = look_up_lab(lab) if store is not None else check_lab(lab)
    if lab is not None and store is None and not lab:
        raise ConfigError("--lab names your lab: give its name, or leave --lab out to use the folder's name")
    if lab is not None and store is None and cells is None:
        raise ConfigError("--lab names the lab of labelled cells (CELLS) or of a cell bank (--store), not of unlabelled ones")
    if keep and (unlabelled is not None or counted is not None):
        raise ConfigError("--keep is for labelled cells (CELLS or --store): adapting from unlabelled ones changes no "
                          "type's weights")
    if allow_worse and (unlabelled is not None or counted is not None):
        raise ConfigError("--allow-worse is for labelled cells (CELLS or --store): adapting from unlabelled ones "
                          "keeps the model unadapted when a label-free rule says it would not help")
    check_output_file(output, (".safetensors",), "adapted checkpoint")
    if unlabelled is not None or counted is not None:
        _adapt_unlabelled(model, unlabelled, counted, output)
        return
    from bloodcell.workflows.adapt import MIN_CELLS, WorseThanUnadapted

    try:
        result = _adapt_labelled(model, cells, store, lab, output, seed, allow_worse, keep or [])
    except WorseThanUnadapted as exc:
        raise WorseThanUnadapted(f"{exc}, or pass --allow-worse to write it all the same") from None
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
        typer.echo(f"no cells given for {', '.join(result.without_cells)}: those types are not adapted to your lab; "
                   "give cells of every type your lab sees", err=True)
    gated = [name for name in result.gated if name not in result.kept]
    if gated:
        typer.echo(f"a cell the model itself calls {' or '.join(gated)} keeps that type (the adapted layer "
                   "decides the others)", err=True)
    for name, floor in result.kept.items():
        above = "" if floor is None else f" more confidently than any of your given cells of other types it mistook for {name}"
        typer.echo(f"kept {name}: a cell the model itself calls {name}{above} keeps that type", err=True)
    for name, share in result.at_risk.items():
        typer.echo(f"warning: no cells of {name}, and before adapting the model called {share:.1%} of your given "
                   f"cells {name}; keeping all its {name} calls would keep those mistakes too, so if your lab sees "
                   f"{name} cells the adapted model may miss them: give at least {MIN_CELLS} reviewed {name} cells and "
                   f"adapt again, or adapt with --keep {name} to keep only its calls more confident than those "
                   "mistakes", err=True)
    if fit.worse_than_unadapted:
        typer.echo(f"warning: written because of --allow-worse, though adapting types your cells worse "
                   f"({fit.cv_accuracy:.1%} adapted, {fit.cv_accuracy_before:.1%} before; the model records it): "
                   "keep the original model, or give more cells of each type and check their types", err=True)


def _adapt_labelled(model: str, cells: Optional[Path], store: Optional[str], lab: Optional[str], output: Path,
                    seed: int, allow_worse: bool, keep: list[str]):
    """The adaptation from labelled cells: the folder CELLS, or the lab's cell bank in ``store``."""
    if store is None:
        from bloodcell.workflows.adapt import adapt as run_adapt

        return run_adapt(model, cells, output, seed=seed, lab=lab, allow_worse=allow_worse, keep=keep)
    from bloodcell.store.components import system_account
    from bloodcell.store.database import open_store
    from bloodcell.workflows.bank_adapt import adapt_from_bank

    kept = open_store(store, create=False)
    try:
        return adapt_from_bank(kept, model, output, lab=lab, actor=system_account(), seed=seed, allow_worse=allow_worse,
                               keep=keep)
    finally:
        kept.close()


def _adapt_unlabelled(model: str, unlabelled: Path | None, counted: Path | None, output: Path) -> None:
    from bloodcell.workflows.adapt_unlabelled import adapt_unlabelled, counted_cells, unlabelled_cells

    folder = unlabelled or counted
    cells = unlabelled_cells(folder) if unlabelled else counted_cells(folder)
    for path, reason in cells.skipped:
        typer.echo(f"skipped {path}: {reason}", err=True)
    result = adapt_unlabelled(model, cells, output, Path(folder).resolve().name,
                              "unlabelled folder" if unlabelled else "counted samples")
    decision = result.decision
    if decision.weight is None:
        why = "; ".join(f"at weight {c.weight}: {', '.join(c.reasons)}" for c in decision.candidates)
        typer.echo(f"kept the unadapted model: re-estimating its batch-norm statistics on {result.cells} cells would "
                   f"not clearly help ({why}); wrote it, with this record, to {result.path}")
        return
    chosen = decision.chosen
    refinement = "TENT with a diversity term" if decision.refinement.diversity else "TENT"
    how = (f"then {refinement} on its batch-norm scales" if decision.tent else
           f"{refinement} turned down by the rule" if decision.refinement.steps else "no refinement")
    typer.echo(f"adapted without labels on {result.cells} cells (batch-norm statistics, weight {decision.weight}; "
               f"{how}) -> "
               f"{result.path}; mean entropy {chosen.statistics['mean_entropy']:.3f} against "
               f"{decision.before['mean_entropy']:.3f} unadapted, {chosen.statistics['agreement']:.0%} of the calls "
               "unchanged. Its accuracy on your lab is not measured: check it on reviewed cells (`bloodcell evaluate`)")
