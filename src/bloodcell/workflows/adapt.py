"""``bloodcell adapt``: fit a model to a new lab from a few labelled cells of that lab.

``DIR/<class>/<images>`` holds 5-20 cells per class from the lab's own microscope (classes may be
a subset of the model's; a class with fewer cells takes part with a warning, a class with none keeps
the model's own weights). The model's last layer is refitted on them (:mod:`bloodcell.train.head`:
all 8 quarter-turn and mirror views of each cell, pulled towards the model's own layer or towards
zero, the anchor, strength and the standing kept by classes given no cells chosen by
cross-validation over the cells; classes given no cells that the model's own layer rarely finds among them
gated, so that the model's own layer still finds their cells: :mod:`bloodcell.models.heads`; the others are
at risk, and said to be, unless the user keeps them: ``keep`` names types the lab sees but gave fewer than
:data:`MIN_CELLS` cells of, gated above the model's own mistakes of them among the given cells), its
temperature refitted on the out-of-fold logits,
and its out-of-distribution guard learns the lab's cells as a familiar source. The result is a
checkpoint that ``predict``, ``count``, ``serve`` and ``evaluate`` take with ``--model``; its
``adaptation`` metadata records the lab, the cells and the cross-validated accuracy (an estimate
of the accuracy on that lab, slightly optimistic: see :mod:`bloodcell.train.head`), next to the
unadapted model's accuracy on the same cells. Both are measured on the plain view of the same cells by models
that did not learn from them (the unadapted one never saw them; the adapted recipe is scored out of fold), so
they compare: when the adapted figure is the lower, adapting would type the lab's own cells worse (too few or
mislabelled cells) and no model is written (:class:`WorseThanUnadapted`) unless ``allow_worse``; the record
then says so (``worse_than_unadapted``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodcell.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from bloodcell.errors import ConfigError, DataError
from bloodcell.inference.ood import GUARD_VERSION, OODGuard, fit_guard
from bloodcell.inference.predictor import Classifier
from bloodcell.models.heads import GATE_FLOORS, GATE_OPTIONS, GatedHead, classifier_layer, gate_classifier
from bloodcell.provenance import file_sha256, git_commit, now
from bloodcell.smear.lab_name import RULE, check_lab, lab_problem
from bloodcell.train.head import HeadFit, adapt_head
from bloodcell.wording import shown
from bloodcell.workflows.cells import Cells, folder_cells

#: Fewest cells per class ``adapt`` accepts (cross-validation needs some in every fold).
MIN_CELLS = 5
#: Cells per class beyond which adapting one layer gains little; more are used but not needed.
ENOUGH_CELLS = 20
#: Metadata the adapted checkpoint keeps; a typing record measured on the base model is not kept (it no longer holds).
_KEPT = ("taxonomy", "dataset", "manifest_sha256")


class WorseThanUnadapted(DataError):
    """Adapting would type the lab's own cells worse than the unadapted model does (no model was written)."""


def worse_sentence(fit: HeadFit, cells: int) -> str:
    """What a refused adapting says: both figures on the same cells, and what to do."""
    return (f"adapting would type your lab's own cells worse: {fit.cv_accuracy:.1%} correct adapted "
            f"({fit.folds}-fold cross-validated) against {fit.cv_accuracy_before:.1%} for the unadapted model on the "
            f"same {cells} cells, so no model was written: give more cells of each type (about {ENOUGH_CELLS}) and "
            "check that each cell's type is right")


@dataclass
class Adaptation:
    """The written checkpoint and what was measured while adapting."""

    path: Path
    fit: HeadFit
    cells: dict[str, int]
    skipped: list[tuple[str, str]]
    #: The model's classes given no cells: they keep the model's own rows (``train.head.restore_unshown``).
    without_cells: list[str]
    #: Classes given fewer than :data:`MIN_CELLS` cells (used all the same).
    few: dict[str, int]
    #: The gated types: a cell the model's own layer types as one of them keeps that type (of ``without_cells``, and
    #: those in ``kept``).
    gated: list[str]
    #: Of ``without_cells``, those not gated (nothing holds their recall), with the share of the given cells the
    #: model's own layer types as each (``HeadFit.at_risk``): the adapted model may miss their cells.
    at_risk: dict[str, float]
    #: The types kept on the user's word (``keep``), with the own layer's log-odds their gate needs (None: any;
    #: ``HeadFit.floors``).
    kept: dict[str, float | None]


