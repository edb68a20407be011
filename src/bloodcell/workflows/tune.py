"""Hyperparameter search with Optuna, scored on the validation split only.

Each trial is a short training run (:func:`bloodcell.workflows.train.run_training`) into
``OUT/trials/trial-NNN`` with a sampled learning rate, weight decay, augmentation and input
size; its validation loss is reported every epoch so the median pruner can stop poor trials
early. The TPE sampler is seeded with the base
config's seed. Writes ``trials.csv`` and ``best_config.json`` (usable as
``bloodcell train --config``; pass ``--output`` and ``--epochs`` for the real run).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from bloodcell.errors import ConfigError
from bloodcell.log import get_logger
from bloodcell.models import get_model_entry
from bloodcell.train.config import TrainConfig
from bloodcell.train.distributed import DistContext, launched_by_torchrun
from bloodcell.transforms import AUGMENTATIONS
from bloodcell.workflows.train import run_training
from bloodcell.writing import atomic_file, write_json

LR_RANGE = (1e-4, 1e-2)
WEIGHT_DECAY_RANGE = (1e-5, 1e-1)
logger = get_logger(__name__)


@dataclass
class TuneResult:
    """The best trial's config and score, and where the records are."""

    best_config: TrainConfig
    best_val_loss: float
    best_trial: int
    trials_csv: Path
    best_config_path: Path


def default_input_sizes(model: str) -> tuple[int, ...]:
    """Three choices around the model's own input size: x0.75, x1, x1.25 (multiples of 8)."""
    size = get_model_entry(model).data_config.input_size
    return tuple(sorted({max(8, round(size * f / 8) * 8) for f in (0.75, 1.25)} | {size}))


def _trial_config(trial, base: TrainConfig, out: Path, input_sizes: tuple[int, ...],
                  augments: tuple[str, ...]) -> TrainConfig:
    return replace(
        base,
        lr=trial.suggest_float("lr", *LR_RANGE, log=True),
        weight_decay=trial.suggest_float("weight_decay", *WEIGHT_DECAY_RANGE, log=True),
        augment=trial.suggest_categorical("augment", list(augments)),
        input_size=trial.suggest_categorical("input_size", list(input_sizes)),
        out=str(out / "trials" / f"trial-{trial.number:03d}"),
    )


def _check_options(trials: int, augments: tuple[str, ...], out: Path, overwrite: bool) -> None:
    if launched_by_torchrun():
        raise ConfigError("bloodcell tune runs its trials one after another in one process; start it without torchrun")
    if trials < 1:
        raise ConfigError(f"trials must be at least 1, got {trials}")
    unknown = sorted(set(augments) - set(AUGMENTATIONS))
    if unknown:
        raise ConfigError(f"unknown augmentation(s) {', '.join(unknown)}; choose from {', '.join(AUGMENTATIONS)}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} already exists and is not empty; pass --overwrite to tune into it again")


def _objective(base: TrainConfig, out: Path, sizes: tuple[int, ...], augments: tuple[str, ...]):
    """The Optuna objective: one short training run, its validation loss reported every epoch (pruning)."""
    ctx = DistContext()

    def objective(trial: optuna.Trial) -> float:
        config = _trial_config(trial, base, out, sizes, augments)

        def report(row: dict[str, Any]) -> None:
            trial.report(row["val_loss"], step=row["epoch"])
            trial.set_user_attr("val_acc", row["val_acc"])
            if trial.should_prune():
                raise optuna.TrialPruned()

        result = run_training(config, overwrite=True, ctx=ctx, on_epoch=report)
        trial.set_user_attr("val_acc", result.metrics["val_acc"])
        return float(result.metrics["val_loss"])

    return objective


def _announce(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    loss = "-" if trial.value is None else f"{trial.value:.4f}"
    logger.info("trial %d: %s, val loss %s, %s", trial.number, trial.state.name.lower(), loss, trial.params)


def tune(
    base: TrainConfig,
    trials: int,
    out: str | Path,
    *,
    input_sizes: tuple[int, ...] | None = None,
    augments: tuple[str, ...] = AUGMENTATIONS,
    timeout_s: float | None = None,
    overwrite: bool = False,
) -> TuneResult:
    """Run ``trials`` Optuna trials of ``base`` (its epochs per trial); minimise validation loss."""
    out = Path(out)
    _check_options(trials, augments, out, overwrite)
    sizes = tuple(input_sizes) if input_sizes else default_input_sizes(base.model)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=base.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    study.optimize(_objective(base, out, sizes, augments), n_trials=trials, timeout=timeout_s, callbacks=[_announce])
    trials_csv = write_trials_csv(study, out / "trials.csv")
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise ConfigError("no trial completed; give more trials or a longer --timeout")
    best = study.best_trial
    best_config = replace(_trial_config(optuna.trial.FixedTrial(best.params, best.number), base, out, sizes, augments),
                          out=None)
    best_path = out / "best_config.json"
    write_json(best_path, best_config.to_dict())
    return TuneResult(best_config, float(best.value), best.number, trials_csv, best_path)


def write_trials_csv(study, path: Path) -> Path:
    """One row per trial: number, state, validation loss and accuracy, seconds, parameters."""
    names = ("lr", "weight_decay", "augment", "input_size")
    with atomic_file(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(("trial", "state", "val_loss", "val_acc", "epochs", "seconds", *names))
        for t in study.trials:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else ""
            writer.writerow((t.number, t.state.name.lower(), "" if t.value is None else f"{t.value:.6g}",
                             t.user_attrs.get("val_acc", ""), len(t.intermediate_values), seconds,
                             *(t.params.get(n, "") for n in names)))
    return path
