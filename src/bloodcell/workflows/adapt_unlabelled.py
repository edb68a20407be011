"""``bloodcell adapt --unlabelled DIR`` / ``--counted DIR``: fit a model to a new lab from its cells, with no label.

The lab's white cells (a folder of crops, or the typed white cells of the samples ``bloodcell count`` wrote) re-set
the model's batch-norm statistics (AdaBN, :mod:`bloodcell.train.batchnorm`), blended with the model's own at each
weight of :data:`WEIGHTS`. Re-estimating can help a lot or hurt a lot (issue 26: +28, +7
and -26 points on three unseen labs), so a rule decided without labels (:func:`decide`) compares each candidate's
calls on the lab's cells with the unadapted model's and keeps the unadapted model unless a candidate is surer, still
varied and agrees with it enough (:data:`RULE`, thresholds calibrated on synthetic labs). When it adapts, the chosen
blend is then refined (:data:`TENT`: a few steps of entropy minimisation on the batch-norm scales and shifts, with
or without a diversity term, :func:`bloodcell.train.batchnorm.entropy_steps`; steps, learning rate and diversity
calibrated with the thresholds), kept only if the same rule, against the unadapted model, accepts it too: the
refinement is surer by construction, so only the rule's spread and agreement tests can turn it down, and it is
never tried where the blends themselves were turned down.

The written checkpoint is the adapted model, or the unadapted one when the rule keeps it; either way its
``unlabelled_adaptation`` metadata records the method, the lab, the cells, the decision with its reasons and every
candidate's label-free statistics. Measured leave-one-lab-out in ``benchmarks/new_lab_unlabelled.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodcell.checkpoint import derived_meta, load_checkpoint, save_checkpoint
from bloodcell.data.images import image_files, read_image
from bloodcell.errors import DataError, ImageError
from bloodcell.framing import crop_around
from bloodcell.inference.predictor import Classifier
from bloodcell.metrics.calibration import apply_temperature
from bloodcell.metrics.unlabelled import prediction_statistics
from bloodcell.provenance import file_sha256, git_commit, now
from bloodcell.smear.referral import box_xyxy
from bloodcell.smear.review import MAX_CELL_SIDE, photo_key
from bloodcell.train.batchnorm import batchnorm_layers, blended, entropy_tuned, lab_statistics
from bloodcell.transforms import normalize_batch
from bloodcell.workflows.cells import Cells
from bloodcell.workflows.review import load_photos, read_counted

METHOD = "adabn"
#: Seed of the order in which TENT's batches are drawn from the lab's cells.
TENT_SEED = 0
#: Candidate blends of the lab's batch-norm statistics with the model's own (1: the lab's alone).
WEIGHTS = (0.5, 1.0)
#: Fewest cells whose statistics are worth re-estimating from.
MIN_CELLS = 20


@dataclass(frozen=True)
class Rule:
    """The label-free rule's thresholds: a candidate is kept only if its mean entropy on the lab's cells is at least
    ``entropy_drop`` (nats) lower than the unadapted model's, its calls are still varied (entropy of the mean
    prediction at least ``spread_kept`` of the unadapted model's) and at least ``agreement_min`` of its calls are the
    unadapted model's."""

    entropy_drop: float
    spread_kept: float
    agreement_min: float


@dataclass(frozen=True)
class Tent:
    """The refinement of the chosen blend: ``steps`` Adam steps (0: no refinement), one batch of the lab's cells
    each, at learning rate ``lr``, on the mean entropy minus ``diversity`` times the entropy of the mean prediction
    (0: TENT; 1: SHOT's information maximisation), tuning the batch-norm scales and shifts only
    (:func:`bloodcell.train.batchnorm.entropy_steps`)."""

    steps: int
    lr: float
    diversity: float


