"""The training loop, in the style of torchvision's classification reference.

``train_one_epoch`` and ``evaluate`` do one pass each; ``fit(config)`` runs a whole training
run into ``config.out``: ``config.json``, ``metrics.csv``, ``curves.png``, ``last.pt`` (the
resumable state, rewritten every epoch) and ``best.safetensors`` (the checkpoint of the
epoch with the lowest validation loss, with the temperature fitted on its validation
logits). Validation uses the validation split only; the test split is never opened.
The same code runs single-process or under torchrun (see :mod:`bloodcell.train.distributed`).
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field, replace
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.markup import escape
from torch import nn

from bloodcell.checkpoint import CheckpointMeta, save_checkpoint
from bloodcell.errors import BloodcellError, CheckpointError, ConfigError, DataError
from bloodcell.progress import track
from bloodcell.train import distributed as dist_utils
from bloodcell.train.config import TrainConfig, save_config
from bloodcell.train.data import (class_weights, combine_splits, eval_loader, load_extra_train, load_split,
                                  train_loader)
from bloodcell.train.distributed import DistContext, unwrap
from bloodcell.train.history import plot_curves, write_metrics_csv

STATE_FILE = "last.pt"
BEST_FILE = "best.safetensors"
STATE_FORMAT = "bloodcell-train-state/1"
#: Files a run writes; ``--overwrite`` removes exactly these (never anything else in the folder).
RUN_FILES = ("config.json", "metrics.csv", "curves.png", STATE_FILE, BEST_FILE, "best.json", "best.skops")


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


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW/Adam/SGD over trainable parameters; biases and norm layers get no weight decay."""
    from timm.optim import create_optimizer_v2

    extra = {"momentum": config.momentum} if config.optimizer == "sgd" else {}
    return create_optimizer_v2(model, opt=config.optimizer, lr=config.lr, weight_decay=config.weight_decay, **extra)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """Per-step schedule: linear warmup then cosine decay or constant; or one-cycle."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(total - 1, round(config.warmup_epochs * steps_per_epoch))
    if config.schedule == "onecycle":
        pct = warmup / total if warmup else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total, pct_start=pct)
    cosine = config.schedule == "cosine"

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if not cosine:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def classifier_module(model: nn.Module) -> nn.Module:
    """The classification head: timm's ``get_classifier()``, else the last Linear layer."""
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        head = getter()
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"cannot find the classifier of model {getattr(model, 'model_name', '?')!r} to train it alone")
    return linears[-1]


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


def train_one_epoch(
    model: nn.Module,
    loader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    ctx: DistContext,
    *,
    ema=None,
    channels_last: bool = False,
    deadline: float | None = None,
    description: str = "train",
    first_step: int = 0,
) -> dict[str, Any]:
    """One pass over ``loader``; stops early (``stopped=True``) once ``deadline`` (monotonic) passes.

    ``first_step`` (optimizer steps taken before this epoch) drives the EMA warmup.

    Returns loss and accuracy summed over all ranks, images seen, seconds and images/s.
    """
    start = time.perf_counter()
    loss_sum = correct = seen = 0.0
    stopped = False
    batches = track(loader, description, total=len(loader)) if ctx.is_main else loader
    for step, (images, targets) in enumerate(batches, start=first_step + 1):
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
        if deadline is not None and dist_utils.any_rank(ctx, time.monotonic() > deadline):
            stopped = True
            break
    seconds = time.perf_counter() - start
    loss_sum, correct, seen = dist_utils.all_reduce_sum(ctx, [loss_sum, correct, seen])
    return {
        "loss": loss_sum / max(seen, 1),
        "acc": correct / max(seen, 1),
        "images": int(seen),
        "seconds": seconds,
        "images_per_s": seen / seconds if seconds > 0 else 0.0,
        "stopped": stopped,
    }


