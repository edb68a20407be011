"""``bloodcell reproduce``: a paper's experiment on the closest data we have, under the paper's own protocol
(leaks included) and under an honest one, side by side.

Each paper model (``bloodcell models info NAME``) is trained with its recipe
(``bloodcell/resources/configs/papers/NAME.json``) to the recipe's end (the paper's epochs, or until validation stops improving where the paper is silent),
or for at most ``--budget`` seconds when given, with the same seed under two protocols, and each trained
model is scored once:

- **the paper's protocol** (:data:`PROTOCOLS` says what each paper did and where we had to choose):
  Khalil et al. (and, in our reading, Risodkar et al.) classify the four white-cell types of Kaggle's "Blood
  Cell Images", i.e.
  augmented copies of a few hundred BCCD cells split at random, so copies of one cell land on both sides; we
  rebuild that set from the typed BCCD white cells (:func:`build_bccd_copies`). Asghar et al. score "all the
  blood cell images" of PBC, training images included. Veena et al.'s data and split are not recorded here:
  PBC split at random image by image (duplicates ignored), our choice.
- **the honest protocol**: copies of one cell never cross splits (BCCD: a split grouped by source cell,
  stratified, seeded, whose test cells are scored once each, unaugmented; PBC: the frozen, duplicate-aware
  split ``pbc-seed0``), and a held-out test split scored once.

Output: ``OUT/<model>/{paper,honest}/{run,evaluation}`` (a protocol that trains exactly like the other one
reuses its run), ``OUT/<model>/reproduction.json`` and ``reproduction.md``, ``OUT/reproductions.md`` with one
row per reproduced paper; the data sets built here (BCCD copies, re-split PBC manifests) go under
``OUT/data/``, never into the repository. Everything resumes: a paper whose ``reproduction.json`` exists is
skipped, a protocol whose ``result.json`` exists is not scored again, and an interrupted training goes on
from its ``run/last.pt``: the last finished epoch, or within an epoch, where it was at most
``--checkpoint-every`` seconds before the stop.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bloodcell import resources
from bloodcell.data.bccd import TypedSmear, typed_smears
from bloodcell.data.images import read_image
from bloodcell.data.locate import dataset_root
from bloodcell.data.manifest import Manifest, ManifestRow, read_manifest, write_manifest
from bloodcell.data.tables import read_csv
from bloodcell.data.split import assign_groups
from bloodcell.errors import ConfigError, DataError, ImageError, WeightsUnavailableError
from bloodcell.evaluation.scoring import load_scoring_model
from bloodcell.framing import background_colour
from bloodcell.log import get_logger
from bloodcell.models import get_model_entry
from bloodcell.outputs import check_output_folder
from bloodcell.progress import track
from bloodcell.provenance import file_sha256, git_commit, machine, now
from bloodcell.report.markdown import table
from bloodcell.report.reproduction import PaperSection, render_reproduction_page
from bloodcell.train.config import TrainConfig, resolve_config
from bloodcell.train.run import STATE_FILE
from bloodcell.workflows.benchmark import pretrained_available
from bloodcell.workflows.evaluate import evaluate, write_report
from bloodcell.workflows.train import run_training
from bloodcell.writing import write_json, write_text

logger = get_logger(__name__)

FROZEN_MANIFEST = resources.manifest_path("pbc-seed0")
RESULT_FILE = "reproduction.json"
ARM_FILE = "result.json"
PAPER_LABEL = "PAPER PROTOCOL — leaks included, not an honest test result"
#: The four white-cell types of Kaggle's "Blood Cell Images" (BCCD's basophils are left out, as there).
BCCD4 = ("eosinophil", "lymphocyte", "monocyte", "neutrophil")
#: Kaggle's crops are 320x240 windows of the 640x480 BCCD smears around the white cell.
KAGGLE_WINDOW = (320, 240)
#: Our reading of Kaggle's augmentation: rotation, shift (fraction of the window) and flips of each crop.
COPY_ROTATION, COPY_SHIFT = 20.0, 0.1
#: Train/val/test of the BCCD copies: Kaggle's TRAIN/TEST folders are about 80/20; validation comes out of train.
BCCD_RATIOS = (Fraction(7, 10), Fraction(1, 10), Fraction(2, 10))
#: The frozen PBC manifest's ratios, kept for the random image-level split.
PBC_RATIOS = (Fraction(70, 100), Fraction(15, 100), Fraction(15, 100))
PRETRAINED_POLICIES = ("available", "recipe")
NOT_RUN = "not run"
#: Reproductions of a paper's pipeline by a registered model of another name: name -> (model, the paper
#: model whose citation and protocol apply). Their recipes are ``configs/papers/NAME.json`` too.
PIPELINES = {"risodkar2024-svm": ("sk/svm", "risodkar2024-cnn"), "risodkar2024-rf": ("sk/rf", "risodkar2024-cnn")}

KAGGLE_PROTOCOL = (
    "Kaggle 'Blood Cell Images' (4 white-cell types: augmented copies of BCCD cells), the copies split at random "
    "into train/validation/test (70/10/20), so copies of one cell are on both sides")
KAGGLE_CHOICES = (
    "The split ratios are not recorded here: 70/10/20 is our choice (Kaggle's TRAIN/TEST folders are about 80/20; "
    "validation is taken from train). Kaggle's set is rebuilt from the typed BCCD white cells (our choices where "
    "its making is not documented): 320x240 windows of the smear around each cell, copies rotated (up to 20 "
    "degrees), shifted (up to 10 %) and flipped, classes balanced by the number of copies, as in Kaggle's set.")


@dataclass(frozen=True)
class Protocol:
    """A paper's data and protocol: ``data`` (``bccd4`` or ``pbc``), ``leak`` (how its protocol leaks:
    ``random-copies``, ``scores-training`` or ``random-images``), the protocol in words and its source."""

    data: str
    leak: str
    paper: str
    source: str


PROTOCOLS: dict[str, Protocol] = {
    "khalil2022-vgg16": Protocol("bccd4", "random-copies", KAGGLE_PROTOCOL,
                                 "paper: its 4 white-cell classes, Kaggle's set. " + KAGGLE_CHOICES),
    "khalil2022-scratch": Protocol("bccd4", "random-copies", KAGGLE_PROTOCOL,
                                   "paper: its 4 white-cell classes, Kaggle's set. " + KAGGLE_CHOICES),
    "asghar2023-cnn": Protocol(
        "pbc", "scores-training",
        "PBC (8 classes): trained on a training split, scored 'using all the blood cell images', training and "
        "validation images included",
        "paper: PBC and scoring all its images; our training split is the frozen manifest's (70/15/15), the "
        "paper's own split ratios not being recorded here"),
    "risodkar2024-cnn": Protocol(
        "bccd4", "random-copies", KAGGLE_PROTOCOL,
        "the data and split are not recorded here: the printed summary's 4 outputs match the 4 white-cell types "
        "of Kaggle's 'Blood Cell Images', whose copies are split at random (its TRAIN/TEST folders); we read it "
        "so. " + KAGGLE_CHOICES),
    **{name: Protocol("bccd4", "random-copies", KAGGLE_PROTOCOL,
                      "Risodkar et al.'s classical pipeline (segmentation, handcrafted features, a scikit-learn "
                      "classifier) on the data and split we read for their CNN (see risodkar2024-cnn). "
                      + KAGGLE_CHOICES) for name in PIPELINES},
    "veena-resnet50": Protocol(
        "pbc", "random-images",
        "PBC (8 classes) split at random image by image into train/validation/test (70/15/15), PBC's exact and "
        "near-duplicate images ignored",
        "not recorded here (neither the data nor the split): PBC and a plain random split, the most common "
        "protocol, are our choice"),
}


@dataclass(frozen=True)
class Settings:
    """What every reproduction shares. ``budget_s`` caps each protocol's training (``None``: the recipe's
    end) and ``checkpoint_every_s`` saves its state within an epoch too (an epoch of asghar2023-cnn
    takes over an hour here); ``imagenet_weights`` is a local file of the ImageNet weights a transfer-learning recipe starts
    from (else the offline package or timm's download); ``overrides`` (Python API only: tests, quick looks) replace recipe options and are recorded;
    ``score_limit`` scores a stratified subset of each scored set and ``limit_val`` validates on one (both
    speed up slow models, e.g. asghar2023-cnn's 284 M parameters)."""

    budget_s: float | None = None
    seed: int = 0
    data_root: Path | None = None
    pbc_manifest: Path = FROZEN_MANIFEST
    copies_per_class: int = 1000
    pretrained: str = "available"
    score_limit: int | None = None
    limit_val: int | None = None
    threads: int | None = None
    checkpoint_every_s: float = 900.0
    imagenet_weights: Path | None = None
    n_boot: int = 1000
    overrides: dict[str, Any] = field(default_factory=dict)
    command: str | None = None


@dataclass(frozen=True)
class Arm:
    """One protocol of a reproduction: what it trains on and what it scores (the ``test`` rows of
    ``score_manifest``); ``data_root`` is the images' folder (``folder`` datasets) or the datasets folder."""

    name: str
    description: str
    train_manifest: Path
    score_manifest: Path
    dataset: str
    data_root: Path | None
    taxonomy: str
    leaky: bool


# --------------------------------------------------------------------------------------------------
# Data: the BCCD copies (Kaggle-like) and the re-split PBC manifests
# --------------------------------------------------------------------------------------------------


def _window(centre: tuple[float, float], size: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, ...]:
    """A ``size`` window (at most the image) centred on ``centre``, moved inside the image."""
    width, height = min(size[0], image_size[0]), min(size[1], image_size[1])
    left = min(max(0, round(centre[0] - width / 2)), image_size[0] - width)
    top = min(max(0, round(centre[1] - height / 2)), image_size[1] - height)
    return left, top, left + width, top + height


def augmented_copy(smear: Image.Image, centre: tuple[float, float], rng: np.random.Generator | None,
                   fill: tuple[int, int, int] | None = None) -> Image.Image:
    """The Kaggle-like window around ``centre``; with ``rng``, the smear rotated about the cell and shifted
    first (uncovered areas take ``fill``, by default the slide's background colour), then flipped at random."""
    box = _window(centre, KAGGLE_WINDOW, smear.size)
    if rng is None:
        return smear.crop(box)
    width, height = box[2] - box[0], box[3] - box[1]
    shift = (round(rng.uniform(-COPY_SHIFT, COPY_SHIFT) * width), round(rng.uniform(-COPY_SHIFT, COPY_SHIFT) * height))
    moved = smear.rotate(float(rng.uniform(-COPY_ROTATION, COPY_ROTATION)), Image.Resampling.BILINEAR,
                         center=centre, translate=shift, fillcolor=fill or background_colour(smear))
    crop = moved.crop(box)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return crop


def copies_per_cell(n_cells: int, per_class: int) -> list[int]:
    """Copies of each of a class's ``n_cells`` cells so the class holds ``per_class`` images (at least one each)."""
    base, extra = divmod(per_class, n_cells)
    return [max(1, base + (i < extra)) for i in range(n_cells)]


def _write_copies(folder: Path, smears: list[TypedSmear], per_class: int,
                  rng: np.random.Generator) -> list[tuple[ManifestRow, int]]:
    """Write ``folder/<type>/<smear>_<k>.jpg`` (copy 0: the plain window) and return (row, k) pairs (no split)."""
    by_type: dict[str, list[TypedSmear]] = defaultdict(list)
    for smear in smears:
        by_type[smear.wbc_type].append(smear)
    plan = [(s, n) for name in sorted(by_type) for s, n in zip(by_type[name], copies_per_cell(len(by_type[name]), per_class))]
    rows = []
    for smear, n in track(plan, "Writing augmented BCCD copies", total=sum(n for _, n in plan), unit="images",
                          size=lambda item: item[1]):
        try:
            image = read_image(smear.path)
        except ImageError as exc:
            logger.warning("BCCD smear %s skipped: %s", smear.image_id, exc)
            continue
        x1, y1, x2, y2 = smear.main_box.xyxy
        centre, fill = ((x1 + x2) / 2, (y1 + y2) / 2), background_colour(image)
        (folder / smear.wbc_type).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            relative = f"{smear.wbc_type}/{smear.image_id}_{k:03d}.jpg"
            augmented_copy(image, centre, rng if k else None, fill).save(folder / relative, quality=95)
            rows.append((ManifestRow(relative, smear.wbc_type, smear.wbc_type, "train", file_sha256(folder / relative),
                                     smear.image_id), k))
    if not rows:
        raise DataError("no BCCD white cell could be read to build the augmented copies")
    return rows


def _assign(keys_by_label: dict[str, list[str]], ratios, rng: np.random.Generator) -> dict[str, str]:
    """A split name for every key, stratified by label (each key counts once)."""
    split_of = {}
    for label in sorted(keys_by_label):
        keys = sorted(keys_by_label[label])
        for key, s in zip(keys, assign_groups([1] * len(keys), ratios, rng)):
            split_of[key] = ("train", "val", "test")[s]
    return split_of


def random_copy_split(rows: list[tuple[ManifestRow, int]], rng: np.random.Generator) -> list[ManifestRow]:
    """The paper's split: every copy on its own, stratified by type, so copies of one cell cross splits."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for row, _ in rows:
        by_label[row.label].append(row.path)
    split_of = _assign(by_label, BCCD_RATIOS, rng)
    return [replace(row, split=split_of[row.path]) for row, _ in rows]


def grouped_copy_split(rows: list[tuple[ManifestRow, int]], rng: np.random.Generator) -> list[ManifestRow]:
    """The honest split: cells (groups) stratified by type; all copies of a train/val cell, and only the plain
    window (copy 0) of a test cell, each test cell scored once."""
    by_label: dict[str, set[str]] = defaultdict(set)
    for row, _ in rows:
        by_label[row.label].add(row.group)
    split_of = _assign({k: list(v) for k, v in by_label.items()}, BCCD_RATIOS, rng)
    return [replace(row, split=split_of[row.group]) for row, k in rows if split_of[row.group] != "test" or k == 0]


def build_bccd_copies(folder: str | Path, data_root=None, seed: int = 0, per_class: int = 1000) -> Path:
    """The Kaggle-like 4-type set in ``folder`` (built once, atomically): the copies, ``paper.csv`` (random
    split of the copies) and ``honest.csv`` (split grouped by source cell); ``group`` = the source smear."""
    folder = Path(folder)
    if (folder / "paper.csv").is_file() and (folder / "honest.csv").is_file():
        return folder
    if per_class < 1:
        raise ConfigError(f"copies per class must be at least 1, got {per_class}")
    smears = [s for s in typed_smears(data_root)[0] if s.wbc_type in BCCD4]
    if len({s.wbc_type for s in smears}) < 2:
        raise DataError("the typed BCCD smears hold fewer than two of the four white-cell types")
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rows = _write_copies(tmp, smears, per_class, np.random.default_rng([seed, 0]))
    write_manifest(tmp / "paper.csv", "folder", random_copy_split(rows, np.random.default_rng([seed, 1])))
    write_manifest(tmp / "honest.csv", "folder", grouped_copy_split(rows, np.random.default_rng([seed, 2])))
    shutil.rmtree(folder, ignore_errors=True)  # a partial folder of an interrupted build
    os.replace(tmp, folder)
    return folder


def random_image_split(manifest: Manifest, path: Path, seed: int) -> Path:
    """``manifest``'s rows split at random image by image (stratified by label), duplicate groups ignored."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for row in manifest.rows:
        by_label[row.label].append(row.path)
    split_of = _assign(by_label, PBC_RATIOS, np.random.default_rng([seed, 3]))
    write_manifest(path, manifest.dataset, [replace(row, split=split_of[row.path]) for row in manifest.rows])
    return path


def all_images_as_test(manifest: Manifest, path: Path) -> Path:
    """``manifest`` with every row (train, val and test) in the scored ``test`` split."""
    write_manifest(path, manifest.dataset, [replace(row, split="test") for row in manifest.rows])
    return path


def leak_counts(train_manifest: Path, score_manifest: Path) -> dict[str, int]:
    """How much of the scored set (all its rows, before any score limit) was seen in training: its images that
    are training images, and those whose source (``group``: the cell, or a duplicate group; else the image
    itself) has training images."""
    train = [r for r in read_manifest(train_manifest).rows if r.split == "train"]
    scored = [r for r in read_manifest(score_manifest).rows if r.split == "test"]
    paths, sources = {r.path for r in train}, {r.group or r.path for r in train}
    return {"scored_set_images": len(scored), "scored_training_images": sum(r.path in paths for r in scored),
            "scored_from_training_sources": sum((r.group or r.path) in sources for r in scored)}


# --------------------------------------------------------------------------------------------------
# The two protocols of a paper
# --------------------------------------------------------------------------------------------------


def _bccd_arms(protocol: Protocol, settings: Settings, data_dir: Path) -> list[Arm]:
    folder = build_bccd_copies(data_dir / f"bccd4-seed{settings.seed}-{settings.copies_per_class}",
                               settings.data_root, settings.seed, settings.copies_per_class)
    honest = ("copies of one BCCD cell kept in one split (grouped by source cell, stratified by type, seeded, "
              "70/10/20); each test cell scored once, unaugmented")
    return [Arm("paper", protocol.paper, folder / "paper.csv", folder / "paper.csv", "folder", folder, "labels", True),
            Arm("honest", honest, folder / "honest.csv", folder / "honest.csv", "folder", folder, "labels", False)]


def _pbc_arms(name: str, protocol: Protocol, settings: Settings, data_dir: Path) -> list[Arm]:
    frozen = Path(settings.pbc_manifest)
    manifest = read_manifest(frozen)
    if protocol.leak == "scores-training":
        paper_train, paper_score = frozen, all_images_as_test(manifest, data_dir / f"{name}-all-images.csv")
    else:
        paper_train = paper_score = random_image_split(manifest, data_dir / f"pbc-random-seed{settings.seed}.csv",
                                                       settings.seed)
    honest = (f"PBC's frozen, duplicate-aware split ({frozen.name}): exact and near duplicates never cross "
              "splits; its test split scored once")
    root = settings.data_root
    return [Arm("paper", protocol.paper, paper_train, paper_score, manifest.dataset, root, "pbc8", True),
            Arm("honest", honest, frozen, frozen, manifest.dataset, root, "pbc8", False)]


def protocol_arms(name: str, settings: Settings, data_dir: Path) -> list[Arm]:
    """The paper's protocol and the honest one for paper model ``name``, their data built under ``data_dir``."""
    protocol = PROTOCOLS[name]
    data_dir.mkdir(parents=True, exist_ok=True)
    if protocol.data == "bccd4":
        return _bccd_arms(protocol, settings, data_dir)
    return _pbc_arms(name, protocol, settings, data_dir)


# --------------------------------------------------------------------------------------------------
# Training, scoring, recording
# --------------------------------------------------------------------------------------------------


def paper_info(name: str):
    """The registry's paper record for reproduction ``name`` (a pipeline's: its paper model's)."""
    return get_model_entry(PIPELINES[name][1] if name in PIPELINES else name).paper


def recipe_path(name: str) -> Path:
    """The paper's recipe file (``bloodcell/resources/configs/papers/NAME.json``), shipped with the package."""
    if name not in PIPELINES:
        entry = get_model_entry(name)
        if entry.paper is None or not entry.paper.recipe:
            raise ConfigError(f"{name} has no paper recipe")
    return resources.recipe_path(name)


def _train_config(name: str, arm: Arm, settings: Settings, out: Path) -> tuple[TrainConfig, list[str]]:
    """The recipe with the arm's data, the budget, seed and ImageNet weights file (and the test overrides);
    notes on the ImageNet weights."""
    weights = str(settings.imagenet_weights) if settings.imagenet_weights else None
    overrides = {"manifest": str(arm.train_manifest), "data_root": str(arm.data_root) if arm.data_root else None,
                 "dataset": arm.dataset, "taxonomy": arm.taxonomy, "out": str(out), "time_budget_s": settings.budget_s,
                 "seed": settings.seed, "threads": settings.threads, "limit_val": settings.limit_val,
                 "checkpoint_every_s": settings.checkpoint_every_s, **settings.overrides}
    config = resolve_config(recipe_path(name), overrides)
    if not config.pretrained:
        return config, []
    if weights:
        return replace(config, pretrained_weights=weights), [
            f"ImageNet weights from {weights} (sha256 {file_sha256(weights)})"]
    return config, [f"ImageNet weights for {config.model}: the offline package or timm's download"]


def missing_weights(name: str, settings: Settings) -> str | None:
    """Why paper ``name`` cannot be reproduced here (its recipe starts from ImageNet weights that cannot be had),
    or None. ``--pretrained recipe`` makes that an error instead."""
    config = resolve_config(recipe_path(name), settings.overrides)
    if not config.pretrained or settings.imagenet_weights or pretrained_available(config.model):
        return None
    command = f"bloodcell reproduce {name} --pretrained recipe"
    reason = (f"{name}'s recipe is transfer learning from ImageNet weights for {config.model}, which cannot be had "
              f"on this machine; where timm can download them, run `{command}`, or pass a local file with "
              f"`--imagenet-weights FILE`. A network trained from random weights instead would not be the paper's "
              "experiment, so none is reported")
    if settings.pretrained == "recipe":
        raise WeightsUnavailableError(reason)
    return reason


def _relabel_leaky(evaluation, arm: Arm) -> None:
    result = evaluation.result
    result["label"], result["is_test_result"] = PAPER_LABEL, False
    result["notes"].append(f"Scored under the paper's protocol: {arm.description}. Leaks included on purpose; "
                           "compare with the honest protocol's report.")


def score_arm(arm: Arm, checkpoint: Path, settings: Settings, out: Path) -> dict[str, Any]:
    """Score ``checkpoint`` once on the arm's scored set, write its report to ``out``; the figures with 95 % CIs."""
    model = load_scoring_model(checkpoint)
    evaluation = evaluate(checkpoint, dataset=arm.dataset, manifest=arm.score_manifest, split="test",
                          taxonomy=arm.taxonomy, data_root=arm.data_root, limit=settings.score_limit,
                          n_boot=settings.n_boot, seed=settings.seed, model=model)
    if arm.leaky:
        _relabel_leaky(evaluation, arm)
    write_report(evaluation, out)
    boot = evaluation.result["metrics"]["bootstrap"]
    figures = {key: {part: boot[key][part] for part in ("estimate", "low", "high")} for key in ("accuracy", "macro_f1")}
    return {**figures, "scored_images": evaluation.result["counts"]["scored"], "label": evaluation.result["label"]}


def stop_rule(config: TrainConfig) -> str:
    """When the recipe's training ends, in words."""
    rule = (f"until the validation loss had not improved for {config.early_stopping_patience} epochs, at most "
            f"{config.epochs}" if config.early_stopping_patience else f"{config.epochs} epochs")
    return rule + (f", or {config.time_budget_s:g} s of training" if config.time_budget_s else "")


def _train(name: str, arm: Arm, settings: Settings, out: Path) -> dict[str, Any]:
    config, notes = _train_config(name, arm, settings, out)
    resume = (out / STATE_FILE).is_file()
    logger.info("%s, %s protocol: %s training (%s)", name, arm.name, "resuming" if resume else "starting",
                stop_rule(config))
    run = run_training(config, resume=resume, overwrite=not resume)
    checkpoint = Path(run.best_checkpoint)
    if not checkpoint.is_file():
        raise DataError(f"training {name} produced no checkpoint at {checkpoint}")
    return {"checkpoint": checkpoint, "run": out, "epochs": len(run.history), "best_epoch": run.best_epoch,
            "stop_reason": run.stop_reason, "stop_rule": stop_rule(config),
            "train_seconds": round(sum(float(row.get("seconds") or 0) for row in run.history), 1),
            "train_images": int(run.metrics.get("n_train") or 0) or None,
            "imagenet_weights": bool(config.pretrained), "notes": notes}


def run_arm(name: str, arm: Arm, settings: Settings, folder: Path, trained: dict[Path, dict]) -> dict[str, Any]:
    """Train (unless an earlier arm trained on the same manifest: then its run serves both) and score one arm;
    an arm already scored (its ``result.json``) is read back."""
    saved = folder / ARM_FILE
    if saved.is_file():
        logger.info("%s, %s protocol: already scored (%s)", name, arm.name, saved)
        return json.loads(saved.read_text(encoding="utf-8"))
    shared = arm.train_manifest in trained
    if not shared:
        trained[arm.train_manifest] = _train(name, arm, settings, folder / "run")
    training = trained[arm.train_manifest]
    notes = list(training["notes"])
    if shared:
        notes.append("one run serves both protocols (same training data, recipe, budget and seed): only what is "
                     "scored differs")
    logger.info("%s, %s protocol: scoring", name, arm.name)
    figures = score_arm(arm, training["checkpoint"], settings, folder / "evaluation")
    result = {"protocol": arm.description, "leaks": leak_counts(arm.train_manifest, arm.score_manifest), **figures,
              "run": str(training["run"]), "report": str(folder / "evaluation"),
              **{key: training[key] for key in ("epochs", "best_epoch", "stop_reason", "stop_rule", "train_seconds",
                                                 "train_images", "imagenet_weights")},
              "notes": notes}
    write_json(saved, result, ensure_ascii=False)
    return result


DATASETS = {
    "bccd4": "BCCD's typed white cells (4 types), Kaggle-like augmented copies (stands in for Kaggle's "
             "'Blood Cell Images', which are such copies)",
    "pbc": "PBC normal DIB (8 classes), the 85 % of it in the shared datasets",
}


def _citation(name: str) -> str:
    paper = paper_info(name)
    if paper is None:
        return name
    if name in PIPELINES:
        classifier = {"sk/svm": "an SVM", "sk/rf": "a random forest"}[PIPELINES[name][0]]
        return (f"{paper.citation.split(':')[0]}: the classical pipeline (segmentation, handcrafted features, "
                f"{classifier})")
    return paper.citation


def _claimed(name: str) -> dict[str, str]:
    if name in PIPELINES:
        return {"accuracy": "not recorded here (see the paper)"}
    paper = paper_info(name)
    return dict(paper.claims) if paper is not None else {}


def _command(name: str, settings: Settings, output: Path) -> str:
    budget = f" --budget {settings.budget_s:g}" if settings.budget_s else ""
    return settings.command or f"bloodcell reproduce {name}{budget} --output {output}"


def reproduce_paper(name: str, output: Path, settings: Settings) -> dict[str, Any]:
    """Both protocols of paper model ``name`` under ``output/name`` (or, when its ImageNet weights cannot be
    had, a record that says so: ``status`` "not run"); writes and returns its record."""
    folder = output / name
    folder.mkdir(parents=True, exist_ok=True)
    reason = missing_weights(name, settings)
    if reason is not None:
        logger.warning("%s: not run: %s", name, reason)
        results = {arm: {"status": NOT_RUN, "reason": reason} for arm in ("paper", "honest")}
    else:
        arms = protocol_arms(name, settings, output / "data")
        trained: dict[Path, dict] = {}
        results = {arm.name: run_arm(name, arm, settings, folder / arm.name, trained) for arm in arms}
        for result in results.values():  # relative to --output, so the folder can move
            result["run"], result["report"] = (os.path.relpath(result[k], output) for k in ("run", "report"))
    record = {
        "status": NOT_RUN if reason else "done", "model": name, "paper": _citation(name), "recipe": resources.shipped_name(recipe_path(name)),
        "recipe_sha256": file_sha256(recipe_path(name)), "data": PROTOCOLS[name].data,
        "dataset": DATASETS[PROTOCOLS[name].data],
        "protocol_source": PROTOCOLS[name].source, "claimed": _claimed(name),
        "ours_paper_protocol": results["paper"], "ours_honest": results["honest"],
        "budget_s": settings.budget_s, "seed": settings.seed, "copies_per_class": settings.copies_per_class,
        "machine": machine(),
        "score_limit": settings.score_limit, "limit_val": settings.limit_val,
        "recipe_overrides": dict(settings.overrides),
        "command": _command(name, settings, output), "commit": git_commit(), "created": now(),
    }
    write_json(folder / RESULT_FILE, record, ensure_ascii=False)
    write_text(folder / "reproduction.md", "\n".join([table(ROW_HEADER, [markdown_row(record)]), ""]))
    return record


ROW_HEADER = ["model", "paper", "data", "paper's claim", "ours, paper's protocol (95% CI)", "ours, honest (95% CI)",
              "leak in the paper's protocol", "training (paper's / honest protocol)"]


DATA_NAMES = {"bccd4": "BCCD, 4 types (Kaggle-like copies)", "pbc": "PBC, 8 classes"}


def claims_text(claimed: dict[str, str]) -> str:
    """A paper's claims in one line ("figure: value; ..."), or "not recorded"."""
    return "; ".join(f"{figure}: {value}" for figure, value in claimed.items()) or "not recorded"


def _figure(result: dict[str, Any]) -> str:
    if result.get("status") == NOT_RUN:
        return "not run: no ImageNet weights on this machine"
    acc = result["accuracy"]
    return (f"{100 * acc['estimate']:.1f} % [{100 * acc['low']:.1f}, {100 * acc['high']:.1f}] "
            f"on {result['scored_images']:,} images")


def markdown_row(record: dict[str, Any]) -> list[str]:
    """One comparison row: the paper's claim beside our figures under its protocol and under the honest one."""
    claims, data = claims_text(record["claimed"]), DATA_NAMES[record["data"]]
    paper, honest = record["ours_paper_protocol"], record["ours_honest"]
    if record.get("status") == NOT_RUN:
        return [record["model"], record["paper"].split(":")[0], data, claims, _figure(paper), _figure(honest),
                "-", "not trained (why: below, or in its JSON)"]
    return [record["model"], record["paper"].split(":")[0], data, claims, _figure(paper), _figure(honest),
            _leak(paper["leaks"]), " / ".join(_training(result) for result in (paper, honest))]


def _leak(leaks: dict[str, int]) -> str:
    n = leaks["scored_set_images"]
    return (f"{leaks['scored_training_images']:,} of {n:,} scored images were trained on; "
            f"{leaks['scored_from_training_sources']:,} share a source cell or duplicate group with training images")


def _training(result: dict[str, Any]) -> str:
    """Epochs run, why training ended and its time (older records: epochs and stop reason only)."""
    if not result["epochs"]:
        return "fitted once (classical pipeline, hyperparameters chosen on validation)"
    seconds = result.get("train_seconds")
    time = f", {seconds / 3600:.1f} h" if seconds and seconds >= 360 else f", {seconds:.0f} s" if seconds else ""
    return f"{result['epochs']} epochs ({result['stop_reason'].replace('_', ' ')}{time})"


def arm_progress(run: Path) -> str:
    """How far one protocol's unfinished training has got, read from its run folder."""
    if not (run / "config.json").is_file():
        return "not started"
    try:
        epochs = int(json.loads((run / "config.json").read_text(encoding="utf-8"))["epochs"])
        rows = read_csv(run / "metrics.csv", "learning curve", ("val_acc", "seconds"))[1] \
            if (run / "metrics.csv").is_file() else []
        best = max((float(row["val_acc"]) for row in rows), default=None)
        hours = sum(float(row["seconds"]) for row in rows) / 3600
    except (OSError, ValueError, KeyError, TypeError, DataError):
        return "under way (its run folder could not be read)"
    if best is None:
        return f"epoch 1 of at most {epochs} under way"
    return (f"{len(rows)} of at most {epochs} epochs done in {hours:.1f} h, best validation accuracy "
            f"{100 * best:.1f} %")


def unfinished_row(name: str, output: Path) -> list[str]:
    """The row of a paper whose training has started under ``output`` but not finished."""
    claims, data = claims_text(_claimed(name)), DATA_NAMES[PROTOCOLS[name].data]
    progress = " / ".join(arm_progress(output / name / arm / "run") for arm in ("paper", "honest"))
    return [name, _citation(name).split(":")[0], data, claims, "training not finished", "training not finished", "-",
            f"not finished: {progress}"]


def _unfinished(output: Path) -> list[str]:
    return [name for name in PROTOCOLS if not (output / name / RESULT_FILE).is_file()
            and any((output / name).glob("*/run/config.json"))]


def write_summary(output: Path) -> Path:
    """``output/reproductions.md``: one row per ``*/reproduction.json`` under ``output``, then one per paper
    whose training there has not finished."""
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(output.glob(f"*/{RESULT_FILE}"))]
    rows = [markdown_row(r) for r in records] + [unfinished_row(name, output) for name in _unfinished(output)]
    lines = ["# Reproductions: each paper's protocol beside an honest one", "",
             ("Accuracy with its bootstrap 95 % interval. The paper's protocol includes its leaks (copies of one "
              "cell on both sides of the split, or training images scored); the honest one keeps copies of a cell "
              "in one split and scores a held-out test split once. Details: `*/reproduction.json`; the learning "
              "curves of trainings not finished: `*/*/run/metrics.csv`."), "",
             table(ROW_HEADER, rows), ""]
    return write_text(output / "reproductions.md", "\n".join(lines))


REPORT_FILE = "report.html"


def _read_image(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _paper_section(record: dict[str, Any], output: Path) -> PaperSection:
    """One paper's part of the page: claim, both protocols, our choices, training, and its figures."""
    paper, honest = record["ours_paper_protocol"], record["ours_honest"]
    claims = claims_text(record["claimed"])
    paragraphs = [f"{record['paper']}. Claimed: {claims}. Recipe: {record['recipe']}."]
    if record.get("status") == NOT_RUN:
        return PaperSection(record["model"], [*paragraphs, f"Not reproduced: {paper['reason']}."])
    paragraphs += [
        f"The paper's protocol ({_figure(paper)}): {paper['protocol']}. {_leak(paper['leaks'])}.",
        f"The honest protocol ({_figure(honest)}): {honest['protocol']}.",
        f"What we had to choose, or could not have (the paper is silent, or its data is not here): "
        f"{record['protocol_source']}",
        f"Training (paper's / honest protocol): {' / '.join(_training(r) for r in (paper, honest))}"
        + (f"; the recipe's rule: {paper['stop_rule']}" if paper["epochs"] and paper.get("stop_rule") else "")
        + f"; on {record.get('machine', {}).get('cpus', '?')} CPUs.",
    ]
    figures: dict[str, bytes] = {}
    for label, result in (("paper's protocol", paper), ("honest protocol", honest)):
        curves = _read_image(output / result["run"] / "curves.png")
        if curves is not None and curves not in figures.values():
            figures[f"Training curves ({label}{', the same run' if paper['run'] == honest['run'] else ''})"] = curves
        confusion = _read_image(output / result["report"] / "figures" / "confusion_normalized.png")
        if confusion is not None:
            figures[f"Confusion matrix, row-normalised ({label})"] = confusion
    return PaperSection(record["model"], paragraphs, figures)


def _training_section(name: str, output: Path) -> PaperSection:
    """A paper whose training has not finished: its claim, how far each protocol has got, and its learning curves so far."""
    claims = claims_text(_claimed(name))
    paragraphs = [f"{_citation(name)}. Claimed: {claims}. Its training has not finished, so no figure of ours yet.",
                  *(f"The {label}: {arm_progress(output / name / arm / 'run')}."
                    for arm, label in (("paper", "paper's protocol"), ("honest", "honest protocol")))]
    figures = {f"Training curves so far ({label})": image for arm, label in (("paper", "paper's protocol"),
                                                                             ("honest", "honest protocol"))
               if (image := _read_image(output / name / arm / "run" / "curves.png")) is not None}
    return PaperSection(name, paragraphs, figures)


def write_report_page(output: str | Path) -> Path:
    """``output/report.html``: the table, and per paper its protocols, choices, training curves and confusion
    matrices, from every ``*/reproduction.json`` under ``output``."""
    output = Path(output)
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(output.glob(f"*/{RESULT_FILE}"))]
    unfinished = _unfinished(output)
    if not records and not unfinished:
        raise DataError(f"{output} holds no reproduction (*/{RESULT_FILE}); run 'bloodcell reproduce' first")
    intro = ["Accuracy with its bootstrap 95 % interval. The paper's protocol includes its leaks (copies of one cell "
             "on both sides of the split, or training images scored); the honest one keeps copies of a cell in one "
             "split and scores a held-out test split once, in full."]
    rows = [markdown_row(r) for r in records] + [unfinished_row(name, output) for name in unfinished]
    page = render_reproduction_page(ROW_HEADER, rows, intro,
                                    [_paper_section(r, output) for r in records]
                                    + [_training_section(name, output) for name in unfinished])
    return write_text(output / REPORT_FILE, page)


def paper_names(papers: str) -> list[str]:
    """``all`` or one paper model name, as a list; ConfigError naming the choices otherwise."""
    papers = papers.strip()
    if papers == "all":
        return list(PROTOCOLS)
    if papers not in PROTOCOLS:
        raise ConfigError(f"unknown paper {papers!r}; choose one of {', '.join(PROTOCOLS)}, or all")
    return [papers]


def check_settings(settings: Settings) -> None:
    """Refuse a bad budget, copy count, score limit or pretrained policy before any work."""
    budget = settings.budget_s
    if budget is not None and not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise ConfigError(f"--budget must be a positive number of seconds, got {settings.budget_s}")
    if settings.copies_per_class < 1:
        raise ConfigError(f"--copies-per-class must be at least 1, got {settings.copies_per_class}")
    for option, value in (("--score-limit", settings.score_limit), ("--limit-val", settings.limit_val)):
        if value is not None and value < 1:
            raise ConfigError(f"{option} must be at least 1 when given, got {value}")
    if not settings.checkpoint_every_s > 0:
        raise ConfigError(f"--checkpoint-every must be a positive number of seconds, got {settings.checkpoint_every_s}")
    if settings.imagenet_weights is not None and not Path(settings.imagenet_weights).is_file():
        raise ConfigError(f"{settings.imagenet_weights}: ImageNet weights file not found (--imagenet-weights)")
    if settings.pretrained not in PRETRAINED_POLICIES:
        raise ConfigError(f"--pretrained must be one of {', '.join(PRETRAINED_POLICIES)}, got {settings.pretrained!r}")


def check_data(names: list[str], settings: Settings) -> None:
    """Refuse missing data before any work: BCCD for the Kaggle-like papers, PBC and its manifest for the others."""
    kinds = {PROTOCOLS[name].data for name in names}
    if "bccd4" in kinds:
        dataset_root("bccd", settings.data_root)
    if "pbc" in kinds:
        dataset_root("pbc", settings.data_root)
        if not Path(settings.pbc_manifest).is_file():
            raise DataError(f"{settings.pbc_manifest}: PBC manifest not found (pass --manifest FILE)")


def reproduce(papers: str, output: str | Path, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Reproduce ``papers`` (``all`` or one paper model) under ``output``; papers already done are skipped."""
    settings = settings or Settings()
    names = paper_names(papers)
    check_settings(settings)
    check_data(names, settings)
    output = check_output_folder(output, "reproductions")
    records = []
    for name in names:
        saved = output / name / RESULT_FILE
        if saved.is_file() and json.loads(saved.read_text(encoding="utf-8")).get("status") != NOT_RUN:
            logger.info("%s: reproduction exists in %s, skipped", name, saved.parent)
            records.append(json.loads(saved.read_text(encoding="utf-8")))
            continue
        records.append(reproduce_paper(name, output, settings))
        write_summary(output)
    write_summary(output)
    return records