def check_cells(cells: Cells, class_names: list[str]) -> dict[str, int]:
    """Cells per class; DataError (one sentence) for unknown classes, or fewer than 2 classes with
    :data:`MIN_CELLS` cells each (a class with fewer takes part, with a warning: :func:`few_cells`)."""
    counts = dict(sorted(Counter(cells.labels).items()))
    unknown = sorted(set(counts) - set(class_names))
    if unknown:
        raise DataError(f"{cells.labelled_by}(s) {', '.join(unknown)} are not classes of the model "
                        f"(its classes: {', '.join(class_names)})")
    if sum(n >= MIN_CELLS for n in counts.values()) < 2:
        listed = ", ".join(f"{name} {n}" for name, n in counts.items())
        raise DataError(f"adapting needs at least {MIN_CELLS} cells of each of at least 2 classes (given: "
                        f"{listed or 'none'}); add reviewed cells")
    return counts


def check_keep(keep: Sequence[str], counts: dict[str, int], class_names: list[str]) -> list[int]:
    """The class indices of the types to keep; ConfigError (one sentence) for a name the model lacks, DataError for a
    type given :data:`MIN_CELLS` cells or more (it is adapted from them)."""
    unknown = sorted(set(keep) - set(class_names))
    if unknown:
        raise ConfigError(f"cannot keep {', '.join(map(shown, unknown))}: not a class of the model (its classes: "
                          f"{', '.join(class_names)})")
    enough = sorted(name for name in set(keep) if counts.get(name, 0) >= MIN_CELLS)
    if enough:
        raise DataError(f"{', '.join(f'{name} ({counts[name]} cells)' for name in enough)}: given enough cells to be "
                        f"adapted from them; keep only types given fewer than {MIN_CELLS}")
    return sorted({class_names.index(name) for name in keep})


def few_cells(counts: dict[str, int]) -> dict[str, int]:
    """The classes given fewer than :data:`MIN_CELLS` cells: used, but their adapted rows rest on very little."""
    return {name: n for name, n in counts.items() if n < MIN_CELLS}


def view_features(classifier: Classifier, images) -> tuple[np.ndarray, np.ndarray]:
    """Model-input pixels (N, 3, S, S) and penultimate features of the 8 views of each image (8, N, D)."""
    pixels = np.concatenate([classifier.pixels(images[i:i + 32]) for i in range(0, len(images), 32)])
    features = np.concatenate([classifier.score(pixels[i:i + 32], tta=True)[1] for i in range(0, len(pixels), 32)],
                              axis=1)
    return pixels, features


def recipe(fit: HeadFit, class_names: list[str]) -> dict[str, Any]:
    """How the layer was adapted, as the checkpoint records it."""
    return {"layer": "last", "views": "8 dihedral", "anchor": fit.anchor, "strength": fit.strength,
            "unshown_restored": {class_names[c]: share for c, share in fit.restored.items()},
            "gated": [class_names[c] for c in fit.gated],
            "unshown_own_share": {class_names[c]: share for c, share in fit.own_share.items()},
            "at_risk": [class_names[c] for c in fit.at_risk],
            "kept": {class_names[c]: floor for c, floor in fit.floors.items()}, "chosen_by": f"{fit.folds}-fold cross-validation over the given cells",
            "temperature": "out-of-fold, shrunk towards the model's and bounded", "batch_norm": "the model's own"}


def _write_layer(model: torch.nn.Module, fit: HeadFit, num_classes: int, temperature0: float) -> dict[str, Any]:
    """Put the fitted layer into ``model`` (behind a gate when some classes are gated); the model options that
    rebuild it."""
    options: dict[str, Any] = {}
    head = classifier_layer(model)
    if fit.gated:
        options = dict(zip(GATE_OPTIONS, (",".join(map(str, fit.gated)), fit.temperature / temperature0)))
        floors = {c: floor for c, floor in sorted(fit.floors.items()) if floor is not None}
        if floors:
            options[GATE_FLOORS] = ",".join(f"{c}:{floor!r}" for c, floor in floors.items())
        head = gate_classifier(model, num_classes, **options).adapted
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(fit.weight).reshape(head.weight.shape))
        head.bias.copy_(torch.from_numpy(fit.bias))
    return options


def _guard_with_lab(guard: OODGuard | None, pixels: np.ndarray, features: np.ndarray, lab: str) -> dict | None:
    """The model's guard with the lab's cells as one more familiar source whose limits alone let a cell through, as
    the model's own validation cells' do (the lab's own reviewed cells; None when the model has no guard)."""
    if guard is None:
        return None
    views = np.concatenate([np.rot90(pixels, k, axes=(2, 3)) for k in range(4)])
    own = fit_guard(np.ascontiguousarray(views), features[:4].reshape(-1, features.shape[-1]), guard.pass_rate,
                    sources=[lab] * len(views))
    merged = OODGuard(guard.blank_std, guard.stats + own.stats, guard.features + own.features, guard.pass_rate,
                      guard.num_images + own.num_images, guard.sources + own.sources,
                      familiar=guard.familiar + [True] * len(own.sources),
                      layout_free=guard.layout_free + [True] * len(own.sources))
    return {**merged.to_dict(), "version": GUARD_VERSION}