def evaluate(
    model: nn.Module, loader, ctx: DistContext, *, channels_last: bool = False, description: str = "validate"
) -> dict[str, Any]:
    """Cross-entropy (unweighted, unsmoothed) and accuracy; logits gathered from all ranks."""
    model.eval()
    logits_parts, label_parts = [], []
    batches = track(loader, description, total=len(loader)) if ctx.is_main else loader
    with torch.inference_mode():
        for images, targets in batches:
            images, targets = _to_device(images, targets, ctx, channels_last)
            logits_parts.append(model(images).float().cpu())
            label_parts.append(targets.cpu())
    logits = torch.cat(logits_parts) if logits_parts else torch.empty(0, 0)
    labels = torch.cat(label_parts) if label_parts else torch.empty(0, dtype=torch.long)
    if ctx.enabled:
        gathered: list = [None] * ctx.world_size
        torch.distributed.all_gather_object(gathered, (logits, labels))
        parts = [g for g in gathered if g[0].numel()]
        logits, labels = torch.cat([g[0] for g in parts]), torch.cat([g[1] for g in parts])
    num_classes = logits.shape[1]
    if labels.numel() == 0 or num_classes == 0:
        raise DataError("the validation split is empty")
    return {
        "loss": F.cross_entropy(logits, labels).item(),
        "acc": (logits.argmax(1) == labels).float().mean().item(),
        "n": int(labels.numel()),
        "logits": logits,
        "labels": labels,
    }


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool, ctx: DistContext) -> Path:
    """Check the run folder (same verdict on every rank); rank 0 creates or clears it."""
    if resume:
        if not (run_dir / STATE_FILE).is_file():
            raise ConfigError(f"{run_dir} holds no {STATE_FILE} to resume from; start a new run without --resume")
        return run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} exists and is not a folder")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise ConfigError(f"{run_dir} already exists and is not empty; pass --resume to continue it or --overwrite to start again")
    dist_utils.barrier(ctx)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    dist_utils.barrier(ctx)
    return run_dir


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def load_train_state(path: Path, state_format: str = STATE_FORMAT) -> dict[str, Any]:
    """Our own resumable state file (of ``state_format``), read with ``torch.load(weights_only=True)``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"{path}: cannot read the training state ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or state.get("format") != state_format:
        raise CheckpointError(f"{path}: not a bloodcell training state of format {state_format}")
    return state


def _log(ctx: DistContext, message: str) -> None:
    if ctx.is_main:
        from rich.console import Console

        Console(stderr=True, highlight=False, soft_wrap=True).print(message)


def fit(config: TrainConfig, *, resume: bool = False, overwrite: bool = False, ctx: DistContext | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Train ``config.model`` on the manifest's train split, validating every epoch; see module doc.

    ``on_epoch(row)`` is called after each epoch's files are written (the tuner reports to
    Optuna there; an exception it raises ends the run).
    """
    own_ctx = ctx is None
    ctx = dist_utils.init_distributed() if own_ctx else ctx
    try:
        result = _fit(config, resume=resume, overwrite=overwrite, ctx=ctx, on_epoch=on_epoch)
    except BaseException:
        if own_ctx and ctx.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        raise
    if own_ctx:
        dist_utils.cleanup(ctx)
    return result


def _check_required(config: TrainConfig) -> None:
    if not config.manifest:
        raise ConfigError("no manifest given; pass --manifest FILE (see 'bloodcell data split')")
    if not Path(config.manifest).is_file():
        raise DataError(f"{config.manifest}: manifest file not found")
    if not config.out:
        raise ConfigError("no output folder given; pass --out DIR")


