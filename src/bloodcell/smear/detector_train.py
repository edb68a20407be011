"""Train the CenterNet smear detector on a CBC split; thresholds and the best epoch chosen on val.

``train_detector(DetectorTrainConfig(manifest=..., out=...))`` reads the ``train`` and ``val``
ids of an ``image_id,split`` manifest (never the ``test`` ones: only their XML files and
photos are opened), resizes each photo so its longer side is ``input_size`` and keeps them in
memory. Training samples are augmented (scale jitter, random square crop of side
``input_height``, flips, rot90, colour/stain jitter) and fed to AdamW with a warmed-up cosine
schedule. After each epoch the full validation photos are detected, the class thresholds are
chosen (:func:`select_thresholds`) and the epoch with the lowest mean relative count error
is saved as ``best.safetensors`` (thresholds and input size in its ``detector`` metadata).
The run folder holds ``config.json``, ``metrics.csv``, ``last.pt`` (resumable state) and
``best.safetensors`` (+ ``best.json``).
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from bloodcell.checkpoint import CheckpointMeta, file_sha256, save_checkpoint
from bloodcell.data.images import read_image
from bloodcell.data.locate import dataset_root
from bloodcell.data.voc import parse_voc, voc_folders
from bloodcell.errors import ConfigError, DataError
from bloodcell.models.registry import create_model
from bloodcell.progress import track
from bloodcell.smear.centernet import (MODEL_NAME, MULTIPLE, CenterNetDetector, centernet_loss, decode, encode_targets,
                                      input_shape, to_input)
from bloodcell.smear.classical import LABELS, Detection
from bloodcell.smear.evaluation import match
from bloodcell.smear.splits import read_split
from bloodcell.train.engine import load_train_state

STATE_FILE = "last.pt"
BEST_FILE = "best.safetensors"
STATE_FORMAT = "bloodcell-detector-state/1"
RUN_FILES = ("config.json", "metrics.csv", STATE_FILE, BEST_FILE, "best.json")
TRAIN_SPLITS = ("train", "val")
CANDIDATE_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.05, 0.951, 0.025), 3))
CRITERIA = ("count", "f1")
#: Options that may change when a run is resumed.
RESUMABLE = ("manifest", "out", "data_root", "epochs", "threads", "time_budget_s")


@dataclass
class DetectorTrainConfig:
    """Options of a detector training run (saved as the run's config.json)."""

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

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ConfigError(f"unknown threshold criterion {self.criterion!r}; choose one of {', '.join(CRITERIA)}")
        if self.input_size < 4 * MULTIPLE or self.input_size % MULTIPLE:
            raise ConfigError(f"--input-size must be a multiple of {MULTIPLE} and at least {4 * MULTIPLE}, got {self.input_size}")
        for name in ("epochs", "batch_size", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def crop(self) -> int:
        """Side of the square training crops: the input height of a 4:3 photo, a multiple of 32."""
        return max(MULTIPLE, int(self.input_size * 3 / 4) // MULTIPLE * MULTIPLE)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Sample:
    """One smear resized for the network: uint8 HxWx3 image, boxes (N, 4) in its pixels, class indices."""

    image_id: str
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


# ---- data ------------------------------------------------------------------------------

def load_split_samples(manifest: str | Path, split: str, input_size: int, dataset: str = "cbc",
                       subset: str = "Training", data_root: str | Path | None = None,
                       limit: int | None = None) -> list[Sample]:
    """The ``train`` or ``val`` smears of ``manifest``, resized (longer side ``input_size``).

    Refuses ``test``: the held-out smears are never opened by training code.
    """
    if split not in TRAIN_SPLITS:
        raise ConfigError(f"training code reads only the {' and '.join(TRAIN_SPLITS)} splits, not {split!r}")
    ids = sorted(i for i, s in read_split(manifest).items() if s == split)[:limit]
    if not ids:
        raise DataError(f"{manifest}: no {split} images")
    annotations, images = voc_folders(dataset_root(dataset, data_root), subset)
    samples = []
    for image_id in track(ids, f"loading {split} smears"):
        ann = parse_voc(annotations / f"{image_id}.xml")
        path = images / Path(ann.filename).name
        photo = read_image(path if path.is_file() else images / f"{image_id}.jpg")
        scale, width, height = input_shape(photo.width, photo.height, input_size)
        array = np.asarray(photo.resize((width, height), Image.BILINEAR))
        known = [b for b in ann.boxes if b.label in LABELS]
        boxes = np.array([(b.x1, b.y1, b.x2, b.y2) for b in known], np.float32).reshape(-1, 4) * scale
        labels = np.array([LABELS.index(b.label) for b in known], np.int64)
        samples.append(Sample(image_id, array, boxes, labels))
    return samples


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
    """Brightness/contrast/saturation and per-channel (stain) gains."""
    x = image.astype(np.float32)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.75, 1.25)  # saturation
    x = x.mean() + (x - x.mean()) * rng.uniform(0.8, 1.2)  # contrast
    x = x * rng.uniform(0.85, 1.15) * rng.normal(1.0, 0.05, size=3)  # brightness and stain
    return np.clip(x, 0, 255).astype(np.uint8)


def augment(sample: Sample, side: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random ``side`` x ``side`` training view: scale jitter, crop, flips, rot90, colour jitter."""
    factor = rng.uniform(0.85, 1.15)
    height, width = sample.image.shape[:2]
    new_w, new_h = max(side, round(width * factor)), max(side, round(height * factor))
    image = np.asarray(Image.fromarray(sample.image).resize((new_w, new_h), Image.BILINEAR))
    boxes = sample.boxes * np.array([new_w / width, new_h / height] * 2, np.float32)
    x0, y0 = int(rng.integers(0, new_w - side + 1)), int(rng.integers(0, new_h - side + 1))
    image = image[y0:y0 + side, x0:x0 + side]
    boxes, labels = crop_boxes(boxes, sample.labels, x0, y0, side)
    if rng.random() < 0.5:
        image, boxes = image[:, ::-1], hflip_boxes(boxes, side)
    if rng.random() < 0.5:
        image, boxes = image[::-1], vflip_boxes(boxes, side)
    k = int(rng.integers(0, 4))
    image, boxes = np.rot90(image, k), rot90_boxes(boxes, side, side, k)
    return _colour_jitter(np.ascontiguousarray(image), rng), boxes.astype(np.float32), labels


def make_batch(samples: Sequence[Sample], side: int, rng: np.random.Generator, mean, std):
    """(images tensor, stacked targets) of augmented views of ``samples``."""
    images, targets = [], []
    for sample in samples:
        image, boxes, labels = augment(sample, side, rng)
        images.append(to_input(image, mean, std))
        targets.append(encode_targets(boxes, labels, (side, side)))
    return torch.stack(images), {k: torch.stack([t[k] for t in targets]) for k in targets[0]}


# ---- thresholds and validation ---------------------------------------------------------

def _class_boxes(detections: list[Detection], label: str) -> list[tuple[float, tuple]]:
    return [(d.score, (d.x1, d.y1, d.x2, d.y2)) for d in detections if d.label == label]


def select_thresholds(detections: Sequence[list[Detection]], truths: Sequence[Sample], criterion: str = "count",
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
            counted = np.array([(s >= t).sum() for s in image_scores], float)
            tp = float(hits[scores >= t].sum())
            f1 = float(2 * tp / (counted.sum() + n_truth)) if counted.sum() + n_truth else 1.0
            row = {"threshold": float(t), "mae": float(np.abs(counted - truth).mean()),
                   "count_accuracy": float(1 - abs(counted.sum() - truth.sum()) / truth.sum()) if truth.sum() else float("nan"),
                   "f1": f1}
            if best is None or (row["mae"] < best["mae"] if criterion == "count" else row["f1"] > best["f1"]):
                best = row
        result[label] = best
    return result


def validate(detector: CenterNetDetector, samples: Sequence[Sample], criterion: str) -> dict[str, Any]:
    """Validation loss, chosen thresholds and count/F1 figures of ``detector`` on ``samples``."""
    losses, detections = [], []
    low = [min(CANDIDATE_THRESHOLDS)] * len(LABELS)
    with torch.no_grad():
        for sample in samples:
            height, width = sample.image.shape[:2]
            x = to_input(sample.image, detector.mean, detector.std)[None]
            out = detector.model(x)
            targets = {k: v[None] for k, v in encode_targets(sample.boxes, sample.labels, tuple(x.shape[-2:])).items()}
            losses.append(float(centernet_loss(out, targets)[0]))
            detections.append(decode(torch.sigmoid(out["heatmap"][0]), out["size"][0], out["offset"][0], low,
                                     image_size=(width, height)))
    chosen = select_thresholds(detections, samples, criterion)
    truth_means = {label: max(1e-9, float(np.mean([(s.labels == i).sum() for s in samples])))
                   for i, label in enumerate(LABELS)}
    relative = float(np.mean([chosen[label]["mae"] / truth_means[label] for label in LABELS]))
    return {"val_loss": float(np.mean(losses)), "val_rel_mae": relative, "classes": chosen}


# ---- the run ---------------------------------------------------------------------------

def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Check the run folder; create or clear it for a new run."""
    if resume:
        if not (out / STATE_FILE).is_file():
            raise ConfigError(f"{out} holds no {STATE_FILE} to resume from; start a new run without --resume")
        return
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} already exists and is not empty; pass --resume to continue it or --overwrite to start again")
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)


def resume_config(out: str | Path, changes: dict[str, Any]) -> DetectorTrainConfig:
    """The saved config of the run in ``out`` with ``changes`` (only ``RESUMABLE`` options may differ)."""
    path = Path(out) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{out} holds no config.json to resume from; start a new run without --resume")
    saved = json.loads(path.read_text())
    for key, value in changes.items():
        if value is not None and key not in RESUMABLE and value != saved.get(key):
            raise ConfigError(f"--{key.replace('_', '-')} differs from the run being resumed ({saved.get(key)!r}); "
                              f"only {', '.join(RESUMABLE)} may change on --resume")
    known = {f.name for f in fields(DetectorTrainConfig)}
    merged = {**saved, **{k: v for k, v in changes.items() if v is not None and k in RESUMABLE}}
    return DetectorTrainConfig(**{k: v for k, v in merged.items() if k in known})


def _write_metrics(history: list[dict], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in history for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()} for row in history)


