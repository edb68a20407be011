"""Manifest CSV: the frozen list of files with label, fine label, split, sha256 and group.

Columns: ``dataset,path,label,fine_label,split,sha256,group`` (UTF-8, ``\\n`` line endings,
rows sorted by path). ``path`` is relative to the dataset root. The manifest's identity is
the sha256 of the file's bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import astuple, dataclass, fields
from pathlib import Path, PurePosixPath, PureWindowsPath

from bloodcell.data.tables import csv_file_bytes, csv_from_bytes
from bloodcell.errors import DataError
from bloodcell.resources import manifest_path
from bloodcell.writing import write_bytes

SPLITS = ("train", "val", "test")
COLUMNS = ("dataset", "path", "label", "fine_label", "split", "sha256", "group")
#: Largest manifest read (PBC's 14,501 rows are about 2 MB).
MAX_MANIFEST_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class ManifestRow:
    path: str
    label: str
    fine_label: str
    split: str
    sha256: str
    group: str = ""


@dataclass(frozen=True)
class Manifest:
    """The rows of a manifest (a path listed twice is kept once; ``duplicates`` names the repeats)."""

    rows: tuple[ManifestRow, ...]
    dataset: str
    sha256: str
    path: Path | None = None
    duplicates: tuple[str, ...] = ()

    def rows_for(self, split: str | None) -> list[ManifestRow]:
        """Rows of one split (all rows for None)."""
        if split is not None and split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return [row for row in self.rows if split is None or row.split == split]


def manifest_bytes(dataset: str, rows: list[ManifestRow]) -> bytes:
    """Serialise rows deterministically (sorted by path, ``\\n`` line endings)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in sorted(rows, key=lambda r: r.path):
        writer.writerow((dataset, *astuple(row)))
    return buffer.getvalue().encode("utf-8")


def write_manifest(path: str | Path, dataset: str, rows: list[ManifestRow]) -> Manifest:
    """Write the manifest atomically and return it (with its sha256)."""
    path = Path(path)
    data = manifest_bytes(dataset, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, data)
    return Manifest(tuple(sorted(rows, key=lambda r: r.path)), dataset, hashlib.sha256(data).hexdigest(), path)


def _leaves_root(relative: str) -> bool:
    """True for a manifest path that is absolute or climbs out of the dataset's folder (POSIX or Windows spelling)."""
    parts = PureWindowsPath(relative).parts
    return PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).is_absolute() or bool(
        PureWindowsPath(relative).drive) or ".." in parts


def read_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest CSV (a path or a frozen manifest's name); raises ``DataError`` naming the problem."""
    path = manifest_path(path)
    data = csv_file_bytes(path, "manifest", MAX_MANIFEST_BYTES)
    _, records = csv_from_bytes(data, path, "manifest", COLUMNS)
    rows, datasets, kept, duplicates = [], set(), {}, []
    names = [f.name for f in fields(ManifestRow)]
    for line, record in enumerate(records, start=2):
        if None in record or None in record.values():
            raise DataError(f"manifest {path} line {line}: malformed row (more or fewer fields than the header)")
        values = {n: record[n] for n in names}
        if any("\r" in v or "\n" in v for v in [*values.values(), record["dataset"]]):
            raise DataError(f"manifest {path} line {line}: malformed row (a line break inside a field)")
        if values["split"] not in SPLITS:
            raise DataError(f"manifest {path} line {line}: split {values['split']!r} is not one of {', '.join(SPLITS)}")
        if not values["path"] or not values["label"] or not record["dataset"]:
            raise DataError(f"manifest {path} line {line}: empty dataset, path or label")
        if _leaves_root(values["path"]):
            raise DataError(f"manifest {path} line {line}: {values['path']!r} leaves the dataset's folder (an absolute "
                            "path or a '..' part); a manifest names files inside it")
        row = ManifestRow(**values)
        if row.path in kept:
            if row != kept[row.path]:  # the same file in two splits, or with two labels, is no split at all
                raise DataError(f"manifest {path} line {line}: {row.path} is listed again with another label, "
                                "split, sha256 or group")
            duplicates.append(row.path)
            continue
        kept[row.path] = row
        datasets.add(record["dataset"])
        rows.append(row)
    if not rows:
        raise DataError(f"manifest {path} has no rows")
    if len(datasets) != 1:
        raise DataError(f"manifest {path} mixes datasets {', '.join(sorted(datasets))}")
    return Manifest(tuple(rows), datasets.pop(), hashlib.sha256(data).hexdigest(), path, tuple(duplicates))
