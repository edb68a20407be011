"""Training engines over data they are given: the classifier (:mod:`bloodcell.train.engine`) and the smear
detector (:mod:`bloodcell.train.detector`); whole runs from manifests are :mod:`bloodcell.workflows.train`."""

from bloodcell.train.config import TrainConfig, resolve_config
from bloodcell.train.engine import RunResult, evaluate, fit, train_one_epoch

__all__ = ["RunResult", "TrainConfig", "evaluate", "fit", "resolve_config", "train_one_epoch"]
