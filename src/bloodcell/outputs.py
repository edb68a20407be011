"""Checks of output places, made before any work starts, so that finished work is never lost to them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bloodcell.errors import ConfigError


def _writable(folder: Path, what: str) -> None:
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".bloodcell-write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot write the {what} there ({exc.strerror or exc})") from None


def check_output_folder(out: str | Path, what: str = "outputs") -> Path:
    """``out`` as an existing, writable folder (created when missing); ConfigError otherwise."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file, not a folder for the {what}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot create the folder for the {what} ({exc.strerror or exc})") from None
    _writable(out, what)
    return out


def refuse_to_replace(path: str | Path, overwrite: bool) -> None:
    """Refuse an existing ``path`` (an earlier export, a filled-in file) unless ``overwrite``: ConfigError."""
    if not overwrite and os.path.lexists(path):
        raise ConfigError(f"{path} exists; choose another --output or pass --overwrite")


def check_output_file(path: str | Path, suffixes: Sequence[str], what: str = "results", *,
                      replace: bool = True) -> Path:
    """``path`` as a file that can be written (suffix in ``suffixes``; its folder created; an existing file only
    with ``replace``: :func:`refuse_to_replace`); ConfigError otherwise."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"{path}: the {what} file must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give a file name for the {what}")
    refuse_to_replace(path, replace)
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{path}: the file exists and cannot be overwritten")
    check_output_folder(path.parent if str(path.parent) else Path("."), what)
    return path
