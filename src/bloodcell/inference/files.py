"""Command-line inputs (files, folders, globs) to image paths with every unusable entry reported, and
result files written as results come (a late failure keeps what was done)."""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bloodcell.data.images import scan_folder
from bloodcell.errors import ConfigError
from bloodcell.outputs import check_output_file

#: CSV/JSON fields of a prediction, in output order.
RECORD_FIELDS = ("path", "label", "confidence", "referred", "top_k", "error", "reason", "note")
RECORD_SUFFIXES = (".csv", ".json")


@dataclass
class Inputs:
    """Image paths to process, entries that cannot be (path, reason), and how many other files were passed over."""

    paths: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    other_files: int = 0

    def add_folder(self, folder: Path) -> None:
        scan = scan_folder(folder)
        self.paths += scan.images
        self.problems += scan.problems
        self.other_files += scan.other_files


def collect_inputs(inputs: Sequence[str | Path]) -> Inputs:
    """Files as given (even with unusual extensions), folders searched recursively, and glob patterns
    (``**`` allowed). Order is kept; duplicates are dropped. A missing file among others is kept, so that
    it is reported as an error row; folder entries that cannot be used are listed in ``problems``.
    ConfigError (one sentence) when nothing given exists, or nothing given holds an image."""
    missing = [str(raw) for raw in inputs if not _exists(Path(str(raw))) and not glob.has_magic(str(raw))]
    if missing and len(missing) == len(inputs):
        names = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ConfigError(f"{names}: no such file or folder" if len(missing) == 1
                          else f"none of the paths given exists ({names})")
    found = Inputs()
    for raw in inputs:
        text = str(raw)
        path = Path(text)
        if path.is_dir():
            found.add_folder(path)
        elif not path.exists() and not path.is_symlink() and glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            if not matches:
                raise ConfigError(f"the pattern {text!r} matches no files")
            for match in matches:
                found.add_folder(match) if match.is_dir() else found.paths.append(match)
        else:
            found.paths.append(path)
    found.paths = list(dict.fromkeys(found.paths))
    if not found.paths and not found.problems:
        raise ConfigError(f"no image files found in {', '.join(map(str, inputs))}")
    return found


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def check_records_path(out: str | Path) -> Path:
    """``out`` as a writable ``.csv`` or ``.json`` file path; ConfigError otherwise (checked before any work)."""
    return check_output_file(out, RECORD_SUFFIXES, "results")


class RecordWriter:
    """Writes prediction records to ``.csv`` (columns :data:`RECORD_FIELDS`) or ``.json`` as they come."""

    def __init__(self, out: str | Path):
        self.path = check_records_path(out)
        self.json = self.path.suffix.lower() == ".json"
        self._handle: IO[str] = self.path.open("w", newline="", encoding="utf-8")
        self._count = 0
        if self.json:
            self._handle.write("[")
        else:
            self._csv = csv.DictWriter(self._handle, fieldnames=RECORD_FIELDS)
            self._csv.writeheader()

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            row = {k: record.get(k) for k in RECORD_FIELDS}
            if self.json:
                self._handle.write(("," if self._count else "") + "\n  " + json.dumps(row))
            else:
                self._csv.writerow({k: _csv_value(v) for k, v in row.items()})
            self._count += 1
        self._handle.flush()

    def close(self) -> None:
        if self.json:
            self._handle.write("\n]\n")
        self._handle.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_records(records: list[dict], out: str | Path) -> Path:
    """Write all ``records`` at once (see :class:`RecordWriter`)."""
    with RecordWriter(out) as writer:
        writer.write(records)
    return writer.path


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