def _fit(config: TrainConfig, *, resume: bool, overwrite: bool, ctx: DistContext,
         on_epoch: Callable[[dict[str, Any]], None] | None) -> RunResult:
    from bloodcell.data.locate import dataset_root
    from bloodcell.data.manifest import read_manifest
    from bloodcell.data.taxonomy import get_taxonomy
    from bloodcell.models import create_model, get_model_entry

    _check_required(config)
    entry = get_model_entry(config.model)
    if entry.kind == "detector":
        raise ConfigError(f"{config.model} is a smear detector; train it with 'bloodcell detector train'")
    run_dir = prepare_run_dir(Path(config.out), resume, overwrite, ctx)
    manifest = read_manifest(config.manifest)
    if config.dataset and config.dataset != manifest.dataset:
        raise ConfigError(f"{config.manifest} is a manifest of dataset {manifest.dataset!r}, not {config.dataset!r}")
    config = replace(config, dataset=manifest.dataset)
    class_names = list(get_taxonomy(config.taxonomy).class_names)
    if entry.kind == "sklearn":
        from bloodcell.train.classical import fit_classical

        if ctx.enabled:
            raise ConfigError(f"{config.model} is a scikit-learn model; run it without torchrun")
        return fit_classical(config, manifest, class_names, run_dir)

    state = None
    if resume:
        state = load_train_state(run_dir / STATE_FILE)
        _check_resume(state, config, manifest, class_names, run_dir)

    torch.set_num_threads(config.threads or max(1, (os.cpu_count() or 1) // ctx.local_world_size))
    seed_everything(config.seed)
    model = create_model(
        config.model, num_classes=len(class_names), pretrained=config.pretrained,
        class_names=class_names, input_size=config.input_size,
    )
    data_config = model.data_config
    if config.init_from:
        init_sha256 = _init_weights(model, config, class_names, load=state is None)
    from bloodcell.transforms import create_transform

    root = dataset_root(manifest.dataset, config.data_root)
    if not ctx.is_main:
        dist_utils.barrier(ctx)  # let rank 0 build the decoded-image cache alone first
    train_transform = create_transform(data_config, True, config.augment)
    train_data = load_split(config, manifest, root, "train", train_transform, data_config.input_size, config.limit_train)
    extra = [load_extra_train(config, path, train_transform, data_config.input_size) for path in config.extra_train]
    val_data = load_split(config, manifest, root, "val", create_transform(data_config, False),
                          data_config.input_size, config.limit_val)
    if ctx.is_main:
        dist_utils.barrier(ctx)
    if train_data.class_names != class_names:
        raise DataError(f"the dataset's classes {train_data.class_names} differ from taxonomy {config.taxonomy}")
    extra_splits = [(f"{path} train", data) for path, (_, data) in zip(config.extra_train, extra)]
    for split, data in (("train", train_data), ("val", val_data), *extra_splits):
        skipped = getattr(data.dataset, "skipped", [])
        if skipped:
            path, reason = skipped[0]
            _log(ctx, f"[yellow]skipped {len(skipped)} unreadable {split} image(s)[/], e.g. {escape(path)}: {escape(reason)}")
    if extra:
        _log(ctx, f"extra training images: {', '.join(f'{len(d.targets)} from {p}' for p, (_, d) in zip(config.extra_train, extra))}"
                  f" (each seen {config.extra_repeat}x per epoch)")
        train_data = combine_splits(train_data, [d for _, d in extra], config.extra_repeat)
    _log(ctx, f"{config.model} at {data_config.input_size}px: {len(train_data.targets)} training and "
              f"{len(val_data.targets)} validation images, {len(class_names)} classes, "
              f"{torch.get_num_threads()} thread(s) x {ctx.world_size} process(es)")

    model.to(ctx.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    head = classifier_module(model) if config.freeze_epochs > 0 else None
    optimizer = build_optimizer(model, config)
    ema = None
    if config.ema:
        from timm.utils import ModelEmaV3

        # warmup: the average follows the model closely at first instead of keeping the initial head
        ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=True)
    net: nn.Module = model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
            find_unused_parameters=config.freeze_epochs > 0,
        )
    loader, sampler = train_loader(train_data, config, ctx)
    val_loader = eval_loader(val_data, config, ctx)
    scheduler = build_scheduler(optimizer, config, len(loader))
    weights = class_weights(train_data.targets, len(class_names)).to(ctx.device) if config.class_weights else None
    criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing)

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"val_loss": math.inf, "epoch": None, "metrics": {}, "temperature": 1.0}
    bad_epochs, start_epoch = 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        history, best, bad_epochs, start_epoch = state["history"], state["best"], state["bad_epochs"], state["epoch"]
        _set_rng_state(state["rng"])
        _log(ctx, f"resuming {run_dir} after epoch {start_epoch}")
    if ctx.is_main:
        save_config(config, run_dir / "config.json")
    meta_extra = {"manifest_sha256": manifest.sha256, "dataset": manifest.dataset, "taxonomy": config.taxonomy}
    if extra:
        meta_extra["extra_train_sha256"] = {path: m.sha256 for path, (m, _) in zip(config.extra_train, extra)}
    if config.init_from:
        meta_extra["init_from_sha256"] = init_sha256

    deadline = time.monotonic() + config.time_budget_s if config.time_budget_s else None
    stop_reason = "completed"
    for epoch in range(start_epoch, config.epochs):
        if epoch > start_epoch and deadline is not None and dist_utils.any_rank(ctx, time.monotonic() > deadline):
            stop_reason = "time_budget"
            break
        sampler.set_epoch(epoch)
        torch.manual_seed(_epoch_seed(config.seed, epoch, ctx.rank))
        frozen = epoch < config.freeze_epochs
        if head is not None:
            set_backbone_frozen(model, head, trainable, frozen)
        _set_train_mode(net, head, frozen)
        label = f"epoch {epoch + 1}/{config.epochs}"
        lr = optimizer.param_groups[0]["lr"]  # at the epoch's first step
        stats = train_one_epoch(net, loader, criterion, optimizer, scheduler, ctx, ema=ema,
                                channels_last=config.channels_last, deadline=deadline, description=f"{label} train",
                                first_step=epoch * len(loader))
        scored = ema.module if ema is not None else model
        val = evaluate(scored, val_loader, ctx, channels_last=config.channels_last, description=f"{label} validate")
        row = {
            "epoch": epoch + 1, "train_loss": stats["loss"], "train_acc": stats["acc"],
            "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr,
            "seconds": stats["seconds"], "images_per_s": stats["images_per_s"], "frozen_backbone": frozen,
        }
        history.append(row)
        if val["loss"] < best["val_loss"]:
            bad_epochs = 0
            best = _save_best(run_dir, scored, config, row, val, len(train_data.targets), meta_extra, ctx)
        else:
            bad_epochs += 1
        if ctx.is_main:
            write_metrics_csv(history, run_dir / "metrics.csv")
            plot_curves(history, run_dir / "curves.png")
            _save_state(run_dir / STATE_FILE, config, class_names, manifest.sha256, epoch + 1, model,
                        optimizer, scheduler, ema, history, best, bad_epochs)
        _log(ctx, f"{label}: train loss {stats['loss']:.4f} acc {stats['acc']:.3f} | val loss {val['loss']:.4f} "
                  f"acc {val['acc']:.3f} | {stats['images_per_s']:.1f} img/s" + (" | frozen backbone" if frozen else ""))
        if on_epoch is not None:
            on_epoch(row)
        if stats["stopped"]:
            stop_reason = "time_budget"
            break
        if config.early_stopping_patience and bad_epochs >= config.early_stopping_patience:
            stop_reason = "early_stopping"
            _log(ctx, f"early stopping: no better validation loss for {bad_epochs} epochs")
            break
    dist_utils.barrier(ctx)
    return RunResult(run_dir, run_dir / BEST_FILE, history, best["epoch"], best["metrics"], best["temperature"],
                     stop_reason, ctx.rank)


