"""Expand command-line inputs (files, folders, globs) into image paths, and write results."""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Sequence
from pathlib import Path

from bloodcell.data.images import image_files
from bloodcell.errors import ConfigError

#: CSV/JSON fields of a prediction, in output order.
RECORD_FIELDS = ("path", "label", "confidence", "referred", "top_k", "error", "reason")


def collect_image_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given (even with unusual extensions), folders searched recursively for
    image files, and glob patterns (``**`` allowed). Order is kept; duplicates are dropped.
    A missing path is kept so that it is reported as an error row."""
    found: list[Path] = []
    for raw in inputs:
        text = str(raw)
        path = Path(text)
        if path.is_dir():
            found.extend(image_files(path))
        elif not path.exists() and glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            if not matches:
                raise ConfigError(f"the pattern {text!r} matches no files")
            for match in matches:
                found.extend(image_files(match) if match.is_dir() else [match])
        else:
            found.append(path)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise ConfigError("no image files found in the given paths")
    return unique


def check_records_path(out: str | Path) -> Path:
    """``out`` as a Path; ``ConfigError`` unless it ends in ``.csv`` or ``.json``."""
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".json"):
        raise ConfigError(f"{out}: the output file must end in .csv or .json")
    return out


def write_records(records: list[dict], out: str | Path) -> Path:
    """Write prediction records as ``.csv`` (columns :data:`RECORD_FIELDS`) or ``.json``."""
    out = check_records_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps([{k: r.get(k) for k in RECORD_FIELDS} for r in records], indent=2) + "\n")
        return out
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RECORD_FIELDS)
        writer.writeheader()
        for record in records:
            writer.writerow({k: _csv_value(record.get(k)) for k in RECORD_FIELDS})
    return out


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
