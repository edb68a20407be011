"""The classifier training loop, in the style of torchvision's classification reference.

``train_one_epoch`` and ``evaluate`` do one pass each; ``fit`` trains a model on the training and
validation data it is given, into a run folder the caller prepared (:mod:`bloodcell.train.run`):
``metrics.csv``, ``curves.png``, ``last.pt`` (the resumable state, rewritten every epoch and, with
``checkpoint_every_s``, within an epoch too, so a slow epoch resumes where it was stopped) and
``best.safetensors`` (the checkpoint of the epoch with the lowest validation loss, with the
temperature fitted on its validation logits). Validation scores the model through the
predictor's one scoring path (:meth:`bloodcell.inference.predictor.Classifier.score`) on the
model-input uint8 pixels. The same code runs single-process or under torchrun
(:mod:`bloodcell.train.distributed`); reading manifests and building the datasets is the
workflow's job (:mod:`bloodcell.workflows.train`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torch import nn

from bloodcell.checkpoint import CheckpointMeta, save_checkpoint
from bloodcell.errors import BloodcellError, ConfigError, DataError
from bloodcell.inference.predictor import Classifier
from bloodcell.log import get_logger
from bloodcell.metrics.calibration import fit_temperature, nll
from bloodcell.models.heads import classifier_layer
from bloodcell.progress import track
from bloodcell.train import distributed as dist_utils
from bloodcell.train.config import TrainConfig
from bloodcell.train.data import SplitData, class_weights, eval_loader, train_loader
from bloodcell.train.distributed import DistContext, unwrap
from bloodcell.train.history import COLUMNS, plot_curves
from bloodcell.train.run import (
    BEST_FILE,
    STATE_FILE,
    build_schedule,
    rng_state,
    save_state,
    set_rng_state,
    write_metrics_csv,
)

STATE_FORMAT = "bloodcell-train-state/1"
#: Files a run writes; ``--overwrite`` removes exactly these (never anything else in the folder).
RUN_FILES = ("config.json", "metrics.csv", "curves.png", STATE_FILE, BEST_FILE, "best.json", "best.skops")
logger = get_logger(__name__)


@dataclass
class RunResult:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    best_checkpoint: Path
    history: list[dict[str, Any]]
    best_epoch: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    temperature: float = 1.0
    stop_reason: str = "completed"  # completed | early_stopping | time_budget
    rank: int = 0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the augmentation/dropout randomness of one epoch on one rank (resume-stable)."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % 2**63


def _info(ctx: DistContext, message: str, *args: Any) -> None:
    if ctx.is_main:
        logger.info(message, *args)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW/Adam/SGD over trainable parameters; biases and norm layers get no weight decay."""
    extra = {"momentum": config.momentum} if config.optimizer == "sgd" else {}
    return create_optimizer_v2(model, opt=config.optimizer, lr=config.lr, weight_decay=config.weight_decay, **extra)


def classifier_module(model: nn.Module) -> nn.Module:
    """The classification head (:func:`bloodcell.models.heads.classifier_layer`); ConfigError without one."""
    try:
        return classifier_layer(model)
    except TypeError:
        raise ConfigError(f"cannot find the classifier of model {getattr(model, 'model_name', '?')!r} to train it alone") from None


def load_init_weights(model: nn.Module, state: dict[str, torch.Tensor], same_classes: bool, source: str) -> None:
    """Start ``model`` from a checkpoint's weights ``state``: all of them over the same classes, else
    the backbone only (the classification head keeps its fresh initialisation)."""
    if same_classes:
        model.load_state_dict(state)
        return
    head = classifier_module(model)
    prefix = next(name for name, module in model.named_modules() if module is head) + "."
    kept = {key: value for key, value in state.items() if not key.startswith(prefix)}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    if unexpected or any(not key.startswith(prefix) for key in missing):
        raise ConfigError(f"{source}: its backbone does not match {getattr(model, 'model_name', 'the model')}'s layers")


