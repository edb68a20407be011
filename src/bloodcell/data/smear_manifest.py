"""Frozen splits of smear photos: an ``image_id,split`` CSV with optional ``dataset``, ``source``,
``group`` and ``note`` columns.

``split`` is ``train``, ``val``, ``test`` or ``excluded`` (kept out of training, with the
reason in ``note``: for example a copy of a held-out photo). ``group`` names the original photo
a row is a copy of, so copies always fall on one side. The manifest's identity is the sha256 of
its bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from bloodcell.data.manifest import MAX_MANIFEST_BYTES
from bloodcell.data.tables import csv_file_bytes, csv_from_bytes
from bloodcell.errors import DataError
from bloodcell.resources import manifest_path
from bloodcell.writing import write_bytes

SPLITS = ("train", "val", "test", "excluded")
REQUIRED = ("image_id", "split")


@dataclass(frozen=True)
class SmearRow:
    image_id: str
    split: str
    dataset: str = ""
    source: str = ""
    group: str = ""
    note: str = ""


COLUMNS = tuple(f.name for f in fields(SmearRow))


@dataclass(frozen=True)
class SmearManifest:
    rows: tuple[SmearRow, ...]
    sha256: str
    path: Path | None = None

    def ids(self, split: str) -> list[str]:
        """Sorted image ids of one split."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return sorted(row.image_id for row in self.rows if row.split == split)

    def split_of(self) -> dict[str, str]:
        return {row.image_id: row.split for row in self.rows}


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


def write_smear_manifest(rows: list[SmearRow], path: str | Path, columns: tuple[str, ...] = COLUMNS) -> SmearManifest:
    """Write ``rows`` sorted by id with ``columns`` (``image_id,split`` first), atomically."""
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    index = [COLUMNS.index(c) for c in columns]
    for row in sorted(rows, key=lambda r: r.image_id):
        values = astuple(row)
        writer.writerow([values[i] for i in index])
    data = buffer.getvalue().encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, data)
    return SmearManifest(tuple(sorted(rows, key=lambda r: r.image_id)), hashlib.sha256(data).hexdigest(), path)


def read_smear_manifest(path: str | Path) -> SmearManifest:
    """Read and check a smear manifest (a path or a frozen manifest's name); raises ``DataError`` naming the problem."""
    path = manifest_path(path)
    data = csv_file_bytes(path, "smear manifest", MAX_MANIFEST_BYTES)
    _, records = csv_from_bytes(data, path, "smear manifest", REQUIRED)
    if not records:
        raise DataError(f"{path}: the smear manifest lists no smear")
    rows, seen = [], set()
    for line, record in enumerate(records, start=2):
        row = SmearRow(**{name: (record.get(name) or "").strip() for name in COLUMNS})
        if row.split not in SPLITS:
            raise DataError(f"{path} line {line}: unknown split {row.split!r} (expected one of {', '.join(SPLITS)})")
        if not row.image_id or row.image_id in seen:
            raise DataError(f"{path} line {line}: {'empty' if not row.image_id else 'repeated'} image id {row.image_id!r}")
        seen.add(row.image_id)
        rows.append(row)
    return SmearManifest(tuple(rows), hashlib.sha256(data).hexdigest(), path)
