"""What both trainers (classifier and smear detector) share about a run folder.

* :func:`check_run_dir` / :func:`clear_run_files`: may this run start or resume in this folder, and
  removing only the run's own files.
* :func:`build_schedule`: the per-step learning-rate schedule (linear warmup then cosine decay or
  constant, or one-cycle).
* :func:`write_metrics_csv`: one row per epoch.
* :func:`save_state` / :func:`load_state`: the resumable ``last.pt``, written atomically and read
  with ``torch.load(weights_only=True)``; :func:`rng_state` / :func:`set_rng_state` for its RNGs.

A run is *resumable* once its first ``last.pt`` is complete. A folder holding only a run's own
files but no complete ``last.pt`` (a run killed during its first epoch, or while first saving
``last.pt``: a stale ``last.pt.tmp`` may remain) holds nothing to resume: ``--resume`` says so and
points to a fresh start, and a fresh start replaces those files without needing ``--overwrite``.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodcell.errors import CheckpointError, ConfigError
from bloodcell.log import get_logger
from bloodcell.writing import atomic_file, is_temporary, write_failed

STATE_FILE = "last.pt"
BEST_FILE = "best.safetensors"
#: Temporary files of interrupted atomic writes (``last.pt`` here, checkpoints in :mod:`bloodcell.checkpoint`).
TEMP_FILES = (f"{STATE_FILE}.tmp", f".{BEST_FILE}.tmp")
#: Files whose presence means a run produced a result to continue or keep: never replaced without ``--overwrite``.
RESULT_FILES = (STATE_FILE, "best.skops")
SCHEDULES = ("cosine", "onecycle", "constant")
logger = get_logger(__name__)


# ---- the run folder --------------------------------------------------------------------

def check_run_dir(run_dir: Path, run_files: Sequence[str], *, resume: bool, overwrite: bool) -> None:
    """Raise ConfigError unless a run may resume (``resume``) or start in ``run_dir``; changes nothing.

    ``run_files`` are the files this kind of run writes (``--overwrite`` removes exactly those).
    """
    run_dir = Path(run_dir)
    present = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if resume:
        if (run_dir / STATE_FILE).is_file():
            return
        if any(name in run_files or _temporary(name) for name in present):
            raise ConfigError(f"{run_dir} holds no complete {STATE_FILE} to resume from (its first epoch did not "
                              "finish); start it again without --resume: its run files are then replaced")
        raise ConfigError(f"{run_dir} holds no {STATE_FILE} to resume from; start a new run without --resume")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} exists and is not a folder")
    if not present or overwrite:
        return
    if STATE_FILE in present:
        raise ConfigError(f"{run_dir} already holds a run ({STATE_FILE}); pass --resume to continue it "
                          "or --overwrite to start again")
    finished = [name for name in RESULT_FILES if name in present]
    if finished:
        raise ConfigError(f"{run_dir} already holds a finished run ({finished[0]}); pass --overwrite to start again")
    others = [name for name in present if name not in run_files and not _temporary(name)]
    if others:
        raise ConfigError(f"{run_dir} already exists and is not empty (e.g. {others[0]}); choose another folder, "
                          "or pass --overwrite to start again there (only the run's own files are removed)")
    logger.warning("%s holds an unfinished run (no complete %s): starting it again", run_dir, STATE_FILE)


def clear_run_files(run_dir: Path, run_files: Sequence[str]) -> Path:
    """Create ``run_dir`` and remove the run's own files (and temporary files) from it; nothing else."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in (*run_files, *(p.name for p in run_dir.iterdir() if _temporary(p.name))):
        (run_dir / name).unlink(missing_ok=True)
    return run_dir


def _temporary(name: str) -> bool:
    """A file an interrupted write left: ``last.pt.tmp``, a checkpoint's or another output's temporary file."""
    return name in TEMP_FILES or is_temporary(name)


# ---- the learning-rate schedule --------------------------------------------------------

def warmup_steps(warmup_epochs: float, steps_per_epoch: int, total: int) -> int:
    """Optimizer steps of the linear warmup (always fewer than ``total``)."""
    return max(0, min(total - 1, round(warmup_epochs * steps_per_epoch)))


def lr_factor(step: int, warmup: int, total: int, cosine: bool = True) -> float:
    """Multiplier of the peak learning rate at ``step``: linear warmup, then cosine decay to 0 (or constant)."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if not cosine:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_schedule(optimizer: torch.optim.Optimizer, schedule: str, epochs: int, steps_per_epoch: int,
                   warmup_epochs: float = 0.0, max_lr: float | None = None):
    """Per-step scheduler: ``cosine`` or ``constant`` after a linear warmup, or ``onecycle`` (peak ``max_lr``).

    The warmup and cosine lengths follow ``epochs`` at construction, so a run resumed with more
    epochs stretches its remaining decay (the scheduler's saved state holds only the step).
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
    total = max(1, epochs * steps_per_epoch)
    warmup = warmup_steps(warmup_epochs, steps_per_epoch, total)
    if schedule == "onecycle":
        peak = max_lr if max_lr is not None else optimizer.param_groups[0]["lr"]
        pct = warmup / total if warmup else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=total, pct_start=pct)
    cosine = schedule == "cosine"
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total, cosine))


# ---- records and state -----------------------------------------------------------------

def _fmt(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def write_metrics_csv(history: list[dict], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """One row per epoch; ``columns`` (default: every key, in order of appearance) in that order; whole or not at all."""
    path = Path(path)
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for row in history for k in row))
    with atomic_file(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({k: _fmt(row.get(k)) for k in columns})
    return path


def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write the resumable state atomically: ``<path>.tmp`` first, then renamed over ``path`` (a full disk is
    one sentence, and the previous state stays)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:  # through Python, so that a failed write is an OSError
            torch.save(state, handle)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failed(path, exc) from None
    return path


def load_state(path: str | Path, state_format: str) -> dict[str, Any]:
    """A resumable state of ``state_format`` written by :func:`save_state`, read with ``weights_only=True``."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"{path}: cannot read the training state ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or state.get("format") != state_format:
        raise CheckpointError(f"{path}: not a bloodcell training state of format {state_format}")
    return state


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in a form ``torch.load(weights_only=True)`` reads back."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
