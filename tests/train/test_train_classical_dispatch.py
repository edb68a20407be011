"""The training workflow hands ``sk/...`` registry entries to ``train_classical`` with train and validation arrays."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

import bloodcell.train.classical as classical
from bloodcell.data.taxonomy import get_taxonomy
from bloodcell.models.classical import load_classical
from bloodcell.models.registry import register_model
from bloodcell.workflows.train import run_training

SK_MODEL = "sk/test-train-recorder"


@register_model(SK_MODEL, input_size=20, kind="sklearn")
def _recorder(num_classes: int, pretrained=False, input_size: int = 20):
    """A scikit-learn entry used only to test the dispatch."""
    raise AssertionError("fit must not build sklearn entries through create_model")


def test_sklearn_entries_dispatch_to_train_classical(base_config, monkeypatch):
    calls = {}

    def fake_train_classical(model_name, train_images, train_labels, val_images, val_labels, class_names,
                             out_path, n_jobs=1, meta=None):
        calls.update(model=model_name, train=train_images, train_y=train_labels, val=val_images, val_y=val_labels,
                     classes=class_names, n_jobs=n_jobs, meta=meta)
        out_path.write_bytes(b"skops")
        return object(), {"val_acc": 0.5, "temperature": 0.8}

    monkeypatch.setattr(classical, "train_classical", fake_train_classical, raising=False)
    result = run_training(replace(base_config, model=SK_MODEL))
    assert calls["model"] == SK_MODEL
    assert calls["train"].shape == (36, 20, 20, 3) and calls["train"].dtype == np.uint8
    assert calls["val"].shape == (12, 20, 20, 3)
    names = get_taxonomy("pbc8").class_names
    expected = sorted(names.index(c) for c in ("basophil", "eosinophil", "lymphocyte"))
    assert sorted(set(calls["train_y"].tolist())) == expected and len(calls["val_y"]) == 12
    assert calls["classes"][:2] == ["basophil", "eosinophil"] and len(calls["classes"]) == 8
    assert result.best_checkpoint.name == "best.skops" and result.best_checkpoint.read_bytes() == b"skops"
    assert result.metrics == {"val_acc": 0.5, "temperature": 0.8} and result.temperature == 0.8
    assert calls["meta"]["taxonomy"] == "pbc8" and calls["meta"]["train_config"]["model"] == SK_MODEL
    assert len(calls["meta"]["manifest_sha256"]) == 64
    assert (result.run_dir / "config.json").is_file()


def test_real_classical_baseline_trains_and_saves_its_classes(base_config):
    from bloodcell.models import list_models

    names = [e.name for e in list_models() if e.kind == "sklearn" and e.name != SK_MODEL]
    assert names, "the sk/... baselines should be registered"
    result = run_training(replace(base_config, model=names[0]))
    assert result.best_checkpoint.is_file() and result.best_checkpoint.suffix == ".skops"
    pipeline, meta = load_classical(result.best_checkpoint)
    assert meta["model_name"] == names[0] and meta["taxonomy"] == "pbc8"
    assert meta["class_names"] == list(get_taxonomy("pbc8").class_names)
    assert result.temperature == meta["temperature"] > 0
    assert set(int(c) for c in pipeline.classes_) <= set(range(len(meta["class_names"])))
