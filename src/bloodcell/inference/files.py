"""Command-line inputs (files, folders, globs) to image paths with every unusable entry reported, and
result files written as results come (a late failure keeps what was done)."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bloodcell.data.images import scan_folder
from bloodcell.errors import ConfigError, DataError
from bloodcell.outputs import check_output_file
from bloodcell.provenance import file_sha256
from bloodcell.writing import name_text, write_failed

#: CSV/JSON fields of a prediction, in output order.
RECORD_FIELDS = ("path", "label", "confidence", "referred", "top_k", "error", "reason", "note", "sha256")
_SHA256 = re.compile(r"[0-9a-f]{64}")
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
    """Writes prediction records to ``.csv`` (columns :data:`RECORD_FIELDS`) or ``.json`` as they come.

    Records go to ``<output>.part`` (:func:`partial_path`) batch by batch and the file is finished and renamed
    over the output at the end of the block, also when the block ends in an error or Ctrl-C (the records done
    so far, each whole), so the output is never half a file. A write that fails (a full disk) cuts the
    ``.part`` back to its whole records, leaves it there and raises :class:`OutputError` saying how many it
    keeps; so does a killed run. :func:`read_records` reads either back for a resumed run.
    File names that are not valid UTF-8 are written with ``\\xNN`` escapes (:func:`~bloodcell.writing.name_text`).
    """

    def __init__(self, out: str | Path):
        self.path = check_records_path(out)
        self.partial = partial_path(self.path)
        self.json = self.path.suffix.lower() == ".json"
        self.count = 0
        self._complete = 0  # bytes of the .part holding whole records
        self._failed = False
        try:
            self._handle: IO[str] = self.partial.open("w", newline="", encoding="utf-8")
        except OSError as exc:
            raise write_failed(self.path, exc) from None
        self._guard(self._start)

    def _start(self) -> None:
        if self.json:
            self._handle.write("[")
        else:
            self._csv = csv.DictWriter(self._handle, fieldnames=RECORD_FIELDS)
            self._csv.writeheader()

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` (all of them, or none when the disk is full)."""
        self._guard(self._write, records)
        self.count += len(records)

    def _write(self, records: list[dict[str, Any]]) -> None:
        for number, record in enumerate(records, start=self.count):
            row = {k: record.get(k) for k in RECORD_FIELDS}
            if isinstance(row["path"], str):
                row["path"] = name_text(row["path"])
            if self.json:
                self._handle.write(("," if number else "") + "\n  " + json.dumps(row))
            else:
                self._csv.writerow({k: _csv_value(v) for k, v in row.items()})

    def _guard(self, step, *args) -> None:
        """Run one step of writing and flush it; on an OSError keep only whole records and raise OutputError."""
        try:
            step(*args)
            self._handle.flush()
            self._complete = os.fstat(self._handle.fileno()).st_size
        except OSError as exc:
            self._failed = True
            self._abandon()
            os.truncate(self.partial, self._complete)
            kept = (f"the {self.count} results finished are kept in {name_text(str(self.partial))}; make room and "
                    f"rerun the same command with --resume to finish") if self.count else "nothing was finished"
            raise write_failed(self.path, exc, kept) from None

    def _abandon(self) -> None:
        try:
            self._handle.close()
        except OSError:
            pass  # its buffer could not be written: the .part is cut back to whole records

    def close(self) -> None:
        """Finish the file and put it in place of the output."""
        self._guard(self._handle.write, "\n]\n" if self.json else "")
        self._handle.close()
        os.replace(self.partial, self.path)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *_) -> None:
        if not self._failed:  # also after an error or Ctrl-C: the records done so far, as a whole file
            self.close()


def partial_path(out: Path) -> Path:
    """Where a records file is written until complete: ``<name>.part`` beside it."""
    return out.with_name(out.name + ".part")


def input_sha256(path: str | Path) -> str | None:
    """The SHA-256 of an input file's bytes (None when it cannot be read: its row says why)."""
    try:
        return file_sha256(path)
    except OSError:
        return None


def read_records(out: str | Path) -> list[dict[str, Any]]:
    """The whole records of an earlier run into ``out`` (its ``.part`` when there is one, else the output)
    that carry a file hash: the ones a resumed run keeps. A record cut short by a crash is left out."""
    out = Path(out)
    source = next((p for p in (partial_path(out), out) if p.is_file()), None)
    if source is None:
        return []
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{source}: cannot read the earlier results to resume ({exc}); remove it or rerun "
                        "without --resume") from None
    if out.suffix.lower() == ".json":
        rows = []
        for line in text.splitlines():
            try:
                rows.append(json.loads(line.strip().rstrip(",")))
            except ValueError:
                continue  # the brackets, or a record cut short
    else:
        try:
            rows = list(csv.DictReader(io.StringIO(text)))
        except csv.Error:  # a record cut short past the field size limit: nothing trustworthy to keep
            rows = []
    return [{k: _from_csv(row.get(k)) for k in RECORD_FIELDS} for row in rows
            if isinstance(row, dict) and _SHA256.fullmatch(str(row.get("sha256") or ""))]


def _from_csv(value: Any) -> Any:
    return None if value == "" else value


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
