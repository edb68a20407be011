"""The CenterNet smear-detector training engine: augmentation, batches, the loop, validation, thresholds.

``fit_detector(config, train, val, run_dir, manifest_sha256=...)`` trains on already-loaded
:class:`Sample` smears (resized for the network; reading them from a manifest is
:mod:`bloodcell.workflows.detector`) into a prepared run folder. Training samples are augmented
(scale jitter, random square crop of side ``config.crop``, flips, rot90, colour/stain jitter)
and fed to AdamW with a warmed-up cosine schedule (:mod:`bloodcell.train.run`). After each
epoch the full validation smears are detected, the class thresholds are chosen
(:func:`select_thresholds`) and the epoch with the lowest mean relative count error is saved as
``best.safetensors`` (thresholds and input size in its ``detector`` metadata). The run folder
holds ``config.json``, ``metrics.csv``, ``last.pt`` (resumable state) and ``best.safetensors``
(+ ``best.json``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from PIL import Image

from bloodcell.checkpoint import CheckpointMeta, save_checkpoint
from bloodcell.data.boxes import SMEAR_LABELS as LABELS
from bloodcell.data.boxes import Box
from bloodcell.errors import ConfigError
from bloodcell.log import get_logger
from bloodcell.metrics.detection import match
from bloodcell.models import create_model, list_models
from bloodcell.models.centernet import MODEL_NAME, MULTIPLE, CenterNet, to_input
from bloodcell.progress import track
from bloodcell.train.config import CONFIG_FILE, RunConfig, save_config
from bloodcell.train.run import (
    BEST_FILE,
    STATE_FILE,
    build_schedule,
    save_state,
    write_metrics_csv,
)

STATE_FORMAT = "bloodcell-detector-state/1"
RUN_FILES = (CONFIG_FILE, "metrics.csv", STATE_FILE, BEST_FILE, "best.json")
CANDIDATE_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.05, 0.951, 0.025), 3))
CRITERIA = ("count", "f1")
logger = get_logger(__name__)


@dataclass
class DetectorTrainConfig(RunConfig):
    """Options of a detector training run (saved as the run's config.json), resolved like the classifier's
    (:meth:`~bloodcell.train.config.RunConfig.resolve`); a resumed run may change only ``RESUMABLE``."""

    LABEL: ClassVar[str] = "detector training"
    RESUMABLE: ClassVar[tuple[str, ...] | None] = ("manifest", "out", "data_root", "epochs", "threads", "time_budget_s")

    manifest: str
    out: str
    dataset: str = "cbc"
    subset: str = "Training"
    data_root: str | None = None
    epochs: int = 60
    input_size: int = 384
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    pretrained: bool = True
    criterion: str = "count"
    threads: int = 1
    seed: int = 0
    limit_train: int | None = None
    limit_val: int | None = None
    time_budget_s: float | None = None
    cell_size_px: int | None = None
    scale_range: tuple[float, float] = (0.85, 1.15)
    shared_head: bool = False
    exclude_sources: tuple[str, ...] = ()
    architecture: str = MODEL_NAME

    def __post_init__(self) -> None:
        architectures = [entry.name for entry in list_models() if entry.kind == "detector" and "adapted" not in entry.tags]
        if self.architecture not in architectures:
            raise ConfigError(f"unknown detector architecture {self.architecture!r}; choose one of {', '.join(architectures)}")
        self.scale_range = tuple(float(v) for v in self.scale_range)
        self.exclude_sources = tuple(str(v) for v in self.exclude_sources)
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"scale_range must be two positive factors LOW,HIGH (low first), got {self.scale_range}")
        if self.cell_size_px is not None and not 8 <= self.cell_size_px <= 256:
            raise ConfigError(f"cell_size_px must be between 8 and 256 pixels, got {self.cell_size_px}")
        if self.criterion not in CRITERIA:
            raise ConfigError(f"unknown threshold criterion {self.criterion!r}; choose one of {', '.join(CRITERIA)}")
        if self.input_size < 4 * MULTIPLE or self.input_size % MULTIPLE:
            raise ConfigError(f"--input-size must be a multiple of {MULTIPLE} and at least {4 * MULTIPLE}, "
                              f"got {self.input_size}")
        for name in ("epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def crop(self) -> int:
        """Side of the square training crops: ``input_size`` at a fixed cell size, else the input height
        of a 4:3 photo; a multiple of 32."""
        if self.cell_size_px is not None:
            return self.input_size
        return max(MULTIPLE, int(self.input_size * 3 / 4) // MULTIPLE * MULTIPLE)



@dataclass
class Sample:
    """One smear resized for the network: uint8 HxWx3 image, boxes (N, 4) in its pixels, class indices."""

    image_id: str
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    source: str = ""


# ---- augmentation ----------------------------------------------------------------------

def hflip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes of the image mirrored left-right."""
    return np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)


