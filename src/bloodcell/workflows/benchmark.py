"""``bloodcell benchmark``: train several models under one protocol and compare them on the test split.

Every model gets the same manifest, taxonomy, augmentation, seed and wall-clock training
budget (``time_budget_s``); each is then scored once on the test split with the same
evaluator and its inference speed measured on this machine (decoded RGB image to
probabilities, a fixed number of test images, a fixed number of threads). Results go to
``OUT/<model>/result.json``; a model whose result exists is skipped, so an interrupted
benchmark resumes where it stopped (a half-trained model is trained again from scratch).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from bloodcell.data.images import read_image
from bloodcell.data.locate import dataset_root
from bloodcell.errors import ConfigError, DataError, ImageError, WeightsUnavailableError
from bloodcell.evaluation.scoring import ScoringModel, load_scoring_model
from bloodcell.log import get_logger
from bloodcell.models import create_model, get_model_entry
from bloodcell.provenance import file_sha256
from bloodcell.report.markdown import table
from bloodcell.report.plots import comparison_chart
from bloodcell.resources import manifest_path
from bloodcell.train.config import TrainConfig
from bloodcell.workflows.evaluate import evaluate, write_report
from bloodcell.workflows.train import run_training
from bloodcell.writing import atomic_file, write_bytes, write_json, write_text

logger = get_logger(__name__)

#: Epoch cap when only the time budget should stop training.
UNLIMITED_EPOCHS = 10_000
RESULT_FILE = "result.json"
CSV_FIELDS = (
    "model", "accuracy", "accuracy_low", "accuracy_high", "macro_f1", "macro_f1_low", "macro_f1_high",
    "kappa", "kappa_low", "kappa_high", "ece", "parameters", "train_seconds", "epochs", "train_images_seen",
    "stop_reason", "val_images", "test_images", "images_per_s", "pretrained", "checkpoint",
)
#: ``pretrained`` policies: never, always (fails where no weights exist), or where weights exist.
PRETRAINED_POLICIES = ("none", "all", "available")


def model_dir_name(model: str) -> str:
    """A folder name for a model name (``sk/svm`` -> ``sk_svm``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"


def measure_throughput(model: ScoringModel, paths: Sequence[Path], threads: int = 2, batch_size: int = 32) -> float:
    """Images per second from decoded RGB images to logits through the scoring path, at most ``threads``
    CPU threads (BLAS and torch's OpenMP pool), after one warm-up batch."""
    images = []
    for path in paths:
        try:
            images.append(read_image(path))
        except ImageError:
            continue
    if not images:
        raise DataError("no readable test image to measure inference speed on")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            model.logits(images[:batch_size])
            start = time.perf_counter()
            for i in range(0, len(images), batch_size):
                model.logits(images[i:i + batch_size])
            seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    return len(images) / seconds


def _images_seen(run) -> int | None:
    rows = [r for r in run.history if "seconds" in r and "images_per_s" in r]
    if rows:
        return int(sum(round(r["seconds"] * r["images_per_s"]) for r in rows))
    n_train = run.metrics.get("n_train")
    return int(n_train) if n_train is not None else None


def _test_columns(evaluation, model: ScoringModel, root: Path, speed_images: int, threads: int) -> dict[str, Any]:
    """The comparison columns measured on the test split (images under ``root``): metrics with 95% CIs, size, speed."""
    result = evaluation.result
    metrics = result["metrics"]
    boot = metrics["bootstrap"]
    test_paths = [root / p["path"] for p in evaluation.predictions[:speed_images]]
    return {
        **{f"{key}{suffix}": boot[key][part] for key in ("accuracy", "macro_f1", "kappa")
           for suffix, part in (("", "estimate"), ("_low", "low"), ("_high", "high"))},
        "ece": metrics["calibration"]["ece"],
        "parameters": model.n_parameters,
        "test_images": result["counts"]["scored"],
        "images_per_s": round(measure_throughput(model, test_paths, threads=threads), 1),
    }


def benchmark_one(model_name: str, out: Path, *, manifest: Path, dataset: str, taxonomy: str, data_root,
                  budget_s: float, epochs_max: int | None, limit_train: int | None, seed: int, augment: str,
                  batch_size: int, speed_images: int, threads: int, n_boot: int,
                  extra: dict[str, Any] | None = None, limit_val: int | None = None,
                  score_limit: int | None = None) -> dict[str, Any]:
    """Train, evaluate and time one model; writes and returns its result row."""
    folder = out / model_dir_name(model_name)
    extra = dict(extra or {})
    if extra.get("pretrained") == "available":
        extra["pretrained"] = pretrained_available(model_name)
    elif extra.get("pretrained") in PRETRAINED_POLICIES:
        extra["pretrained"] = extra["pretrained"] == "all"
    config = TrainConfig(
        model=model_name, dataset=dataset, taxonomy=taxonomy, manifest=str(manifest),
        data_root=str(data_root) if data_root else None, out=str(folder / "run"),
        epochs=epochs_max or UNLIMITED_EPOCHS, time_budget_s=budget_s, limit_train=limit_train, limit_val=limit_val,
        seed=seed,
        augment=augment, batch_size=batch_size, **extra,
    )
    start = time.perf_counter()
    run = run_training(config, overwrite=True)
    train_seconds = time.perf_counter() - start
    checkpoint = Path(run.best_checkpoint)
    if not checkpoint.is_file():
        raise DataError(f"training {model_name} produced no checkpoint at {checkpoint}")
    model = load_scoring_model(checkpoint)
    evaluation = evaluate(checkpoint, dataset=dataset, manifest=manifest, split="test", taxonomy=taxonomy,
                          data_root=data_root, n_boot=n_boot, seed=seed, model=model, limit=score_limit)
    write_report(evaluation, folder / "evaluation")
    row = {
        "model": model_name,
        "val_images": run.metrics.get("n_val"),
        **_test_columns(evaluation, model, dataset_root(dataset, data_root), speed_images, threads),
        "train_seconds": round(train_seconds, 1),
        "epochs": len(run.history) or None,
        "train_images_seen": _images_seen(run),
        "stop_reason": run.stop_reason,
        "pretrained": bool(config.pretrained),
        "checkpoint": str(checkpoint),
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / RESULT_FILE, {"row": row, "config": config.to_dict()})
    return row


def pretrained_available(model_name: str) -> bool:
    """True when ImageNet weights for ``model_name`` can be had here (offline package or download).

    Models that are trained from scratch by design, or whose weights cannot be obtained,
    start from random weights; the comparison table records which.
    """
    if get_model_entry(model_name).kind != "torch":
        return False
    try:
        create_model(model_name, num_classes=2, pretrained=True)
    except (WeightsUnavailableError, ConfigError):
        return False
    return True


def checkpoint_row(checkpoint: str | Path, out: Path, *, manifest: Path, dataset: str, taxonomy: str, data_root,
                   speed_images: int, threads: int, n_boot: int, seed: int) -> dict[str, Any]:
    """Evaluate an already trained checkpoint (its own recipe, not the budget) as a comparison row."""
    checkpoint = Path(checkpoint)
    model = load_scoring_model(checkpoint)
    evaluation = evaluate(checkpoint, dataset=dataset, manifest=manifest, split="test", taxonomy=taxonomy,
                          data_root=data_root, n_boot=n_boot, seed=seed, model=model)
    folder = out / model_dir_name(f"checkpoint-{checkpoint.stem}-{model.model_name}")
    write_report(evaluation, folder / "evaluation")
    train_config = model.meta.get("train_config", {})
    row = {
        "model": f"{model.model_name} ({checkpoint.name}, own recipe)",
        **_test_columns(evaluation, model, dataset_root(dataset, data_root), speed_images, threads),
        "train_seconds": None,
        "epochs": model.meta.get("metrics", {}).get("epoch"),  # the best epoch the checkpoint holds
        "train_images_seen": None,
        "stop_reason": "trained separately",
        # a fine-tuned checkpoint started from another checkpoint, whatever that one started from
        "pretrained": "via init_from" if train_config.get("init_from") else bool(train_config.get("pretrained")),
        "checkpoint": str(checkpoint),
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / RESULT_FILE, {"row": row, "train_config": train_config})
    return row


def run_benchmark(models: Sequence[str], *, manifest: str | Path, out: str | Path, budget_s: float,
                  dataset: str = "pbc", taxonomy: str = "pbc8", data_root: str | Path | None = None,
                  epochs_max: int | None = None, limit_train: int | None = None, limit_val: int | None = None,
                  score_limit: int | None = None, seed: int = 0,
                  augment: str = "flips", batch_size: int = 32, speed_images: int = 64, threads: int = 2,
                  n_boot: int = 1000, extra: dict[str, Any] | None = None,
                  checkpoints: Sequence[str | Path] = ()) -> list[dict[str, Any]]:
    """Benchmark ``models`` in order (skipping those with a saved result) and write the comparison."""
    models = [m.strip() for m in models if m.strip()]
    if not models:
        raise ConfigError("no models given; pass --models a,b,c")
    if len(set(models)) != len(models):
        raise ConfigError("a model is listed twice in --models")
    if not budget_s > 0:
        raise ConfigError(f"--budget must be a positive number of seconds, got {budget_s}")
    given, manifest, out = str(manifest), manifest_path(manifest), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in models:
        saved = out / model_dir_name(name) / RESULT_FILE
        if saved.is_file():
            logger.info("%s: result exists in %s, skipped", name, saved.parent)
            rows.append(json.loads(saved.read_text())["row"])
            continue
        logger.info("%s: training for up to %g s, then evaluating on the test split", name, budget_s)
        rows.append(benchmark_one(
            name, out, manifest=manifest, dataset=dataset, taxonomy=taxonomy, data_root=data_root, budget_s=budget_s,
            epochs_max=epochs_max, limit_train=limit_train, limit_val=limit_val, score_limit=score_limit, seed=seed,
            augment=augment, batch_size=batch_size,
            speed_images=speed_images, threads=threads, n_boot=n_boot, extra=extra,
        ))
    for checkpoint in checkpoints:
        logger.info("%s: evaluating an already trained checkpoint on the test split", checkpoint)
        rows.append(checkpoint_row(checkpoint, out, manifest=manifest, dataset=dataset, taxonomy=taxonomy,
                                   data_root=data_root, speed_images=speed_images, threads=threads,
                                   n_boot=n_boot, seed=seed))
    protocol = {
        "pretrained": (extra or {}).get("pretrained", "none"),
        "manifest": given, "manifest_sha256": file_sha256(manifest), "dataset": dataset, "taxonomy": taxonomy,
        "budget_s": budget_s, "epochs_max": epochs_max, "limit_train": limit_train, "limit_val": limit_val,
        "score_limit": score_limit, "seed": seed, "augment": augment,
        "batch_size": batch_size, "speed_images": speed_images, "speed_threads": threads,
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} logical CPUs".strip(),
    }
    write_comparison(rows, protocol, out)
    return rows


