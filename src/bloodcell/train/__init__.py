"""Training: ``fit(TrainConfig)`` runs a whole training run (single process or under torchrun)."""

from bloodcell.train.config import TrainConfig, resolve_config
from bloodcell.train.engine import RunResult, evaluate, fit, train_one_epoch

__all__ = ["RunResult", "TrainConfig", "evaluate", "fit", "resolve_config", "train_one_epoch"]
