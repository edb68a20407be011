"""Writing outputs: whole or not at all, under any file name the file system gave us.

Every output goes to a temporary file in its own folder and is renamed over its place once complete
(``os.replace``), so a reader never finds half a file under the final name. A write that fails (a full
disk, a lost mount) removes the temporary file and raises :class:`~bloodcell.errors.OutputError`, one
sentence. File names are data: a name that is not valid UTF-8 (from a Windows or Latin-1 lab PC; Python
holds its bytes as surrogate escapes) is written into text outputs with ``\\xNN`` escapes for those bytes
(:func:`name_text`, reversed by :func:`name_from_text`), and an output named after an input is
shortened with a hash of its full name when it would be longer than a file name may be.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from bloodcell.errors import OutputError

#: Longest file name (bytes) on common file systems (ext4, APFS, NTFS in UTF-16 units).
MAX_NAME_BYTES = 255
_ESCAPED = re.compile(r"\\x([89a-f][0-9a-f])")


def name_text(name: str) -> str:
    """``name`` as valid UTF-8 text: bytes that were not UTF-8 (surrogate escapes) become ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def name_from_text(text: str) -> str:
    """The file-system name behind :func:`name_text`'s text (``\\xNN`` escapes back to their bytes)."""
    return _ESCAPED.sub(lambda match: chr(0xDC00 + int(match.group(1), 16)), text)


def is_escaped(name: str) -> bool:
    """Whether :func:`name_text` changes ``name`` (it is not valid UTF-8)."""
    return name_text(name) != name


def output_name(stem: str, suffix: str, used: set[str] | None = None) -> str:
    """A file name ``<stem><suffix>`` for an output named after an input: valid UTF-8 (:func:`name_text`),
    at most :data:`MAX_NAME_BYTES` bytes (a long stem is cut and a hash of all of it added) and, with
    ``used``, not in ``used`` (``_2``, ``_3``, ... added; the name is added to ``used``)."""
    text = name_text(stem)
    room = MAX_NAME_BYTES - len(suffix.encode()) - 12  # room for "-<8 hex>" and "_NN"
    if len(text.encode()) > room:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        text = text.encode()[:room - 9].decode("utf-8", "ignore") + "-" + digest
    name, n = f"{text}{suffix}", 1
    while used is not None and name in used:
        n += 1
        name = f"{text}_{n}{suffix}"
    if used is not None:
        used.add(name)
    return name


def write_failed(path: Path, exc: OSError, kept: str = "") -> OutputError:
    """The one sentence of a failed write of ``path`` (``kept``: what survives, e.g. the results finished)."""
    reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    return OutputError(f"{name_text(str(path))}: cannot write it ({reason}); "
                       + (kept or "nothing was written there"))


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file :func:`atomic_file` leaves only when its process is killed."""
    return name.startswith(".") and name.endswith(".part")


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", **open_args: Any) -> Iterator[IO]:
    """A handle on a temporary file beside ``path`` that replaces ``path`` when the block ends without error.

    On an error the temporary file is removed (``path`` is untouched) and an ``OSError`` becomes
    :class:`OutputError`. Text mode defaults to UTF-8 and ``newline=""``.
    """
    path = Path(path)
    if "b" not in mode:
        open_args = {"encoding": "utf-8", "newline": "", **open_args}
    temporary = path.parent / f".{output_name(path.stem, '')[:40]}.{secrets.token_hex(4)}.part"
    try:
        handle = open(temporary, mode.replace("w", "x"), **open_args)  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise write_failed(path, exc) from None
    try:
        with handle:
            yield handle
        os.replace(temporary, path)
    except OSError as exc:
        _remove(temporary)
        raise write_failed(path, exc) from None
    except BaseException:
        _remove(temporary)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all."""
    with atomic_file(path) as handle:
        handle.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all."""
    with atomic_file(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_json(path: str | Path, data: Any, **dumps_args: Any) -> Path:
    """Write ``data`` as indented JSON (one trailing newline) to ``path`` whole or not at all."""
    return write_text(path, json.dumps(data, **{"indent": 2, **dumps_args}) + "\n")


def save_figure(figure, path: str | Path, **savefig_args: Any) -> Path:
    """Save a Matplotlib figure as a PNG at ``path`` whole or not at all."""
    with atomic_file(path, "wb") as handle:
        figure.savefig(handle, format="png", **savefig_args)
    return Path(path)


def save_image(image, path: str | Path, format: str = "PNG", **save_args: Any) -> Path:
    """Save a PIL image to ``path`` whole or not at all."""
    with atomic_file(path, "wb") as handle:
        image.save(handle, format=format, **save_args)
    return Path(path)


def _remove(path: Path) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
