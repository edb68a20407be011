"""``bloodcell adapt --store URL --lab NAME``: adapt a classifier from a lab's cell bank in the sample store.

The bank (:mod:`bloodcell.store.cell_bank`: every white cell of the lab's reviewed or signed samples whose class
a person confirmed or corrected) is cut from the stored photos and handed to the same adapt workflow as a folder
of cells (:func:`bloodcell.workflows.adapt.adapt`). Each sample whose cells were used keeps an ``adapt_classifier``
entry in its audit trail (who, when, the model file and its SHA-256, the cells used); when that cannot be
written the new model file is removed, so no model exists whose making the samples' trails do not hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bloodcell.errors import DataError
from bloodcell.provenance import file_sha256
from bloodcell.smear.lab_name import look_up_lab
from bloodcell.smear.review import WANTED
from bloodcell.store.cell_bank import bank_crops, record_classifier_adaptation
from bloodcell.workflows.adapt import MIN_CELLS, Adaptation, adapt
from bloodcell.workflows.cells import Cells

if TYPE_CHECKING:
    from bloodcell.store.database import Store

#: The name an adapted model gives a lab whose samples were kept without a lab name (the page's and ``count``'s).
UNNAMED_LAB = "this lab"


def too_few(counts: dict[str, int], lab: str) -> str | None:
    """The sentence saying how many more reviewed cells of which types adapting needs (None: enough to adapt).

    Adapting needs :data:`~bloodcell.workflows.adapt.MIN_CELLS` cells of each of at least 2 types; the two types
    the bank holds most of are named (a bank of fewer types asks for cells of other types)."""
    held = sorted((n, name) for name, n in counts.items() if n)
    nearest = sorted(held, key=lambda item: (-item[0], item[1]))[:2]
    if len(nearest) == 2 and all(n >= MIN_CELLS for n, _ in nearest):
        return None
    missing = [f"{MIN_CELLS - n} more {name}" for n, name in nearest if n < MIN_CELLS]
    missing += {0: [], 1: [f"{MIN_CELLS} of another type"], 2: [f"{MIN_CELLS} of each of 2 types"]}[2 - len(nearest)]
    listed = ", ".join(f"{name} {n}" for n, name in sorted(held, key=lambda item: item[1])) or "no reviewed white cell"
    return (f"the cell bank of {_named(lab)} is too small to adapt from (it holds {listed}): {' and '.join(missing)} "
            f"needed (at least {MIN_CELLS} reviewed cells of each of at least 2 types; about {WANTED} of every type "
            "is better)")


def _named(lab: str) -> str:
    return f"lab {lab!r}" if lab else "the samples kept without a lab name"


def bank_of(store: Store, lab: str) -> tuple[Cells, dict[str, list[int]]]:
    """The lab's bank as cells for :func:`~bloodcell.workflows.adapt.adapt`, and the cells used per sample."""
    with store.session() as session:
        crops = bank_crops(session, store.photos, lab)
    return Cells(crops.images, crops.labels, crops.ids, crops.skipped, labelled_by="type",
                 kept_lab=lab or UNNAMED_LAB), crops.samples


def adapt_from_bank(store: Store, model: str | Path, output: str | Path, *, lab: str, actor: str,
                    seed: int = 0, allow_worse: bool = False, keep: Sequence[str] = ()) -> Adaptation:
    """Adapt ``model`` from ``lab``'s cell bank in ``store`` and write ``output``; each sample used keeps an
    ``adapt_classifier`` entry (by ``actor``) in its audit trail. DataError (one sentence) when the bank is too
    small: how many more cells of which types are needed; WorseThanUnadapted when adapting would type the bank's
    cells worse than the unadapted model (unless ``allow_worse``); ``keep`` as for :func:`~bloodcell.workflows.adapt.adapt`."""
    lab = look_up_lab(lab)
    cells, used = bank_of(store, lab)
    counts: dict[str, int] = {}
    for label in cells.labels:
        counts[label] = counts.get(label, 0) + 1
    sentence = too_few(counts, lab)
    if sentence:
        raise DataError(sentence)
    result = adapt(model, cells, output, seed=seed, allow_worse=allow_worse, keep=keep)  # the lab as the store keeps it
    classifier = {"name": Path(output).name, "sha256": file_sha256(result.path), "lab": lab,
                  "base": Path(str(model)).name, "cv_accuracy": result.fit.cv_accuracy,
                  "cv_accuracy_before": result.fit.cv_accuracy_before,
                  "worse_than_unadapted": result.fit.worse_than_unadapted, "kept": sorted(result.kept)}
    try:
        with store.session() as session:
            record_classifier_adaptation(session, actor, classifier, used, dict(zip(cells.ids, cells.labels)))
    except BaseException:
        Path(result.path).unlink(missing_ok=True)  # a model whose making the audit trail does not hold is not kept
        Path(result.path).with_suffix(".json").unlink(missing_ok=True)
        raise
    return result
