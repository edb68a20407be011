"""Prediction records files (``.csv`` or ``.json``): written as results come (a late failure keeps what was
done) and read back for a resumed run."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import IO, Any

from bloodcell.data.tables import csv_rows
from bloodcell.errors import DataError
from bloodcell.outputs import check_output_file
from bloodcell.writing import name_text, write_failed

#: CSV/JSON fields of a prediction, in output order (``made_with``: the model file, its SHA-256 and the options that
#: change a result, so that a resumed run keeps only results made the same way).
RECORD_FIELDS = ("path", "label", "confidence", "referred", "top_k", "error", "reason", "note", "sha256", "made_with")
_SHA256 = re.compile(r"[0-9a-f]{64}")
RECORD_SUFFIXES = (".csv", ".json")


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
            rows = csv_rows(text, str(source), max_bytes=len(text))[1]
        except DataError:  # a record cut short past the field size limit: nothing trustworthy to keep
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