def vflip_boxes(boxes: np.ndarray, height: int) -> np.ndarray:
    """Boxes of the image mirrored top-bottom."""
    return np.stack([boxes[:, 0], height - boxes[:, 3], boxes[:, 2], height - boxes[:, 1]], axis=1)


def rot90_boxes(boxes: np.ndarray, width: int, height: int, k: int) -> np.ndarray:
    """Boxes of ``np.rot90(image, k)`` (k quarter turns counter-clockwise) for a ``width`` x ``height`` image."""
    for _ in range(k % 4):
        boxes = np.stack([boxes[:, 1], width - boxes[:, 2], boxes[:, 3], width - boxes[:, 0]], axis=1)
        width, height = height, width
    return boxes


def crop_boxes(boxes: np.ndarray, labels: np.ndarray, x0: int, y0: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes shifted into a ``side`` x ``side`` crop at (x0, y0): centres inside are kept, boxes clipped."""
    shifted = boxes - np.array([x0, y0, x0, y0], np.float32)
    cx, cy = (shifted[:, 0] + shifted[:, 2]) / 2, (shifted[:, 1] + shifted[:, 3]) / 2
    inside = (cx >= 0) & (cx < side) & (cy >= 0) & (cy < side)
    return np.clip(shifted[inside], 0, side), labels[inside]


def _colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Saturation, contrast, brightness, gamma and per-channel (stain, white balance) gains; sometimes blur."""
    x = image.astype(np.float32)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.6, 1.4)  # saturation
    x = x.mean() + (x - x.mean()) * rng.uniform(0.75, 1.25)  # contrast
    x = x * rng.uniform(0.8, 1.2) * rng.normal(1.0, 0.08, size=3)  # brightness, stain and white balance
    x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** rng.uniform(0.8, 1.25)  # gamma
    if rng.random() < 0.2:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
    return np.clip(x, 0, 255).astype(np.uint8)