def _init_weights(model: nn.Module, config: TrainConfig, class_names: list[str], load: bool = True) -> str:
    """Check ``config.init_from`` against the run and (with ``load``) copy its weights into ``model``.

    A checkpoint over other classes (``pbc8`` weights for a ``pbc11`` run) gives the backbone;
    the classification head then starts from its fresh initialisation.

    Returns the checkpoint's sha256 (recorded in the checkpoints of the run).
    """
    from bloodcell.checkpoint import file_sha256, load_checkpoint
    from bloodcell.inference.predictor import resolve_model

    path = resolve_model(config.init_from)
    if path.suffix != ".safetensors":
        raise ConfigError(f"{path}: init_from needs a .safetensors checkpoint")
    checkpoint = load_checkpoint(path)
    if checkpoint.meta["model_name"] != config.model:
        raise ConfigError(f"{path} is a {checkpoint.meta['model_name']}; init_from needs a {config.model} checkpoint")
    if checkpoint.data_config.input_size != model.data_config.input_size:
        raise ConfigError(f"{path} was trained at {checkpoint.data_config.input_size}px; set input_size to match")
    if load:
        state = checkpoint.model.state_dict()
        if checkpoint.class_names != class_names:  # other classes: keep the backbone, start a fresh head
            head = classifier_module(model)
            prefix = next(name for name, module in model.named_modules() if module is head) + "."
            state = {key: value for key, value in state.items() if not key.startswith(prefix)}
            missing, unexpected = model.load_state_dict(state, strict=False)
            if unexpected or any(not key.startswith(prefix) for key in missing):
                raise ConfigError(f"{path}: its backbone does not match {config.model}'s layers")
        else:
            model.load_state_dict(state)
    return file_sha256(path)


