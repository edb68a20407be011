"""MedMNIST BloodMNIST ``.npz`` files (28/64/128/224 px) as arrays or a torch ``Dataset``.

Labels 0..7 are the PBC classes in the same order (basophil ... platelet), so models trained
on either use the ``pbc8`` class list.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bloodcell.data.locate import dataset_root
from bloodcell.data.registry import PBC_CLASSES
from bloodcell.errors import ConfigError, DataError

SIZES = (28, 64, 128, 224)


def npz_filename(size: int) -> str:
    if size not in SIZES:
        raise ConfigError(f"BloodMNIST size must be one of {', '.join(map(str, SIZES))}, got {size}")
    return "bloodmnist.npz" if size == 28 else f"bloodmnist_{size}.npz"


def load_bloodmnist(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images N x S x S x 3 uint8, labels N int64)`` of one split from a BloodMNIST ``.npz``."""
    path = Path(path)
    if split not in ("train", "val", "test"):
        raise DataError(f"unknown split {split!r}; choose train, val or test")
    if not path.is_file():
        raise DataError(f"BloodMNIST file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            wanted = (f"{split}_images", f"{split}_labels")
            if not set(wanted) <= keys:
                raise DataError(f"{path} lacks {' and '.join(k for k in wanted if k not in keys)} (is it a MedMNIST file?)")
            images, labels = data[wanted[0]], data[wanted[1]]
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DataError(f"{path} is not a readable .npz file ({exc})") from exc
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) != len(labels):
        raise DataError(f"{path}: {split} arrays have unexpected shapes {images.shape} / {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(PBC_CLASSES)):
        raise DataError(f"{path}: {split} labels outside 0..{len(PBC_CLASSES) - 1}")
    return images, labels


class BloodMNISTDataset(Dataset):
    """One split of BloodMNIST: ``ds[i] -> (uint8 CHW tensor or transform(tensor), label)``."""

    def __init__(
        self,
        split: str,
        size: int = 28,
        root: str | Path | None = None,
        data_root: str | Path | None = None,
        transform: Callable | None = None,
    ) -> None:
        folder = Path(root) if root is not None else dataset_root("bloodmnist", data_root)
        self.path = folder / npz_filename(size)
        self.images, labels = load_bloodmnist(self.path, split)
        self.targets = labels.tolist()
        self.class_names = list(PBC_CLASSES)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        tensor = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1).contiguous()
        if self.transform is not None:
            tensor = self.transform(tensor)
        return tensor, self.targets[i]
