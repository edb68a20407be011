"""Training and validation data handed to the engine: splits, class checks, loaders.

The datasets themselves are built by the workflow (:mod:`bloodcell.workflows.train`); training
datasets yield normalised, augmented float tensors and validation datasets yield the model-input
uint8 pixels (:func:`bloodcell.transforms.create_pixel_transform`) that the predictor scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import (
    ConcatDataset,
    DataLoader,
    Dataset,
    DistributedSampler,
    Subset,
)

from bloodcell.errors import DataError
from bloodcell.train.config import TrainConfig
from bloodcell.train.distributed import DistContext, shard_indices

#: The only splits training code may read; the test split is scored once, by the evaluator.
TRAINING_SPLITS = ("train", "val")


@dataclass
class SplitData:
    """One split: the dataset to index and its labels."""

    dataset: Dataset
    targets: list[int]
    class_names: list[str]


def combine_splits(main: SplitData, extras: list[SplitData], repeat: int = 1) -> SplitData:
    """``main`` followed by each of ``extras`` ``repeat`` times (same class list)."""
    for extra in extras:
        if extra.class_names != main.class_names:
            raise DataError(f"an extra training set has classes {extra.class_names}, not {main.class_names}")
    parts = [main] + [extra for extra in extras for _ in range(repeat)]
    return SplitData(ConcatDataset([p.dataset for p in parts]), [t for p in parts for t in p.targets], main.class_names)


def class_coverage(class_names: list[str], train_targets: list[int], val_targets: list[int]) -> list[str]:
    """Refuse training data of fewer than two classes; return warnings naming the classes a split lacks.

    A class with no training image cannot be learned, and one with no validation image is never
    checked: validation accuracy over the others (1.000 on a single class) says nothing about it.
    """
    present = {"train": set(train_targets), "val": set(val_targets)}
    if len(present["train"]) < 2:
        only = ", ".join(class_names[i] for i in sorted(present["train"])) or "none"
        raise DataError(f"the training split holds a single class ({only}); a classifier needs images of at least "
                        "two classes (check the manifest, the folder's class subfolders and --taxonomy)")
    messages = []
    absent_both = [name for i, name in enumerate(class_names) if i not in present["train"] | present["val"]]
    if absent_both:
        messages.append(f"{len(absent_both)} of the {len(class_names)} classes have no training or validation "
                        f"image: {', '.join(absent_both)}")
    for split, other in (("train", "val"), ("val", "train")):
        missing = [name for i, name in enumerate(class_names) if i in present[other] and i not in present[split]]
        if missing:
            effect = "it cannot be learned" if split == "train" else "validation figures leave it out"
            messages.append(f"the {split} split has no image of {', '.join(missing)} ({effect})")
    if len(present["val"]) == 1:
        messages.append("the val split holds a single class: validation accuracy says nothing about telling classes apart")
    return messages


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
    )