#: The thresholds and the refinement in use, RULE_CALIBRATION: chosen together on synthetic shifts of the models'
#: own training labs (labels known), by mean gain with no synthetic lab losing more than a point, never on a real
#: held-out lab. The collapse test stays off (``spread_kept`` 0); of the refinements tried (none; 4, 8 or 16 steps at
#: learning rate 0.001, without or with the diversity term) 16 steps of entropy alone gained most (+10.35 points
#: against +10.06 at 8 steps and +8.25 with none); the diversity term cost 2 to 5 points there at the same steps (it
#: pulls the calls towards equal class shares, which a lab's white cells do not have).
RULE = Rule(entropy_drop=0.02, spread_kept=0.0, agreement_min=0.2)
TENT = Tent(steps=16, lr=1e-3, diversity=0.0)
RULE_CALIBRATION = "benchmarks/results/unlabelled-rule-calibration.json"
#: Images per forward pass (also the batches the statistics are averaged over).
BATCH = 32
#: Metadata kept from the base model when adapted (a typing record measured on the base model no longer holds).
KEPT = ("taxonomy", "dataset", "manifest_sha256", "ood")


@dataclass
class Candidate:
    """One blend of the lab's statistics: its weight, label-free statistics and whether the rule accepts it."""

    weight: float
    statistics: dict[str, float]
    reasons: list[str]
    tent: bool = False

    @property
    def accepted(self) -> bool:
        return not self.reasons


@dataclass
class Decision:
    """The rule's verdict on the lab's cells: the chosen weight (None: keep the unadapted model), why, and the
    rule it was taken under."""

    weight: float | None
    before: dict[str, float]
    candidates: list[Candidate] = field(default_factory=list)
    rule: Rule = RULE
    tent: bool = False
    refinement: Tent = TENT

    @property
    def method(self) -> str | None:
        return None if self.weight is None else f"{METHOD}+tent" if self.tent else METHOD

    @property
    def chosen(self) -> Candidate | None:
        """The candidate the model written comes from (None: the unadapted model)."""
        return next((c for c in self.candidates if c.weight == self.weight and c.tent == self.tent), None)

    def to_dict(self) -> dict[str, Any]:
        return {"adapted": self.weight is not None, "weight": self.weight, "tent_refined": self.tent,
                "unadapted": _rounded(self.before),
                "candidates": [{"weight": c.weight, "tent": c.tent, **_rounded(c.statistics), "accepted": c.accepted,
                                "reasons": c.reasons} for c in self.candidates],
                "tent": {**asdict(self.refinement), "batch": BATCH, "seed": TENT_SEED},
                "rule": {**asdict(self.rule), "calibration": RULE_CALIBRATION
                         if (self.rule, self.refinement) == (RULE, TENT) else None}}


@dataclass
class UnlabelledAdaptation:
    """The written checkpoint, the decision and the cells used (``skipped``: files that could not be read)."""

    path: Path
    decision: Decision
    cells: int
    skipped: list[tuple[str, str]]


def _rounded(stats: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in stats.items()}


def judge(weight: float, stats: dict[str, float], before: dict[str, float], rule: Rule = RULE) -> Candidate:
    """The rule on one candidate's statistics against the unadapted model's (reasons empty: accepted)."""
    reasons = []
    if stats["mean_entropy"] > before["mean_entropy"] - rule.entropy_drop:
        reasons.append(f"not surer of its calls (mean entropy {stats['mean_entropy']:.3f} against "
                       f"{before['mean_entropy']:.3f} unadapted)")
    if stats["spread"] < rule.spread_kept * before["spread"]:
        reasons.append(f"its calls collapse onto fewer classes (spread {stats['spread']:.3f} against "
                       f"{before['spread']:.3f})")
    if stats["agreement"] < rule.agreement_min:
        reasons.append(f"it changes {1 - stats['agreement']:.0%} of the calls")
    return Candidate(weight, stats, reasons)


