"""Frozen, seeded train/val/test split of smear image ids (``image_id,split`` CSV)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bloodcell.errors import DataError

SPLITS = ("train", "val", "test")


def make_split(image_ids: list[str], seed: int = 0, fractions: tuple[float, float] = (0.70, 0.15)) -> dict[str, str]:
    """Shuffle sorted ids with ``seed``; the first 70% are train, the next 15% val, the rest test."""
    ids = sorted(set(image_ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    n_train = round(fractions[0] * len(ids))
    n_val = round(fractions[1] * len(ids))
    split = {}
    for rank, index in enumerate(order):
        split[ids[index]] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return dict(sorted(split.items()))


def write_split(split: dict[str, str], path: str | Path) -> Path:
    """Write ``image_id,split`` rows sorted by id."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["image_id", "split"])
        writer.writerows(sorted(split.items()))
    return path


def read_split(path: str | Path) -> dict[str, str]:
    """Read an ``image_id,split`` CSV; raises DataError when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split manifest not found")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or set(rows[0]) != {"image_id", "split"}:
        raise DataError(f"{path}: expected columns image_id,split")
    bad = [r["split"] for r in rows if r["split"] not in SPLITS]
    if bad:
        raise DataError(f"{path}: unknown split {bad[0]!r} (expected one of {', '.join(SPLITS)})")
    return {r["image_id"]: r["split"] for r in rows}
