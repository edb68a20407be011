"""Training and validation data from a manifest; the test split is never opened here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Subset

from bloodcell.errors import DataError
from bloodcell.train.config import TrainConfig
from bloodcell.train.distributed import DistContext, shard_indices
from bloodcell.transforms import staging_size

#: The only splits training code may read; the test split is scored once, by the evaluator.
TRAINING_SPLITS = ("train", "val")


@dataclass
class SplitData:
    """One split: the dataset to index and its labels."""

    dataset: Dataset
    targets: list[int]
    class_names: list[str]


def default_cache_dir() -> Path:
    """The per-user cache folder for decoded images."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("bloodcell")) / "decoded"


def load_split(config: TrainConfig, manifest, root: Path, split: str, transform, input_size: int,
               limit: int | None) -> SplitData:
    """A ManifestDataset of ``split`` (train or val only); ``limit`` takes its stratified subset."""
    if split not in TRAINING_SPLITS:
        raise AssertionError(f"training code must never load the {split!r} split")
    from bloodcell.data.dataset import ManifestDataset

    cache_dir = None
    if config.cache:
        cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    dataset = ManifestDataset(
        manifest,
        split,
        taxonomy=config.taxonomy,
        root=root,
        transform=transform,
        cache_dir=cache_dir,
        cache_size=staging_size(input_size) if cache_dir is not None else None,
        limit=limit,
    )
    if not len(dataset):
        raise DataError(f"the manifest has no readable {split!r} images for taxonomy {config.taxonomy}")
    return SplitData(dataset, list(dataset.targets), list(dataset.class_names))


def load_extra_train(config: TrainConfig, path: str | Path, transform, input_size: int):
    """(manifest, train split) of an extra training manifest.

    A ``folder`` manifest sits at the root of its folder (its paths are relative to it), as
    ``bloodcell data crops`` writes it; other datasets are found as usual.
    """
    from bloodcell.data.locate import manifest_images_root
    from bloodcell.data.manifest import read_manifest

    manifest = read_manifest(path)
    root = manifest_images_root(path, manifest.dataset, config.data_root)
    return manifest, load_split(config, manifest, root, "train", transform, input_size, None)


def combine_splits(main: SplitData, extras: list[SplitData], repeat: int = 1) -> SplitData:
    """``main`` followed by each of ``extras`` ``repeat`` times (same class list)."""
    for extra in extras:
        if extra.class_names != main.class_names:
            raise DataError(f"an extra training set has classes {extra.class_names}, not {main.class_names}")
    parts = [main] + [extra for extra in extras for _ in range(repeat)]
    return SplitData(ConcatDataset([p.dataset for p in parts]), [t for p in parts for t in p.targets], main.class_names)


def class_weights(targets: list[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``n / (k * n_c)``; a class absent from training gets weight 0."""
    counts = np.bincount(np.asarray(targets), minlength=num_classes).astype(np.float64)
    weights = np.zeros(num_classes)
    present = counts > 0
    weights[present] = len(targets) / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def train_loader(data: SplitData, config: TrainConfig, ctx: DistContext) -> tuple[DataLoader, DistributedSampler]:
    """Shuffled loader whose order depends only on (seed, epoch): call ``sampler.set_epoch``."""
    sampler = DistributedSampler(
        data.dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=config.seed
    )
    # drop the last batch only when it would hold a single image (BatchNorm cannot train on it)
    drop_last = len(sampler) % config.batch_size == 1
    loader = DataLoader(
        data.dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        persistent_workers=config.workers > 0,
        drop_last=drop_last,
        pin_memory=ctx.device.type == "cuda",
    )
    return loader, sampler


def eval_loader(data: SplitData, config: TrainConfig, ctx: DistContext) -> DataLoader:
    """In-order loader over this rank's share of the split (no padding duplicates)."""
    indices = shard_indices(list(range(len(data.targets))), ctx)
    return DataLoader(
        Subset(data.dataset, indices),
        batch_size=config.batch_size * 2,
        shuffle=False,
        num_workers=config.workers,
        persistent_workers=config.workers > 0,
        pin_memory=ctx.device.type == "cuda",
    )
