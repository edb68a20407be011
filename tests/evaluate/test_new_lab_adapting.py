"""``benchmarks/new_lab.py``'s adapting section: per lab, on confirmed labels, and the labs it cannot measure."""

from __future__ import annotations

import importlib.util
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
TYPES = ("eosinophil", "lymphocyte", "monocyte")


def benchmark():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("new_lab", ROOT / "benchmarks" / "new_lab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def two_candidates(monkeypatch):
    """One strength per anchor: the section's logic, not the engine's search (tested in tests/workflows)."""
    from bloodcell.train import head

    monkeypatch.setattr(head, "adapt_head", partial(head.adapt_head, strengths=(0.1,), fresh_strengths=(0.5,)))


class Stub:
    class_names = list(TYPES)
    temperature = 1.0
    model = torch.nn.Linear(3, 3)


def lab(seed: int = 0, per_type: int = 15) -> dict:
    """A lab whose stain swaps what a model that knows each type sees of eosinophils and lymphocytes."""
    with torch.no_grad():
        Stub.model.weight.copy_(torch.eye(3))
        Stub.model.bias.zero_()
    rng = np.random.default_rng(seed)
    truth = np.repeat([0, 1, 2], per_type)
    seen = np.array([1, 0, 2])[truth]
    features = np.eye(3)[seen][None].repeat(8, 0) * 4 + rng.normal(scale=0.3, size=(8, len(truth), 3))
    return {"features": features, "logits": features, "labels": np.array([TYPES[t] for t in truth]),
            "ids": np.array([f"c{i}" for i in range(len(truth))])}


def test_adapting_fixes_the_lab_keeps_a_left_out_type_and_reports_cis(tmp_path):
    result = benchmark().adapting(Stub(), lab(), per_class=5, draws=2, few=3)
    summary = result["summary"]
    assert summary["all types"]["accuracy_before"] < 0.5 < 0.9 < summary["all types"]["accuracy"]
    assert summary["monocyte left out"]["recall_kept"] >= 0.8  # a type given no cells is still found
    assert 0.9 < result["accuracy_ci95"][0] <= result["accuracy_ci95"][1] <= 1.0
    assert result["ece_ci95"][0] <= summary["all types"]["ece"] <= result["ece_ci95"][1]
    assert sum(summary["all types"]["recipes"].values()) == 2


def test_labs_it_cannot_measure_say_why_and_bccd_is_also_measured_on_confirmed_labels(tmp_path):
    data = lab()
    review = tmp_path / "review.csv"
    rows = [f"{i},{label},{'unclear' if n % 3 == 0 else label}" for n, (i, label) in
            enumerate(zip(data["ids"], data["labels"]))]
    review.write_text("image_id,label,reviewed_as\n" + "\n".join(rows) + "\n")
    untyped = {**lab(1), "labels": np.array([""] * 45)}
    result = benchmark().adapting_per_lab(Stub(), {"bccd": data, "raabin": untyped}, ["pbc"], str(review),
                                          per_class=5, draws=1, few=3)
    assert "learned from" in result["pbc"]["not_measured"] and "no white-cell types" in result["raabin"]["not_measured"]
    assert result["bccd"]["labels"]["draws"][0]["all types"]["n_rest"] == 45 - 15
    assert result["bccd"]["confirmed"]["draws"][0]["all types"]["n_rest"] == 30 - 15  # a third of the cells unclear


def test_a_lab_under_a_model_that_never_saw_it_scores_only_the_types_the_model_has(tmp_path):
    """PBC under a BCCD-only model: its cells of types that model lacks (platelets here) are neither adapted from nor
    scored (they could never be right), and are counted; the lab the model learned from is not measured; a left-out
    type with no recall before adapting has no share kept (not a division by zero)."""
    data = lab()
    extra = 6
    pbc = {"features": np.concatenate([data["features"], np.ones((8, extra, 3))], axis=1),
           "logits": np.concatenate([data["logits"], np.ones((8, extra, 3))], axis=1),
           "labels": np.concatenate([data["labels"], ["platelet"] * extra]),
           "ids": np.concatenate([data["ids"], [f"p{i}" for i in range(extra)]])}
    result = benchmark().adapting_per_lab(Stub(), {"pbc": pbc}, ["bccd"], None, per_class=5, draws=1, few=3)
    assert result["bccd"] == {"not_measured": "the model learned from this lab"}
    assert result["pbc"]["not_scored"] == {"cells": extra, "types": ["platelet"], "why": "the model has no such type"}
    draw = result["pbc"]["labels"]["draws"][0]
    assert draw["all types"]["n_rest"] == 45 - 15  # the platelets are not among the scored cells
    summary = result["pbc"]["labels"]["summary"]
    assert summary["eosinophil left out"]["recall_before"] == 0.0 and summary["eosinophil left out"]["recall_kept"] is None
    assert summary["eosinophil left out"]["left_out_at_risk"] + summary["eosinophil left out"]["left_out_gated"] == 1
