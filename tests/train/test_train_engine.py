"""The training engine and workflow on a tiny synthetic dataset: learning, checkpoints, resume, stopping rules."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from train_fixtures import TINY_MODEL, _tiny_cnn, make_synthetic_pbc

from bloodcell.checkpoint import load_checkpoint, portable_config
from bloodcell.data.dataset import ManifestDataset
from bloodcell.data.manifest import read_manifest
from bloodcell.errors import ConfigError, DataError
from bloodcell.models import create_model
from bloodcell.models.registry import register_model
from bloodcell.provenance import file_sha256
from bloodcell.train import engine
from bloodcell.train.data import class_weights
from bloodcell.train.engine import seed_everything
from bloodcell.train.run import STATE_FILE
from bloodcell.transforms import create_transform
from bloodcell.workflows import train as train_workflow
from bloodcell.workflows.train import load_split, run_training

TINY_FROZEN_STEM = "test-train-tiny-frozen-stem"


@register_model(TINY_FROZEN_STEM, input_size=24, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
def _tiny_frozen_stem(num_classes: int, pretrained=False, input_size: int = 24):
    """The tiny CNN whose first convolution the architecture itself freezes."""
    model = _tiny_cnn(num_classes)
    model[0].requires_grad_(False)
    return model


def _val_batch(config):
    manifest = read_manifest(config.manifest)
    model = create_model(config.model, 8, input_size=config.input_size)
    ds = ManifestDataset(manifest, "val", root=config.data_root, transform=create_transform(model.data_config, False))
    return torch.stack([ds[i][0] for i in range(len(ds))])


def test_one_epoch_learns_and_writes_a_loadable_checkpoint(base_config):
    config = replace(base_config, epochs=1, class_weights=True)
    result = run_training(config)
    run = result.run_dir
    assert result.history[0]["val_acc"] > 0.6  # three classes: chance is 1/3
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1"]
    assert set(rows[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s"}
    assert float(rows[0]["images_per_s"]) > 0
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((run / "config.json").read_text())
    assert saved["dataset"] == "pbc" and saved["epochs"] == 1 and saved["class_weights"] is True

    checkpoint = load_checkpoint(result.best_checkpoint)
    meta = checkpoint.meta
    assert meta["train_config"] == portable_config(saved)  # machine paths cut to file names in checkpoints
    assert meta["manifest_sha256"] == read_manifest(config.manifest).sha256
    assert meta["metrics"]["epoch"] == 1 and meta["metrics"]["n_val"] == 12
    assert meta["temperature"] == pytest.approx(result.temperature) and result.temperature > 0
    assert checkpoint.class_names[:3] == ["basophil", "eosinophil", "erythroblast"]

    # the same weights from last.pt give the same logits as the reloaded checkpoint
    state = torch.load(run / STATE_FILE, weights_only=True)
    model = create_model(TINY_MODEL, 8)
    model.load_state_dict(state["model"])
    model.eval()
    images = _val_batch(config)
    with torch.inference_mode():
        assert torch.equal(model(images), checkpoint.model(images))
        predicted = checkpoint.model(images).argmax(1)
    assert predicted.float().mean() > 0  # not all class 0


def test_resume_after_interruption_matches_an_uninterrupted_run(base_config, tmp_path):
    config = replace(base_config, epochs=3, schedule="cosine", augment="flips", warmup_epochs=0.5, ema=True,
                     ema_decay=0.9)
    full = run_training(replace(config, out=str(tmp_path / "full")))

    interrupted = replace(config, out=str(tmp_path / "interrupted"))

    def crash_after_epoch_2(row):  # called once the epoch's files are written
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(interrupted, on_epoch=crash_after_epoch_2)
    state = torch.load(tmp_path / "interrupted" / STATE_FILE, weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2

    resumed = run_training(interrupted, resume=True)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert [row["val_loss"] for row in resumed.history] == pytest.approx([row["val_loss"] for row in full.history])
    a = load_file(full.best_checkpoint)
    b = load_file(resumed.best_checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # with --ema the checkpoint holds the averaged weights, not the raw ones
    final = torch.load(tmp_path / "full" / STATE_FILE, weights_only=True)
    assert full.best_epoch == 3  # the loss still falls at epoch 3 on this easy set
    assert all(torch.equal(a[k], final["ema"][f"module.{k}"]) for k in a)
    assert not torch.equal(a["7.weight"], final["model"]["7.weight"])


def test_an_epoch_interrupted_in_the_middle_resumes_where_it_stopped(base_config, tmp_path, monkeypatch):
    config = replace(base_config, epochs=2, schedule="cosine", augment="flips", ema=True, ema_decay=0.9,
                     checkpoint_every_s=1e-9)  # saves after every batch
    full = run_training(replace(config, out=str(tmp_path / "full")))
    real_save = engine.save_state

    def killed_after_three_batches_of_epoch_2(path, state):
        real_save(path, state)
        if state["partial"] and state["partial"]["epoch"] == 1 and state["partial"]["batches"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(engine, "save_state", killed_after_three_batches_of_epoch_2)
    interrupted = replace(config, out=str(tmp_path / "interrupted"))
    with pytest.raises(KeyboardInterrupt):
        run_training(interrupted)
    monkeypatch.setattr(engine, "save_state", real_save)
    state = torch.load(tmp_path / "interrupted" / STATE_FILE, weights_only=True)
    assert state["epoch"] == 1 and state["partial"]["batches"] == 3

    trained = []
    resumed = run_training(interrupted, resume=True, on_epoch=lambda row: trained.append(row["epoch"]))
    assert trained == [2] and [row["epoch"] for row in resumed.history] == [1, 2]
    for key in ("train_loss", "train_acc", "val_loss", "lr"):
        assert [row[key] for row in resumed.history] == pytest.approx([row[key] for row in full.history]), key
    a, b = load_file(full.best_checkpoint), load_file(resumed.best_checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(tmp_path / "interrupted" / STATE_FILE, weights_only=True)["partial"] is None


def test_checkpoint_every_s_must_be_positive(base_config):
    with pytest.raises(ConfigError, match="checkpoint_every_s must be positive"):
        replace(base_config, checkpoint_every_s=0)


def test_resume_refuses_another_taxonomy_and_missing_state(base_config):
    config = replace(base_config, epochs=1)
    run_training(config)
    with pytest.raises(DataError, match="taxonomy"):
        run_training(replace(config, taxonomy="pbc11"), resume=True)
    with pytest.raises(ConfigError, match="--overwrite"):
        run_training(config)
    with pytest.raises(ConfigError, match="resume"):
        run_training(replace(config, out=config.out + "-new"), resume=True)


def test_early_stopping_stops_after_patience(base_config, monkeypatch):
    losses = iter([1.0, 0.8, 0.9, 0.85, 0.95, 0.7, 0.6])
    real_evaluate = engine.evaluate

    def scripted(*args, **kwargs):
        out = real_evaluate(*args, **kwargs)
        out["loss"] = next(losses)
        return out

    monkeypatch.setattr(engine, "evaluate", scripted)
    result = run_training(replace(base_config, epochs=7, early_stopping_patience=3))
    assert result.stop_reason == "early_stopping"
    assert len(result.history) == 5  # best at epoch 2, then three worse epochs
    assert result.best_epoch == 2
    assert load_checkpoint(result.best_checkpoint).meta["metrics"]["epoch"] == 2


def test_time_budget_stops_cleanly_inside_the_first_epoch(base_config):
    result = run_training(replace(base_config, epochs=5, batch_size=4, time_budget_s=1e-6))
    assert result.stop_reason == "time_budget"
    assert len(result.history) == 1
    assert result.best_checkpoint.is_file()
    train_images = int(result.history[0]["images_per_s"] * result.history[0]["seconds"] + 0.5)
    assert train_images == 4  # one batch, then the budget was noticed


def test_class_weights_are_inverse_frequency():
    weights = class_weights([0, 0, 0, 1, 2, 2], 4)
    assert weights.tolist() == pytest.approx([6 / (3 * 3), 6 / (3 * 1), 6 / (3 * 2), 0.0])


def test_training_never_opens_the_test_split(base_config, monkeypatch):
    opened = []
    import bloodcell.data.dataset as dataset_module

    class Spy(ManifestDataset):
        def __init__(self, manifest, split, *args, **kwargs):
            opened.append(split)
            super().__init__(manifest, split, *args, **kwargs)
            assert not self.skipped  # the broken file lives in the test split only

    monkeypatch.setattr(dataset_module, "ManifestDataset", Spy)
    monkeypatch.setattr(train_workflow, "ManifestDataset", Spy)
    run_training(replace(base_config, epochs=1))
    assert sorted(opened) == ["train", "val"]
    with pytest.raises(AssertionError, match="test"):
        load_split(base_config, read_manifest(base_config.manifest), base_config.data_root, "test", None, 24, None)


def test_framed_training_caches_are_keyed_by_the_framing_version_unframed_ones_are_not(base_config, tmp_path,
                                                                                      monkeypatch):
    from bloodcell.transforms import DataConfig

    config = replace(base_config, cache=True, cache_dir=str(tmp_path / "cache"))
    manifest = read_manifest(config.manifest)

    def key(framing: str, version: int) -> str:
        monkeypatch.setattr(train_workflow, "FRAMING_VERSION", version)
        split = load_split(config, manifest, config.data_root, "val", None, DataConfig(24, framing=framing), None)
        return split.dataset.cache_key()

    assert key("cell", 2) != key("cell", 3)  # framing changed its pixels: its caches are built again
    assert key("none", 2) == key("none", 3)


def test_staged_transfer_freezes_the_backbone_then_unfreezes_all_but_architecture_frozen(base_config):
    config = replace(base_config, model=TINY_FROZEN_STEM, epochs=2, freeze_epochs=1)
    seed_everything(config.seed)
    initial = {k: v.clone() for k, v in create_model(TINY_FROZEN_STEM, 8).state_dict().items()}
    run_training(replace(config, epochs=1))
    after_head = load_checkpoint(config.out + "/best.safetensors").model.state_dict()
    assert torch.equal(after_head["3.weight"], initial["3.weight"])  # backbone conv frozen
    assert torch.equal(after_head["1.running_mean"], initial["1.running_mean"])  # BN statistics kept
    assert not torch.equal(after_head["7.weight"], initial["7.weight"])  # head trained

    result = run_training(config, resume=True)
    assert [row["frozen_backbone"] for row in result.history] == [True, False]
    final = torch.load(config.out + "/" + STATE_FILE, weights_only=True)["model"]
    assert not torch.equal(final["3.weight"], initial["3.weight"])  # backbone trained in stage 2
    assert torch.equal(final["0.weight"], initial["0.weight"])  # frozen by the architecture itself


def test_cached_training_matches_uncached_labels(base_config, tmp_path):
    result = run_training(replace(base_config, epochs=1, cache=True, cache_dir=str(tmp_path / "cache"), limit_train=12))
    assert any((tmp_path / "cache").glob("*.npy"))
    assert load_checkpoint(result.best_checkpoint).meta["metrics"]["n_train"] == 12


def test_unreadable_training_images_are_skipped_and_reported(base_config, tmp_path, bloodcell_log):
    manifest = make_synthetic_pbc(tmp_path / "data", per_class=5, bad_file_split="train")
    result = run_training(replace(base_config, manifest=str(manifest), data_root=str(tmp_path / "data"), epochs=1))
    assert "skipped 1 unreadable train image(s)" in bloodcell_log.text
    assert load_checkpoint(result.best_checkpoint).meta["metrics"]["n_train"] == 9  # 3 of 5 per class, broken one out


def _extra_folder_manifest(folder, rng_seed: int = 1):
    """A 'folder' manifest of 2 train images per class plus held-out test rows that are not even images."""
    # the synthetic set draws 3 of the 8 classes (SHAPES)
    import numpy as np
    from train_fixtures import SHAPES, _draw

    from bloodcell.data.manifest import ManifestRow, write_manifest

    rng = np.random.default_rng(rng_seed)
    rows = []
    for label, (colour, shape) in SHAPES.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            _draw(shape, colour, rng).save(folder / label / f"x{i}.png")
            rows.append(ManifestRow(f"{label}/x{i}.png", label, "", "train", file_sha256(folder / label / f"x{i}.png"), f"{label}{i}"))
        (folder / label / "held.png").write_bytes(b"held out")
        rows.append(ManifestRow(f"{label}/held.png", label, "", "test", file_sha256(folder / label / "held.png"), f"{label}-held"))
    return write_manifest(folder / "manifest.csv", "folder", rows).path


def test_fine_tuning_starts_from_a_checkpoint_and_adds_extra_training_images(base_config, tmp_path, bloodcell_log):
    from bloodcell.provenance import file_sha256

    start = run_training(replace(base_config, epochs=1, out=str(tmp_path / "start")))
    extra = _extra_folder_manifest(tmp_path / "lab")
    tuned = run_training(replace(base_config, epochs=1, lr=1e-12, out=str(tmp_path / "tuned"), init_from=str(start.best_checkpoint),
                        extra_train=[str(extra)], extra_repeat=3))
    assert "extra training images: 6 from" in bloodcell_log.text  # 3 classes x 2 train rows; test rows unread
    meta = load_checkpoint(tuned.best_checkpoint).meta
    assert meta["metrics"]["n_train"] == 36 + 3 * 6
    assert meta["init_from_sha256"] == file_sha256(start.best_checkpoint)
    assert meta["extra_train_sha256"] == [read_manifest(extra).sha256]  # no machine path, not even as a key
    before, after = load_file(start.best_checkpoint), load_file(tuned.best_checkpoint)
    learned = [k for k in before if "running" not in k and "num_batches" not in k]  # BatchNorm statistics still move
    assert learned and all(torch.allclose(before[k].float(), after[k].float(), atol=1e-6) for k in learned)
    fresh = create_model(base_config.model, 4)
    assert not all(torch.allclose(before[k].float(), v.float()) for k, v in fresh.state_dict().items() if k in before)


def test_fine_tuning_over_other_classes_keeps_the_backbone_and_starts_a_fresh_head(base_config, tmp_path):
    start = run_training(replace(base_config, epochs=1, out=str(tmp_path / "start")))
    names = ["band", "segmented", "other"]
    torch.manual_seed(1)
    model = create_model(base_config.model, num_classes=3, class_names=names)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    train_workflow.init_weights(model, replace(base_config, init_from=str(start.best_checkpoint)), names)
    trained, after = load_file(start.best_checkpoint), model.state_dict()
    head = {k for k in after if k.startswith("7.")}  # the tiny CNN's Linear is module 7
    assert head == {"7.weight", "7.bias"} and after["7.weight"].shape == (3, 16)
    assert all(torch.equal(after[k], fresh[k]) for k in head)
    assert all(torch.equal(after[k], trained[k].to(after[k].dtype)) for k in after if k not in head)


def test_fine_tuning_refuses_a_checkpoint_of_another_model(base_config, tmp_path):
    start = run_training(replace(base_config, epochs=1, out=str(tmp_path / "start")))
    with pytest.raises(ConfigError, match="init_from needs"):
        run_training(replace(base_config, model=TINY_FROZEN_STEM, out=str(tmp_path / "other"), init_from=str(start.best_checkpoint)))