def augment(sample: Sample, side: int, rng: np.random.Generator, scale_range: tuple[float, float] = (0.85, 1.15)
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random training view of at most ``side`` x ``side``: scale jitter (log-uniform in ``scale_range``),
    crop, flips, rot90, colour jitter. A photo smaller than ``side`` stays whole."""
    factor = math.exp(rng.uniform(math.log(scale_range[0]), math.log(scale_range[1])))
    height, width = sample.image.shape[:2]
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    image = np.asarray(Image.fromarray(sample.image).resize((new_w, new_h), Image.BILINEAR))
    boxes = sample.boxes * np.array([new_w / width, new_h / height] * 2, np.float32)
    x0, y0 = int(rng.integers(0, max(0, new_w - side) + 1)), int(rng.integers(0, max(0, new_h - side) + 1))
    image = image[y0:y0 + side, x0:x0 + side]
    crop_h, crop_w = image.shape[:2]
    boxes, labels = crop_boxes(boxes, sample.labels, x0, y0, side)
    boxes = np.minimum(boxes, np.array([crop_w, crop_h, crop_w, crop_h], np.float32))
    if rng.random() < 0.5:
        image, boxes = image[:, ::-1], hflip_boxes(boxes, crop_w)
    if rng.random() < 0.5:
        image, boxes = image[::-1], vflip_boxes(boxes, crop_h)
    k = int(rng.integers(0, 4))
    image, boxes = np.rot90(image, k), rot90_boxes(boxes, crop_w, crop_h, k)
    return _colour_jitter(np.ascontiguousarray(image), rng), boxes.astype(np.float32), labels


def make_batch(samples: Sequence[Sample], side: int, rng: np.random.Generator, mean, std,
               scale_range: tuple[float, float] = (0.85, 1.15)):
    """(images tensor zero-padded to ``side`` x ``side``, boxes per image, class indices per image) of augmented
    views of ``samples``."""
    images, boxes, labels = [], [], []
    for sample in samples:
        image, view_boxes, view_labels = augment(sample, side, rng, scale_range)
        tensor = to_input(image, mean, std)
        images.append(torch.nn.functional.pad(tensor, (0, side - tensor.shape[-1], 0, side - tensor.shape[-2])))
        boxes.append(view_boxes)
        labels.append(view_labels)
    return torch.stack(images), boxes, labels


# ---- thresholds and validation ---------------------------------------------------------

def _class_boxes(detections: list[Box], label: str) -> list[tuple[float, tuple]]:
    return [(d.score, (d.x1, d.y1, d.x2, d.y2)) for d in detections if d.label == label]


def _threshold_row(threshold: float, image_scores: list[np.ndarray], truth: np.ndarray, scores: np.ndarray,
                   hits: np.ndarray, n_truth: int) -> dict[str, float]:
    counted = np.array([(s >= threshold).sum() for s in image_scores], float)
    tp = float(hits[scores >= threshold].sum())
    f1 = float(2 * tp / (counted.sum() + n_truth)) if counted.sum() + n_truth else 1.0
    accuracy = float(1 - abs(counted.sum() - truth.sum()) / truth.sum()) if truth.sum() else float("nan")
    return {"threshold": float(threshold), "mae": float(np.abs(counted - truth).mean()), "count_accuracy": accuracy,
            "f1": f1}


def select_thresholds(detections: Sequence[list[Box]], truths: Sequence[Sample], criterion: str = "count",
                      candidates: Sequence[float] = CANDIDATE_THRESHOLDS) -> dict[str, dict[str, float]]:
    """Per class, the candidate score threshold that is best on these (validation) smears.

    ``detections`` are per-image detections at a threshold no higher than the lowest
    candidate. ``criterion="count"`` minimises the mean absolute per-image count error
    (ties: the higher threshold); ``"f1"`` maximises F1 of IoU>=0.5 matches (ties: higher).
    Returns ``{label: {threshold, mae, count_accuracy, f1}}``.
    """
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown threshold criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    result = {}
    for index, label in enumerate(LABELS):
        preds = [_class_boxes(d, label) for d in detections]
        gts = [[tuple(b) for b in s.boxes[s.labels == index]] for s in truths]
        truth = np.array([len(g) for g in gts], float)
        image_scores = [np.array([p[0] for p in ps]) for ps in preds]
        scores, hits, n_truth = match(preds, gts)
        best: dict[str, float] | None = None
        for t in sorted(candidates, reverse=True):
            row = _threshold_row(t, image_scores, truth, scores, hits, n_truth)
            if best is None or (row["mae"] < best["mae"] if criterion == "count" else row["f1"] > best["f1"]):
                best = row
        result[label] = best
    return result


def validate(model: torch.nn.Module, samples: Sequence[Sample], criterion: str, mean, std) -> dict[str, Any]:
    """Validation loss, chosen thresholds and count/F1 figures of ``model`` (put in eval mode) on ``samples``."""
    model.eval()
    losses, detections = [], []
    low = [min(CANDIDATE_THRESHOLDS)] * len(LABELS)
    with torch.no_grad():
        for sample in track(samples, "validating", unit="images"):
            height, width = sample.image.shape[:2]
            x = to_input(sample.image, mean, std)
            if isinstance(model, CenterNet):  # torchvision's FCOS computes its loss in training mode only
                losses.append(float(model.loss(x[None], [sample.boxes], [sample.labels])))
            detections.append(model.detect(x, low, (width, height)))
    chosen = select_thresholds(detections, samples, criterion)
    truth_means = {label: max(1e-9, float(np.mean([(s.labels == i).sum() for s in samples])))
                   for i, label in enumerate(LABELS)}
    relative = float(np.mean([chosen[label]["mae"] / truth_means[label] for label in LABELS]))
    return {"val_loss": float(np.mean(losses)) if losses else float("nan"), "val_rel_mae": relative, "classes": chosen}


# ---- the run ---------------------------------------------------------------------------

@dataclass
class _Parts:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    history: list[dict]
    best: dict[str, Any]
    start_epoch: int = 1


def _build(config: DetectorTrainConfig, n_train: int, state: dict[str, Any] | None) -> _Parts:
    """The model, optimizer and schedule of a run, restored from ``state`` (``last.pt``) when resuming."""
    model = create_model(config.architecture, num_classes=len(LABELS), pretrained=config.pretrained,
                         class_names=LABELS, input_size=config.input_size, **_model_kwargs(config))
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = build_schedule(optimizer, "cosine", config.epochs, math.ceil(n_train / config.batch_size),
                               config.warmup_epochs)
    parts = _Parts(model, optimizer, scheduler, [], {"val_rel_mae": math.inf, "epoch": 0})
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        parts.history, parts.best, parts.start_epoch = state["history"], state["best"], int(state["epoch"]) + 1
    return parts


def _train_epoch(parts: _Parts, train: Sequence[Sample], config: DetectorTrainConfig, epoch: int) -> tuple[float, int]:
    """One pass over shuffled batches of augmented ``train`` views: (mean loss, batches)."""
    rng = np.random.default_rng([config.seed, epoch])
    torch.manual_seed(config.seed * 100_003 + epoch)
    order = rng.permutation(len(train))
    data_config = parts.model.data_config
    parts.model.train()
    losses = []
    batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    for batch in track(batches, f"epoch {epoch}/{config.epochs}", total=len(train), unit="images", size=len):
        images, boxes, labels = make_batch([train[i] for i in batch], config.crop, rng, data_config.mean,
                                           data_config.std, config.scale_range)
        loss = parts.model.loss(images.contiguous(memory_format=torch.channels_last), boxes, labels)
        parts.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parts.optimizer.step()
        parts.scheduler.step()
        losses.append(loss.item())
    return float(np.mean(losses)), len(batches)


def _epoch_row(epoch: int, train_loss: float, val: dict, lr: float, seconds: float, iterations: int) -> dict:
    row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val["val_loss"], "val_rel_mae": val["val_rel_mae"]}
    for label, figures in val["classes"].items():
        for key in ("threshold", "mae", "count_accuracy", "f1"):
            row[f"{label}_{key}"] = figures[key]
    return {**row, "lr": lr, "seconds": seconds, "seconds_per_iter": seconds / max(1, iterations)}


def _model_kwargs(config: DetectorTrainConfig) -> dict[str, Any]:
    return {"shared_head": True} if config.shared_head and config.architecture == MODEL_NAME else {}


def _save_best(path: Path, model, config: DetectorTrainConfig, row: dict, figures: dict, n_train: int, n_val: int,
               manifest_sha256: str) -> None:
    thresholds = {label: figures["classes"][label]["threshold"] for label in LABELS}
    meta = CheckpointMeta(
        model_name=config.architecture, data_config=model.data_config, train_config=config.to_dict(),
        metrics={**{k: v for k, v in row.items() if isinstance(v, (int, float))}, "n_train": n_train, "n_val": n_val},
        model_kwargs=_model_kwargs(config),
        extra={"detector": {"thresholds": thresholds, "input_size": config.input_size, "criterion": config.criterion,
                            "cell_size_px": config.cell_size_px,
                            "labels": list(LABELS), "manifest_sha256": manifest_sha256,
                            "thresholds_chosen_on": "val"}},
    )
    save_checkpoint(path, model, meta)


def _record(run_dir: Path, parts: _Parts, config: DetectorTrainConfig, row: dict, figures: dict,
            sizes: tuple[int, int], manifest_sha256: str) -> None:
    """Keep the best checkpoint, then write metrics.csv and last.pt."""
    parts.history.append(row)
    if figures["val_rel_mae"] < parts.best["val_rel_mae"]:
        parts.best = {"val_rel_mae": figures["val_rel_mae"], "epoch": row["epoch"]}
        _save_best(run_dir / BEST_FILE, parts.model, config, row, figures, *sizes, manifest_sha256)
    write_metrics_csv(parts.history, run_dir / "metrics.csv")
    save_state(run_dir / STATE_FILE, {
        "format": STATE_FORMAT, "epoch": row["epoch"], "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
        "history": parts.history, "best": parts.best, "manifest_sha256": manifest_sha256})


def fit_detector(config: DetectorTrainConfig, train: Sequence[Sample], val: Sequence[Sample], run_dir: Path, *,
                 manifest_sha256: str, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train (or, from ``state``, continue) the detector in the prepared ``run_dir``; returns the best
    epoch's row and checkpoint path. ``manifest_sha256`` identifies the split in the checkpoint and state."""
    run_dir = Path(run_dir)
    parts = _build(config, len(train), state)
    save_config(config, run_dir / CONFIG_FILE)
    mean, std = parts.model.data_config.mean, parts.model.data_config.std
    started = time.monotonic()
    for epoch in range(parts.start_epoch, config.epochs + 1):
        tick = time.monotonic()
        train_loss, iterations = _train_epoch(parts, train, config, epoch)
        seconds, lr = time.monotonic() - tick, parts.optimizer.param_groups[0]["lr"]  # lr after the epoch, as before
        figures = validate(parts.model, val, config.criterion, mean, std)
        row = _epoch_row(epoch, train_loss, figures, lr, seconds, iterations)
        _record(run_dir, parts, config, row, figures, (len(train), len(val)), manifest_sha256)
        val_loss = "n/a" if math.isnan(row["val_loss"]) else f"{row['val_loss']:.4f}"  # FCOS: no loss in eval mode
        logger.info("epoch %d: train loss %.4f, val loss %s, val relative count error %.3f, %.2f s/iteration",
                    epoch, row["train_loss"], val_loss, row["val_rel_mae"], row["seconds_per_iter"])
        if config.time_budget_s is not None and time.monotonic() - started > config.time_budget_s:
            logger.info("time budget of %.0f s reached after epoch %d; continue with --resume", config.time_budget_s, epoch)
            break
    best_row = next((r for r in parts.history if r["epoch"] == parts.best["epoch"]), {})
    return {"best_epoch": parts.best["epoch"], "best": best_row, "checkpoint": str(run_dir / BEST_FILE),
            "epochs_run": len(parts.history)}