def _ci(row: dict[str, Any], key: str, pct: bool = True) -> str:
    fmt = (lambda v: f"{100 * v:.2f}%") if pct else (lambda v: f"{v:.4f}")
    if row.get(key) is None:
        return "n/a"
    if row.get(f"{key}_low") is None:
        return fmt(row[key])
    return f"{fmt(row[key])} [{fmt(row[f'{key}_low'])}, {fmt(row[f'{key}_high'])}]"


def write_comparison(rows: list[dict[str, Any]], protocol: dict[str, Any], out: Path) -> dict[str, Path]:
    """``comparison.csv``, ``comparison.md`` and ``comparison.png`` (accuracy with 95% CI)."""
    files = {"csv": out / "comparison.csv", "markdown": out / "comparison.md", "png": out / "comparison.png"}
    with atomic_file(files["csv"]) as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    header = ["model", "ImageNet init", "accuracy (95% CI)", "macro-F1 (95% CI)", "kappa (95% CI)", "ECE",
              "parameters", "training s", "epochs", "train images seen", "test images", "inference img/s"]
    body = [[r["model"], {True: "yes", False: "no"}.get(r.get("pretrained"), str(r.get("pretrained"))), _ci(r, "accuracy"), _ci(r, "macro_f1"), _ci(r, "kappa", pct=False), f"{r['ece']:.4f}",
             f"{r['parameters']:,}" if r.get("parameters") else "n/a",
             f"{r['train_seconds']:.0f}" if r.get("train_seconds") is not None else "n/a",
             str(r.get("epochs") or "n/a"), str(r.get("train_images_seen") or "n/a"), str(r.get("test_images") or "n/a"),
             f"{r['images_per_s']:.1f}"]
            for r in rows]
    lines = [
        "# Model comparison (test split, TEST RESULT)", "",
        f"Same protocol for every model: manifest `{protocol['manifest']}` (sha256 `{protocol['manifest_sha256']}`), "
        f"taxonomy {protocol['taxonomy']}, augmentation {protocol['augment']}, seed {protocol['seed']}, "
        f"training budget {protocol['budget_s']:g} s per model"
        + (f" (at most {protocol['epochs_max']} epochs)" if protocol.get("epochs_max") else "")
        + (f", stratified {protocol['limit_train']} training images" if protocol.get("limit_train") else "") + ".",
        f"Inference speed: decoded image to probabilities, {protocol['speed_images']} test images, "
        f"{protocol['speed_threads']} threads, on {protocol['machine']}.", "",
        table(header, body), "", "![accuracy with 95% CI](comparison.png)", "",
    ]
    write_text(files["markdown"], "\n".join(lines))
    write_bytes(files["png"], comparison_chart(rows))
    write_json(out / "protocol.json", protocol)
    return files
