"""Evaluation: score a checkpoint over a test split or an external folder, report it, compare models."""

from bloodcell.evaluation.evaluate import Evaluation, evaluate, write_report

__all__ = ["Evaluation", "evaluate", "write_report"]
