"""The one CSV reader: a CSV file or text to its header and rows, every problem one sentence (DataError).

A byte-order mark (a spreadsheet's export) is not part of the first column; the text is bounded
(``max_bytes``) before parsing and each field (``max_field``) while parsing, so no ``_csv.Error``
escapes; a file lacking one of the ``columns`` a reader needs is refused by name.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from bloodcell.errors import DataError

#: Largest CSV text read by default.
MAX_CSV_BYTES = 32 * 1024 * 1024
#: Longest field read by default (names, labels and reasons are far shorter).
MAX_FIELD_CHARS = 10_000


def csv_rows(text: str, where: str, max_bytes: int = MAX_CSV_BYTES,
             max_field: int = MAX_FIELD_CHARS) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of a CSV text; DataError when it is too large, a field too long or the CSV broken."""
    if len(text) > max_bytes:
        raise DataError(f"{where}: {len(text)} characters, more than the {max_bytes} limit")
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    rows = []
    try:
        for line, row in enumerate(reader, start=2):
            values = [x for v in row.values() for x in (v if isinstance(v, list) else [v])]  # extras are a list
            if any(isinstance(v, str) and len(v) > max_field for v in values):
                raise DataError(f"{where} line {line}: a field is longer than {max_field} characters")
            rows.append(row)
    except csv.Error as exc:
        raise DataError(f"{where} line {reader.line_num}: not a readable CSV ({exc})") from None
    fields = list(reader.fieldnames or [])
    if any(len(name) > max_field for name in fields):
        raise DataError(f"{where}: a column name is longer than {max_field} characters")
    return fields, rows


def read_csv(path: str | Path, what: str, columns: Sequence[str] = (), max_bytes: int = MAX_CSV_BYTES,
             max_field: int = MAX_FIELD_CHARS) -> tuple[list[str], list[dict[str, str]]]:
    """The header and rows of the CSV file ``path`` (``what`` names it in messages: "manifest", "samples file")
    that has at least ``columns``; DataError (one sentence) when it is missing, unreadable, too large, not UTF-8,
    not a CSV or lacks one of them."""
    return csv_from_bytes(csv_file_bytes(path, what, max_bytes), path, what, columns, max_field)


def csv_file_bytes(path: str | Path, what: str, max_bytes: int = MAX_CSV_BYTES) -> bytes:
    """The bytes of the CSV file ``path`` (for a reader that also hashes them); DataError when it is missing,
    unreadable or larger than ``max_bytes``."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise DataError(f"{path}: {size} bytes, more than the {max_bytes} byte limit for the {what}")
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def csv_from_bytes(data: bytes, path: str | Path, what: str, columns: Sequence[str] = (),
                   max_field: int = MAX_FIELD_CHARS) -> tuple[list[str], list[dict[str, str]]]:
    """:func:`read_csv` of bytes already read from ``path``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: cannot read the {what} (it is not UTF-8 text)") from None
    fields, rows = csv_rows(text, str(path), max(len(text), 1), max_field)
    missing = [c for c in columns if c not in fields]
    if missing:
        named = columns[0] if len(columns) == 1 else f"{', '.join(columns[:-1])} and {columns[-1]}"
        raise DataError(f"{path}: the {what} lacks column(s) {', '.join(missing)} (expected the "
                        f"column{'s' if len(columns) > 1 else ''} {named})")
    return fields, rows
