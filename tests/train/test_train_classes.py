"""Which classes a training run covers: a folder's own classes (--taxonomy labels), one class, a class
missing from a split."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from train_fixtures import SHAPES, TINY_MODEL, _draw
from typer.testing import CliRunner

from bloodcell.checkpoint import load_checkpoint
from bloodcell.data.manifest import ManifestRow, write_manifest
from bloodcell.errors import DataError
from bloodcell.provenance import file_sha256
from bloodcell.train.data import class_coverage
from bloodcell.workflows.train import run_training

#: A folder dataset's own class names, drawn as the synthetic shapes.
FOLDER_CLASSES = {"alpha": SHAPES["basophil"], "beta": SHAPES["eosinophil"], "gamma": SHAPES["lymphocyte"]}


def _folder_dataset(root, classes, splits=("train",) * 6 + ("val",) * 2 + ("test",) * 2, skip=()):
    """``root/<class>/*.png`` and ``root/manifest.csv`` (dataset ``folder``); ``skip``: (class, split) pairs left out."""
    rng = np.random.default_rng(0)
    rows = []
    for label, (colour, shape) in classes.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i, split in enumerate(splits):
            if (label, split) in skip:
                continue
            _draw(shape, colour, rng).save(root / label / f"{i}.png")
            rows.append(ManifestRow(f"{label}/{i}.png", label, "", split, file_sha256(root / label / f"{i}.png"), f"{label}{i}"))
    return write_manifest(root / "manifest.csv", "folder", rows).path


def _cli(args):
    from bloodcell.cli.main import app
    return CliRunner().invoke(app, args)


def test_a_folder_with_its_own_class_names_trains_with_taxonomy_labels(tmp_path):
    manifest = _folder_dataset(tmp_path / "cells", FOLDER_CLASSES)
    out = tmp_path / "run"
    result = _cli(["train", "--model", TINY_MODEL, "--manifest", str(manifest), "--data-root", str(tmp_path / "cells"),
                   "--taxonomy", "labels", "--out", str(out), "--epochs", "1", "--batch-size", "6", "--lr", "0.01",
                   "--threads", "1", "--no-cache", "--augment", "none"])
    assert result.exit_code == 0, f"{result.output} {result.exception!r}"
    checkpoint = load_checkpoint(out / "best.safetensors")
    assert checkpoint.class_names == ["alpha", "beta", "gamma"]
    assert checkpoint.meta["metrics"]["n_train"] == 18 and checkpoint.meta["metrics"]["n_val"] == 6
    assert json.loads((out / "config.json").read_text())["taxonomy"] == "labels"

    resumed = _cli(["train", "--out", str(out), "--resume", "--epochs", "2"])
    assert resumed.exit_code == 0, f"{resumed.output} {resumed.exception!r}"


def test_a_folder_of_one_class_is_refused(base_config, tmp_path):
    manifest = _folder_dataset(tmp_path / "one", {"alpha": FOLDER_CLASSES["alpha"]})
    config = replace(base_config, manifest=str(manifest), data_root=str(tmp_path / "one"), epochs=1)
    with pytest.raises(DataError, match=r"single class under taxonomy labels \(alpha\).*at least two"):
        run_training(replace(config, taxonomy="labels"))
    # under a taxonomy of many classes the folder still trains one: refused, not a val accuracy of 1.000
    pbc = _folder_dataset(tmp_path / "basophils", {"basophil": SHAPES["basophil"]})
    with pytest.raises(DataError, match=r"training split holds a single class \(basophil\)"):
        run_training(replace(config, manifest=str(pbc), data_root=str(tmp_path / "basophils")))
    assert not (tmp_path / "run").exists()  # refused before the run folder was touched


def test_classes_missing_from_a_split_are_named(base_config, tmp_path, bloodcell_log):
    manifest = _folder_dataset(tmp_path / "cells", FOLDER_CLASSES, skip={("gamma", "val"), ("beta", "train")})
    config = replace(base_config, manifest=str(manifest), data_root=str(tmp_path / "cells"), epochs=1,
                     taxonomy="labels")
    run_training(config)
    warnings = [r.getMessage() for r in bloodcell_log.records if r.levelname == "WARNING"]
    assert "the train split has no image of beta (it cannot be learned)" in warnings
    assert "the val split has no image of gamma (validation figures leave it out)" in warnings


def test_class_coverage_rules():
    names = ["a", "b", "c", "d"]
    assert class_coverage(names[:2], [0, 1, 1], [1, 0]) == []
    messages = class_coverage(names, [0, 1, 1], [1])
    assert messages == ["2 of the 4 classes have no training or validation image: c, d",
                        "the val split has no image of a (validation figures leave it out)",
                        "the val split holds a single class: validation accuracy says nothing about telling "
                        "classes apart"]
    with pytest.raises(DataError, match=r"single class \(b\)"):
        class_coverage(names, [1, 1], [0, 1])
