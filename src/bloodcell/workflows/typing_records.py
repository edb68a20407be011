"""How well a classifier types the white cells of another lab's smears (BCCD), recorded in its checkpoint.

The main white cell of each held-out BCCD smear (:func:`~bloodcell.data.bccd.held_out_ids`) is
framed and classified; the accuracy is stored in the checkpoint's ``smear_typing`` metadata,
which ``bloodcell count`` reports with every differential ("how much to trust it").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bloodcell.checkpoint import read_checkpoint_meta, update_metadata
from bloodcell.inference.predictor import load
from bloodcell.provenance import file_sha256, git_commit
from bloodcell.weights import resolve
from bloodcell.workflows.cells import bccd_cells


def measure_typing(checkpoint: str | Path, data_root=None, seed: int = 0, tta: bool = False) -> dict[str, Any]:
    """Accuracy of ``checkpoint`` on the held-out BCCD white cells (and on all of them, for reference)."""
    classifier = load(checkpoint)
    held = bccd_cells(data_root, "held_out", seed=seed)
    every = bccd_cells(data_root, "all", seed=seed)
    predicted = np.array([p.label for p in classifier.predict(held.images, top_k=1, tta=tta, guard=False)])
    predicted_all = np.array([p.label for p in classifier.predict(every.images, top_k=1, tta=tta, guard=False)])
    truth = np.array(held.labels)
    return {"smears": len(every.labels), "held_out": len(held.labels), "seed": seed, "tta": tta,
            "direct_accuracy_held_out": float(np.mean(predicted == truth)),
            "direct_accuracy_all": float(np.mean(predicted_all == np.array(every.labels))),
            "held_out_types": {k: int(v) for k, v in zip(*np.unique(truth, return_counts=True))},
            "checkpoint_sha256": file_sha256(resolve(checkpoint))}


def record_typing(checkpoint: str | Path, scores: dict[str, Any]) -> None:
    """Store the held-out accuracy of :func:`measure_typing` in the checkpoint file's ``smear_typing``."""
    meta = read_checkpoint_meta(checkpoint)
    extra = meta.get("train_config", {}).get("extra_train") or []
    beside = meta.get("dataset") or meta.get("train_config", {}).get("dataset") or "its own dataset"
    fitted = {"fitted_on": f"fine-tuned with {len(extra)} extra training set(s) beside {beside}"} if extra else {}
    update_metadata(resolve(checkpoint), smear_typing={
        "dataset": "bccd", "held_out_smears": scores["held_out"], "held_out_accuracy": scores["direct_accuracy_held_out"],
        "seed": scores["seed"], "commit": git_commit(), **fitted})