def _save_best(run_dir: Path, model: nn.Module, config: TrainConfig, row: dict, val: dict, n_train: int,
               extra: dict, ctx: DistContext) -> dict[str, Any]:
    """Fit the temperature on this epoch's validation logits and write ``best.safetensors``."""
    from bloodcell.metrics.calibration import fit_temperature, nll

    logits, labels = val["logits"].numpy(), val["labels"].numpy()
    temperature = fit_temperature(logits, labels)
    metrics = {
        "epoch": row["epoch"], "val_loss": row["val_loss"], "val_acc": row["val_acc"],
        "train_loss": row["train_loss"], "train_acc": row["train_acc"],
        "val_nll_calibrated": nll(logits, labels, temperature), "n_val": val["n"], "n_train": n_train,
    }
    if ctx.is_main:
        model = unwrap(model)
        meta = CheckpointMeta(model_name=model.model_name, data_config=model.data_config,
                              train_config=config.to_dict(), metrics=metrics, temperature=temperature, extra=extra)
        save_checkpoint(run_dir / BEST_FILE, model, meta)
    return {"val_loss": row["val_loss"], "epoch": row["epoch"], "metrics": metrics, "temperature": temperature}


def _save_state(path: Path, config: TrainConfig, class_names: list[str], manifest_sha256: str, epoch: int,
                model: nn.Module, optimizer, scheduler, ema, history, best, bad_epochs) -> None:
    state = {
        "format": STATE_FORMAT, "config": config.to_dict(), "class_names": class_names,
        "manifest_sha256": manifest_sha256, "epoch": epoch, "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None, "history": history, "best": best,
        "bad_epochs": bad_epochs, "rng": _rng_state(),
    }
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _check_resume(state: dict, config: TrainConfig, manifest, class_names: list[str], run_dir: Path) -> None:
    if state["class_names"] != class_names:
        raise DataError(
            f"{run_dir} was trained on classes {state['class_names']} but taxonomy {config.taxonomy} "
            f"gives {class_names}; resume with the same taxonomy"
        )
    if state["config"]["model"] != config.model:
        raise ConfigError(f"{run_dir} trains {state['config']['model']!r}, not {config.model!r}; resume with the same model")
    if state["manifest_sha256"] != manifest.sha256:
        raise DataError(f"{config.manifest} is not the manifest {run_dir} was trained on (its sha256 differs)")
