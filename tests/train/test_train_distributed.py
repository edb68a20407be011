"""``bloodcell train`` under torchrun with two CPU processes (gloo)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from bloodcell.checkpoint import load_checkpoint
from bloodcell.data.dataset import ManifestDataset
from bloodcell.train.distributed import DistContext, init_distributed, shard_indices
from bloodcell.transforms import create_transform


def test_single_process_context_without_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed()
    assert (ctx.enabled, ctx.is_main, ctx.world_size) == (False, True, 1)


def test_shards_cover_the_evaluation_set_once():
    indices = list(range(11))
    shards = [shard_indices(indices, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == indices


@pytest.mark.slow
def test_torchrun_two_processes_train_and_checkpoint(synthetic_root, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BLOODCELL_NO_PROGRESS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "bloodcell", "train", "--model", "risodkar2024-cnn", "--input-size", "64",
        "--manifest", str(synthetic_root / "manifest.csv"), "--data-root", str(synthetic_root),
        "--out", str(out), "--epochs", "2", "--batch-size", "8", "--threads", "1", "--no-cache",
        "--augment", "flips", "--lr", "0.001",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best epoch") == 1  # only rank 0 reports
    assert done.stderr.count("epoch 2/2:") == 1  # only rank 0 logs

    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 2
    # images counted over both ranks: 36 training images split 18 + 18
    assert round(float(rows[0]["images_per_s"]) * float(rows[0]["seconds"])) == 36

    assert not any(k.startswith("module.") for k in load_file(out / "best.safetensors"))
    checkpoint = load_checkpoint(out / "best.safetensors")
    assert checkpoint.meta["metrics"]["n_val"] == 12  # validation logits gathered from both ranks
    ds = ManifestDataset(synthetic_root / "manifest.csv", "val", root=synthetic_root / "pbc",
                         transform=create_transform(checkpoint.data_config, False))
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.inference_mode():
        logits = checkpoint.model(images)
    assert logits.shape == (12, 8) and torch.isfinite(logits).all()
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(ds.targets)).item()
    assert loss == pytest.approx(checkpoint.meta["metrics"]["val_loss"], rel=1e-4)