def _epoch_row(epoch: int, train_loss: float, val: dict, lr: float, seconds: float, iterations: int) -> dict:
    row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val["val_loss"], "val_rel_mae": val["val_rel_mae"]}
    for label, figures in val["classes"].items():
        for key in ("threshold", "mae", "count_accuracy", "f1"):
            row[f"{label}_{key}"] = figures[key]
    return {**row, "lr": lr, "seconds": seconds, "seconds_per_iter": seconds / max(1, iterations)}


def train_detector(config: DetectorTrainConfig, resume: bool = False, overwrite: bool = False,
                   log=print) -> dict[str, Any]:
    """Run (or continue) a detector training; returns the best epoch's row and checkpoint path."""
    out = Path(config.out)
    prepare_run_dir(out, resume, overwrite)
    torch.set_num_threads(config.threads)
    train = load_split_samples(config.manifest, "train", config.input_size, config.dataset, config.subset,
                               config.data_root, config.limit_train)
    val = load_split_samples(config.manifest, "val", config.input_size, config.dataset, config.subset,
                             config.data_root, config.limit_val)
    manifest_sha = file_sha256(config.manifest)
    model = create_model(MODEL_NAME, num_classes=len(LABELS), pretrained=config.pretrained, class_names=LABELS,
                         input_size=config.input_size)
    data_config = model.data_config
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    warmup = max(1, round(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _lr_factor(step, warmup, config.epochs * steps_per_epoch))
    history: list[dict] = []
    best = {"val_rel_mae": math.inf, "epoch": 0}
    start_epoch = 1
    if resume:
        state = load_train_state(out / STATE_FILE, STATE_FORMAT)
        if state["manifest_sha256"] != manifest_sha:
            raise DataError(f"{config.manifest} is not the manifest {out} was trained on (its sha256 differs)")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best, start_epoch = state["history"], state["best"], int(state["epoch"]) + 1
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    started = time.monotonic()
    for epoch in range(start_epoch, config.epochs + 1):
        tick = time.monotonic()
        rng = np.random.default_rng([config.seed, epoch])
        torch.manual_seed(config.seed * 100_003 + epoch)
        order = rng.permutation(len(train))
        model.train()
        losses = []
        batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        for batch in track(batches, f"epoch {epoch}/{config.epochs}"):
            images, targets = make_batch([train[i] for i in batch], config.crop, rng, data_config.mean, data_config.std)
            loss, _ = centernet_loss(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        train_seconds = time.monotonic() - tick
        detector = CenterNetDetector(model, [0.5] * len(LABELS), config.input_size, data_config.mean, data_config.std)
        figures = validate(detector, val, config.criterion)
        model.train()
        row = _epoch_row(epoch, float(np.mean(losses)), figures, optimizer.param_groups[0]["lr"], train_seconds, len(batches))
        history.append(row)
        if figures["val_rel_mae"] < best["val_rel_mae"]:
            best = {"val_rel_mae": figures["val_rel_mae"], "epoch": epoch}
            _save_best(out / BEST_FILE, model, data_config, config, row, figures, len(train), len(val), manifest_sha)
        _write_metrics(history, out / "metrics.csv")
        state = {"format": STATE_FORMAT, "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "history": history, "best": best, "manifest_sha256": manifest_sha}
        torch.save(state, out / "last.pt.tmp")
        (out / "last.pt.tmp").replace(out / STATE_FILE)
        log(f"epoch {epoch}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
            f"val relative count error {row['val_rel_mae']:.3f}, {row['seconds_per_iter']:.2f} s/iteration")
        if config.time_budget_s is not None and time.monotonic() - started > config.time_budget_s:
            log(f"time budget of {config.time_budget_s:.0f} s reached after epoch {epoch}; continue with --resume")
            break
    best_row = next((r for r in history if r["epoch"] == best["epoch"]), {})
    return {"best_epoch": best["epoch"], "best": best_row, "checkpoint": str(out / BEST_FILE), "epochs_run": len(history)}


def _save_best(path: Path, model, data_config, config: DetectorTrainConfig, row: dict, figures: dict,
               n_train: int, n_val: int, manifest_sha: str) -> None:
    thresholds = {label: figures["classes"][label]["threshold"] for label in LABELS}
    meta = CheckpointMeta(
        model_name=MODEL_NAME, data_config=data_config, train_config=config.to_dict(),
        metrics={**{k: v for k, v in row.items() if isinstance(v, (int, float))}, "n_train": n_train, "n_val": n_val},
        extra={"detector": {"thresholds": thresholds, "input_size": config.input_size, "criterion": config.criterion,
                            "labels": list(LABELS), "manifest_sha256": manifest_sha,
                            "thresholds_chosen_on": "val"}},
    )
    save_checkpoint(path, model, meta)