def adapted_lab(cells_dir: str | Path | Cells, lab: str | None) -> str:
    """The lab an adapted model names: ``lab`` by the lab-name rule (:mod:`bloodcell.smear.lab_name`); else the
    name a store keeps the cells under, or the cell folder's name, which must follow the rule too (ConfigError)."""
    named = check_lab(lab) if lab is not None else ""
    if named:
        return named
    if isinstance(cells_dir, Cells):
        if cells_dir.kept_lab:
            return cells_dir.kept_lab
        raise ConfigError("cells already read need lab=NAME: the lab the adapted model names")
    folder = Path(cells_dir).resolve().name
    if lab_problem(folder):
        raise ConfigError(f"the cell folder's name {shown(folder)} cannot name the lab ({RULE}): pass --lab NAME")
    return folder


def adapt(model: str | Path, cells_dir: str | Path | Cells, out: str | Path, seed: int = 0,
          lab: str | None = None, allow_worse: bool = False, keep: Sequence[str] = ()) -> Adaptation:
    """Adapt ``model`` (bundled name or .safetensors) to the lab of ``cells_dir`` (a folder, or cells already read,
    e.g. a lab's cell bank in the store) and write ``out``; ``lab`` names the lab (default: the name the store keeps
    the cells under, or the folder's name; ConfigError, before any work, for a name the lab-name rule refuses);
    ``keep`` names types the lab sees but gave fewer than :data:`MIN_CELLS` cells of (:func:`check_keep`).
    WorseThanUnadapted (one sentence, nothing written) when the adapted model's cross-validated accuracy is below
    the unadapted model's on the same cells, unless ``allow_worse``."""
    lab = adapted_lab(cells_dir, lab)
    checkpoint = load_checkpoint(model)
    if isinstance(classifier_layer(checkpoint.model), GatedHead):
        base = checkpoint.meta.get("adaptation", {}).get("base", "the model it was adapted from")
        raise DataError(f"{Path(str(model)).name} was adapted already, with gated classes: adapt {base} instead")
    classifier = Classifier.from_checkpoint(checkpoint)
    cells = cells_dir if isinstance(cells_dir, Cells) else folder_cells(cells_dir)
    counts = check_cells(cells, checkpoint.class_names)
    keep_indices = check_keep(keep, counts, checkpoint.class_names)
    pixels, features = view_features(classifier, cells.images)
    head = classifier_layer(checkpoint.model)
    labels = np.array([checkpoint.class_names.index(label) for label in cells.labels])
    fit = adapt_head(features, labels, head.weight.detach().numpy().reshape(head.weight.shape[0], -1),
                     head.bias.detach().numpy(), seed=seed, temperature0=checkpoint.temperature, keep=keep_indices)
    if fit.worse_than_unadapted and not allow_worse:
        raise WorseThanUnadapted(worse_sentence(fit, len(labels)))
    gate = _write_layer(checkpoint.model, fit, len(checkpoint.class_names), checkpoint.temperature)
    extra: dict[str, Any] = {k: checkpoint.meta[k] for k in _KEPT if k in checkpoint.meta}
    extra["adaptation"] = {"lab": lab, "cells": counts, "cv_accuracy": fit.cv_accuracy, "folds": fit.folds,
                           "cv_accuracy_before": fit.cv_accuracy_before, "worse_than_unadapted": fit.worse_than_unadapted,
                           "strength": fit.strength,
                           "recipe": recipe(fit, checkpoint.class_names),
                           "base": Path(str(model)).name, "base_sha256": file_sha256(checkpoint.path),
                           "commit": git_commit(), "created": now()}
    guard = _guard_with_lab(classifier.guard, pixels, features, lab)
    if guard is not None:
        extra["ood"] = guard
    meta = CheckpointMeta(model_name=checkpoint.meta["model_name"], data_config=checkpoint.data_config,
                          model_kwargs={**checkpoint.meta.get("model_kwargs", {}), **gate},
                          train_config=checkpoint.meta.get("train_config", {}), metrics=checkpoint.meta.get("metrics", {}),
                          temperature=fit.temperature, extra=extra)
    without = [name for name in checkpoint.class_names if name not in counts]
    return Adaptation(save_checkpoint(out, checkpoint.model, meta), fit, counts, cells.skipped, without,
                      few_cells(counts), [checkpoint.class_names[c] for c in fit.gated],
                      {checkpoint.class_names[c]: fit.own_share[c] for c in fit.at_risk},
                      {checkpoint.class_names[c]: floor for c, floor in fit.floors.items()})