def set_backbone_frozen(model: nn.Module, head: nn.Module, trainable: dict[str, bool], frozen: bool) -> None:
    """Freeze (or restore) everything but ``head``; ``trainable`` holds the architecture's own flags."""
    head_params = {id(p) for p in head.parameters()}
    for name, param in model.named_parameters():
        param.requires_grad = trainable[name] and (not frozen or id(param) in head_params)


def _set_train_mode(model: nn.Module, head: nn.Module | None, frozen: bool) -> None:
    model.train()
    if frozen and head is not None:
        unwrap(model).eval()  # frozen backbone: BatchNorm statistics stay as pretrained
        head.train()


def _to_device(images: torch.Tensor, targets: torch.Tensor, ctx: DistContext, channels_last: bool):
    images = images.to(ctx.device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(ctx.device, non_blocking=True)


def _images(batch) -> int:
    return len(batch[1])


def _tracked(loader, description: str, ctx: DistContext, total: int):
    """``loader`` with a progress count of images on rank 0."""
    return track(loader, description, total=total, unit="images", size=_images) if ctx.is_main else loader


def train_one_epoch(model: nn.Module, loader, criterion: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                    ctx: DistContext, *, ema=None, channels_last: bool = False, deadline: float | None = None,
                    description: str = "train", first_step: int = 0, resume: dict[str, Any] | None = None,
                    checkpoint: Callable[[dict[str, Any]], None] | None = None,
                    checkpoint_every_s: float | None = None) -> dict[str, Any]:
    """One pass over ``loader``; stops early (``stopped=True``) once ``deadline`` (monotonic) passes.

    ``first_step`` (optimizer steps taken before this epoch) drives the EMA warmup. Every
    ``checkpoint_every_s`` seconds, ``checkpoint(partial)`` is given where the epoch stands (batches
    done, sums so far, seconds, RNG states); ``resume`` (such a ``partial``) continues an interrupted
    epoch: its batches are drawn again (same order and augmentation, not trained on), then the RNG
    states are restored, so the epoch ends as it would have without the interruption.

    Returns loss and accuracy summed over all ranks, images seen, seconds and images/s.
    """
    start = time.perf_counter()
    done = resume or {"batches": 0, "loss_sum": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}
    loss_sum, correct, seen = done["loss_sum"], done["correct"], done["seen"]
    stopped = False
    total = min(len(loader.sampler), len(loader) * (loader.batch_size or 1))
    batches = iter(loader)
    for _ in range(done["batches"]):
        next(batches)
    if resume is not None:
        set_rng_state(resume["rng"])
    saved = time.monotonic()
    first = first_step + done["batches"] + 1
    for step, (images, targets) in enumerate(_tracked(batches, description, ctx, total - int(seen)), start=first):
        images, targets = _to_device(images, targets, ctx, channels_last)
        logits = model(images)
        loss = criterion(logits, targets)
        if not torch.isfinite(loss):
            raise BloodcellError(f"training diverged ({description}: the loss is {loss.item()}); lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(unwrap(model), step=step)
        n = targets.shape[0]
        loss_sum += loss.item() * n
        correct += (logits.argmax(1) == targets).sum().item()
        seen += n
        if checkpoint is not None and time.monotonic() - saved > checkpoint_every_s:
            checkpoint({"batches": step - first_step, "loss_sum": loss_sum, "correct": correct, "seen": seen,
                        "seconds": done["seconds"] + time.perf_counter() - start, "rng": rng_state()})
            saved = time.monotonic()
        if deadline is not None and dist_utils.any_rank(ctx, time.monotonic() > deadline):
            stopped = True
            break
    seconds = done["seconds"] + time.perf_counter() - start
    loss_sum, correct, seen = dist_utils.all_reduce_sum(ctx, [loss_sum, correct, seen])
    return {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1), "images": int(seen), "seconds": seconds,
            "images_per_s": seen / seconds if seconds > 0 else 0.0, "stopped": stopped}


def evaluate(classifier: Classifier, loader, ctx: DistContext, *, description: str = "validate") -> dict[str, Any]:
    """Cross-entropy (unweighted, unsmoothed) and accuracy of ``classifier`` on a loader of uint8 model-input
    pixels, scored by :meth:`Classifier.score` (no TTA); logits gathered from all ranks (numpy)."""
    classifier.model.eval()
    logits_parts, label_parts = [], []
    for pixels, targets in _tracked(loader, description, ctx, len(loader.dataset)):
        logits, _ = classifier.score(pixels.numpy(), tta=False)
        logits_parts.append(logits[0])
        label_parts.append(targets.numpy().astype(np.int64))
    logits = np.concatenate(logits_parts) if logits_parts else np.empty((0, len(classifier.class_names)), np.float32)
    labels = np.concatenate(label_parts) if label_parts else np.empty(0, np.int64)
    if ctx.enabled:
        gathered: list = [None] * ctx.world_size
        torch.distributed.all_gather_object(gathered, (logits, labels))
        logits, labels = np.concatenate([g[0] for g in gathered]), np.concatenate([g[1] for g in gathered])
    if labels.size == 0:
        raise DataError("the validation split is empty")
    logits_t, labels_t = torch.from_numpy(logits).float(), torch.from_numpy(labels)
    return {"loss": F.cross_entropy(logits_t, labels_t).item(), "acc": (logits.argmax(1) == labels).mean().item(),
            "n": int(labels.size), "logits": logits, "labels": labels}


@dataclass
class _Parts:
    """Everything one run trains with."""

    model: nn.Module
    net: nn.Module
    head: nn.Module | None
    trainable: dict[str, bool]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: Any
    criterion: nn.Module
    loader: Any
    sampler: Any
    val_loader: Any
    classifier: Classifier


@dataclass
class _Progress:
    """Where a run stands; saved in ``last.pt`` after every epoch."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(
        default_factory=lambda: {"val_loss": math.inf, "epoch": None, "metrics": {}, "temperature": 1.0})
    bad_epochs: int = 0
    epoch: int = 0


def _build_parts(model: nn.Module, config: TrainConfig, train_data: SplitData, val_data: SplitData,
                 ctx: DistContext) -> _Parts:
    model.to(ctx.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    head = classifier_module(model) if config.freeze_epochs > 0 else None
    optimizer = build_optimizer(model, config)
    # warmup: the average follows the model closely at first instead of keeping the initial head
    ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=True) if config.ema else None
    net: nn.Module = model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
            find_unused_parameters=config.freeze_epochs > 0,
        )
    loader, sampler = train_loader(train_data, config, ctx)
    scheduler = build_schedule(optimizer, config.schedule, config.epochs, len(loader), config.warmup_epochs, config.lr)
    weights = class_weights(train_data.targets, len(train_data.class_names)).to(ctx.device) if config.class_weights else None
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing)
    classifier = Classifier.from_model(ema.module if ema is not None else model)
    return _Parts(model, net, head, trainable, optimizer, scheduler, ema, criterion, loader, sampler,
                  eval_loader(val_data, config, ctx), classifier)


def _restore(parts: _Parts, state: dict[str, Any]) -> _Progress:
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    if parts.ema is not None and state.get("ema") is not None:
        parts.ema.load_state_dict(state["ema"])
    set_rng_state(state["rng"])
    return _Progress(state["history"], state["best"], state["bad_epochs"], state["epoch"])


def _train_epoch(parts: _Parts, config: TrainConfig, ctx: DistContext, epoch: int, deadline: float | None,
                 resume: dict[str, Any] | None = None, checkpoint: Callable[[dict[str, Any]], None] | None = None,
                 ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Train and validate one epoch (or what is left of an interrupted one, ``resume``): (metrics.csv row,
    validation result, training figures); ``checkpoint`` saves the epoch's progress (see train_one_epoch)."""
    parts.sampler.set_epoch(epoch)
    torch.manual_seed(_epoch_seed(config.seed, epoch, ctx.rank))
    frozen = epoch < config.freeze_epochs
    if parts.head is not None:
        set_backbone_frozen(parts.model, parts.head, parts.trainable, frozen)
    _set_train_mode(parts.net, parts.head, frozen)
    label = f"epoch {epoch + 1}/{config.epochs}"
    lr = resume["lr"] if resume else parts.optimizer.param_groups[0]["lr"]  # at the epoch's first step
    save = (lambda partial: checkpoint({**partial, "epoch": epoch, "lr": lr})) if checkpoint else None
    stats = train_one_epoch(parts.net, parts.loader, parts.criterion, parts.optimizer, parts.scheduler, ctx,
                            ema=parts.ema, channels_last=config.channels_last, deadline=deadline,
                            description=f"{label} train", first_step=epoch * len(parts.loader), resume=resume,
                            checkpoint=save, checkpoint_every_s=config.checkpoint_every_s)
    val = evaluate(parts.classifier, parts.val_loader, ctx, description=f"{label} validate")
    row = {"epoch": epoch + 1, "train_loss": stats["loss"], "train_acc": stats["acc"], "val_loss": val["loss"],
           "val_acc": val["acc"], "lr": lr, "seconds": stats["seconds"], "images_per_s": stats["images_per_s"],
           "frozen_backbone": frozen}
    return row, val, stats


def _save_best(run_dir: Path, model: nn.Module, config: TrainConfig, row: dict, val: dict, n_train: int,
               provenance: dict, ctx: DistContext) -> dict[str, Any]:
    """Fit the temperature on this epoch's validation logits and write ``best.safetensors``."""
    logits, labels = val["logits"], val["labels"]
    temperature = fit_temperature(logits, labels)
    metrics = {
        "epoch": row["epoch"], "val_loss": row["val_loss"], "val_acc": row["val_acc"],
        "train_loss": row["train_loss"], "train_acc": row["train_acc"],
        "val_nll_calibrated": nll(logits, labels, temperature), "n_val": val["n"], "n_train": n_train,
    }
    if ctx.is_main:
        model = unwrap(model)
        meta = CheckpointMeta(model_name=model.model_name, data_config=model.data_config,
                              train_config=config.to_dict(), metrics=metrics, temperature=temperature, extra=provenance)
        save_checkpoint(run_dir / BEST_FILE, model, meta)
    return {"val_loss": row["val_loss"], "epoch": row["epoch"], "metrics": metrics, "temperature": temperature}


def _state(parts: _Parts, config: TrainConfig, progress: _Progress, provenance: dict,
           partial: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``last.pt`` holds; ``partial``: how far the unfinished epoch went (None between epochs)."""
    return {
        "format": STATE_FORMAT, "config": config.to_dict(), "class_names": list(parts.model.data_config.class_names),
        "manifest_sha256": provenance.get("manifest_sha256"), "epoch": progress.epoch,
        "model": unwrap(parts.model).state_dict(), "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(), "ema": parts.ema.state_dict() if parts.ema is not None else None,
        "history": progress.history, "best": progress.best, "bad_epochs": progress.bad_epochs, "rng": rng_state(),
        "partial": partial,
    }


def _record_epoch(run_dir: Path, parts: _Parts, config: TrainConfig, progress: _Progress, row: dict, val: dict,
                  n_train: int, provenance: dict, ctx: DistContext) -> None:
    """Keep the best checkpoint, then write metrics.csv, curves.png and last.pt (rank 0)."""
    progress.history.append(row)
    progress.epoch = row["epoch"]
    if val["loss"] < progress.best["val_loss"]:
        progress.bad_epochs = 0
        progress.best = _save_best(run_dir, parts.classifier.model, config, row, val, n_train, provenance, ctx)
    else:
        progress.bad_epochs += 1
    if ctx.is_main:
        write_metrics_csv(progress.history, run_dir / "metrics.csv", COLUMNS)
        plot_curves(progress.history, run_dir / "curves.png")
        save_state(run_dir / STATE_FILE, _state(parts, config, progress, provenance))


def _stopped_early(config: TrainConfig, progress: _Progress) -> bool:
    return bool(config.early_stopping_patience) and progress.bad_epochs >= config.early_stopping_patience


def fit(model: nn.Module, config: TrainConfig, train_data: SplitData, val_data: SplitData, run_dir: Path,
        ctx: DistContext | None = None, *, state: dict[str, Any] | None = None, provenance: dict | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Train ``model`` (built with its class names) on ``train_data``, validating on ``val_data`` (uint8
    pixels) every epoch, into the prepared ``run_dir``; see the module doc.

    ``state`` is the run's ``last.pt`` to continue from (checked by the caller); ``provenance`` goes
    into the checkpoint metadata (its ``manifest_sha256`` into ``last.pt`` too); ``on_epoch(row)``
    is called after each epoch's files are written (the tuner reports to Optuna there; an
    exception it raises ends the run).
    """
    ctx, provenance = ctx or DistContext(), dict(provenance or {})
    if config.checkpoint_every_s and ctx.enabled:
        raise ConfigError("checkpoint_every_s saves within an epoch in single-process runs only; "
                          "leave it out under torchrun")
    parts = _build_parts(model, config, train_data, val_data, ctx)
    progress = _restore(parts, state) if state is not None else _Progress()
    partial = state.get("partial") if state is not None else None
    if state is not None:
        within = f" and {partial['batches']} batches of epoch {partial['epoch'] + 1}" if partial else ""
        _info(ctx, "resuming %s after epoch %d%s", run_dir, progress.epoch, within)

    def save_partial(partial: dict[str, Any]) -> None:
        if ctx.is_main:
            save_state(run_dir / STATE_FILE, _state(parts, config, progress, provenance, partial))

    deadline = time.monotonic() + config.time_budget_s if config.time_budget_s else None
    stop_reason, start = "completed", progress.epoch
    if _stopped_early(config, progress):  # a resumed run that had already stopped early stays stopped
        stop_reason, start = "early_stopping", config.epochs
    for epoch in range(start, config.epochs):
        if epoch > start and deadline is not None and dist_utils.any_rank(ctx, time.monotonic() > deadline):
            stop_reason = "time_budget"
            break
        resume = partial if partial is not None and partial["epoch"] == epoch else None
        row, val, stats = _train_epoch(parts, config, ctx, epoch, deadline, resume,
                                       save_partial if config.checkpoint_every_s else None)
        _record_epoch(run_dir, parts, config, progress, row, val, len(train_data.targets), provenance, ctx)
        _info(ctx, "epoch %d/%d: train loss %.4f acc %.3f | val loss %.4f acc %.3f | %.1f img/s%s", epoch + 1,
              config.epochs, stats["loss"], stats["acc"], val["loss"], val["acc"], stats["images_per_s"],
              " | frozen backbone" if row["frozen_backbone"] else "")
        if on_epoch is not None:
            on_epoch(row)
        if stats["stopped"]:
            stop_reason = "time_budget"
            break
        if _stopped_early(config, progress):
            stop_reason = "early_stopping"
            _info(ctx, "early stopping: no better validation loss for %d epochs", progress.bad_epochs)
            break
    dist_utils.barrier(ctx)
    best = progress.best
    return RunResult(run_dir, run_dir / BEST_FILE, progress.history, best["epoch"], best["metrics"],
                     best["temperature"], stop_reason, ctx.rank)