def decide(before: np.ndarray, candidates: dict[float, np.ndarray], rule: Rule = RULE) -> Decision:
    """The rule, from class probabilities (N, C) of the same cells, unadapted and per candidate weight: of the
    accepted candidates (:func:`judge`), the one with the lowest mean entropy; none accepted keeps the unadapted."""
    reference = prediction_statistics(before)
    judged = [judge(w, prediction_statistics(p, before), reference, rule) for w, p in candidates.items()]
    accepted = [c for c in judged if c.accepted]
    best = min(accepted, key=lambda c: c.statistics["mean_entropy"]) if accepted else None
    return Decision(None if best is None else best.weight, reference, judged, rule)


def model_pixels(classifier: Classifier, images: Sequence) -> np.ndarray:
    """Model-input pixels (N, 3, S, S) of decoded images, framed and resized as the classifier does."""
    return np.concatenate([classifier.pixels(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])


def probabilities(classifier: Classifier, model: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """Class probabilities (N, C) of ``model`` (the classifier's network or a re-normalised copy) on ``pixels``,
    at the classifier's temperature, plain view."""
    scorer = Classifier.from_model(model, classifier.temperature)
    logits = np.concatenate([scorer.score(pixels[i:i + BATCH])[0] for i in range(0, len(pixels), BATCH)], axis=1)
    return apply_temperature(logits[0], classifier.temperature)


def candidates(classifier: Classifier, pixels: np.ndarray,
               weights: Sequence[float] = WEIGHTS) -> tuple[np.ndarray, dict[float, torch.nn.Module]]:
    """The unadapted probabilities on ``pixels`` and a model per blend weight with the statistics of ``pixels``."""
    if not batchnorm_layers(classifier.model):
        raise DataError(f"{classifier.source or 'the model'} has no batch-norm layer: it cannot be adapted "
                        "without labels (adapt it from labelled cells instead)")
    normalised = (torch.from_numpy(normalize_batch(pixels[i:i + BATCH], classifier.data_config))
                  for i in range(0, len(pixels), BATCH))
    statistics = lab_statistics(classifier.model, normalised)
    return probabilities(classifier, classifier.model, pixels), {w: blended(classifier.model, statistics, w)
                                                                  for w in weights}


def tent_batches(classifier: Classifier, pixels: np.ndarray, steps: int) -> Iterator[torch.Tensor]:
    """``steps`` seeded batches of :data:`BATCH` of the lab's ``pixels`` (normalised), each cell once per pass."""
    order = np.random.default_rng(TENT_SEED).permutation(len(pixels))
    order = np.resize(order, steps * BATCH).reshape(steps, BATCH)
    return (torch.from_numpy(normalize_batch(pixels[np.sort(rows)], classifier.data_config)) for rows in order)


def tent(classifier: Classifier, model: torch.nn.Module, pixels: np.ndarray, config: Tent = TENT) -> torch.nn.Module:
    """``model`` (a blend) refined by ``config`` on seeded batches of the lab's ``pixels`` (a copy)."""
    return entropy_tuned(model, tent_batches(classifier, pixels, config.steps), config.lr, config.diversity)


def refine(classifier: Classifier, pixels: np.ndarray, decision: Decision, before: np.ndarray,
           models: dict[float, torch.nn.Module], rule: Rule = RULE, config: Tent = TENT) -> torch.nn.Module:
    """The model the rule picks: the unadapted one when it kept it; else the chosen blend refined by :func:`tent`
    if the rule accepts the refinement too (``decision`` records it), the blend alone if not or if ``config`` has no
    step."""
    decision.refinement = config
    if decision.weight is None or not config.steps:
        return classifier.model if decision.weight is None else models[decision.weight]
    tuned = tent(classifier, models[decision.weight], pixels, config)
    accepted = judge_refinement(decision, before, probabilities(classifier, tuned, pixels), rule)
    return tuned if accepted else models[decision.weight]


def judge_refinement(decision: Decision, before: np.ndarray, tuned: np.ndarray, rule: Rule = RULE) -> bool:
    """The rule on the TENT refinement's probabilities ``tuned`` of the chosen blend, against the unadapted
    ``before`` of the same cells; recorded in ``decision``, which adopts it if accepted."""
    judged = judge(decision.weight, prediction_statistics(tuned, before), decision.before, rule)
    judged.tent = True
    decision.candidates.append(judged)
    decision.tent = judged.accepted
    return judged.accepted


def choose(classifier: Classifier, pixels: np.ndarray) -> tuple[Decision, torch.nn.Module]:
    """The rule's decision on the lab's cells (``pixels``) and the model it picks (the unadapted one when kept)."""
    before, models = candidates(classifier, pixels)
    decision = decide(before, {w: probabilities(classifier, m, pixels) for w, m in models.items()})
    return decision, refine(classifier, pixels, decision, before, models)


def unlabelled_cells(folder: str | Path) -> Cells:
    """Every image under ``folder`` (searched recursively) as an unlabelled cell; unreadable files are listed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (give a folder of your lab's white-cell images)")
    cells = Cells()
    for path in image_files(folder):
        name = str(path.relative_to(folder))
        try:
            cells.images.append(read_image(path))
        except ImageError as exc:
            cells.skipped.append((name, str(exc)))
            continue
        cells.ids.append(name)
    return cells


def counted_cells(folder: str | Path) -> Cells:
    """The typed white cells of the samples ``bloodcell count`` wrote: ``folder`` is one sample's output folder or
    holds several (each with its counts.json); each cell is cut from its photo as the counter cut it. Of several
    samples, one whose counts.json or photos cannot be read is skipped with the reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found (give the output folder of `bloodcell count`)")
    samples = [folder] if (folder / "counts.json").is_file() else \
        sorted(p for p in folder.iterdir() if (p / "counts.json").is_file())
    if not samples:
        raise DataError(f"{folder}: no counts.json of a counted sample in it or in its sub-folders")
    cells = Cells()
    for sample in samples:
        try:
            counted = read_counted(sample)
            photos = load_photos(counted)
        except DataError as exc:
            if sample == folder:
                raise  # the one sample given
            cells.skipped.append((sample.name, str(exc)))
            continue
        for index, entry in enumerate(counted.doc["images"]):
            image = photos[photo_key(entry, index)]
            for number, box in enumerate(entry.get("boxes", [])):
                x1, y1, x2, y2 = box_xyxy(box) if box.get("wbc_type") else (0, 0, 0, 0)
                if x2 > x1 and max(x2 - x1, y2 - y1) <= MAX_CELL_SIDE * min(image.size):
                    cells.images.append(crop_around(image, (x1, y1, x2, y2)))
                    cells.ids.append(f"{counted.sample_id}/{index + 1}-{number + 1}")
    return cells


def adapt_unlabelled(model: str | Path, cells: Cells, out: str | Path, lab: str, source: str) -> UnlabelledAdaptation:
    """Adapt ``model`` (bundled name or .safetensors) to the lab of the unlabelled ``cells`` (from ``source``, e.g.
    "unlabelled folder") if the rule says so, and write ``out`` (the unadapted weights when it does not)."""
    if len(cells.images) < MIN_CELLS:
        raise DataError(f"adapting without labels needs at least {MIN_CELLS} readable cell images of the lab "
                        f"(found {len(cells.images)}{f', {len(cells.skipped)} unreadable' if cells.skipped else ''})")
    checkpoint = load_checkpoint(model)
    classifier = Classifier.from_checkpoint(checkpoint)
    decision, chosen = choose(classifier, model_pixels(classifier, cells.images))
    record = {"method": decision.method or METHOD, "lab": lab, "source": source, "cells": len(cells.images), **decision.to_dict(),
              "guard": "the base model's, not refitted" if decision.weight is not None else "the base model's",
              "base": Path(str(model)).name, "base_sha256": file_sha256(checkpoint.path), "commit": git_commit(),
              "created": now()}
    meta = derived_meta(checkpoint, {"unlabelled_adaptation": record},
                        keep=KEPT if decision.weight is not None else None)
    return UnlabelledAdaptation(save_checkpoint(out, chosen, meta), decision, len(cells.images), cells.skipped)
