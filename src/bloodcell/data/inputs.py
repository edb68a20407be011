"""Command-line inputs (files, folders, globs) to image paths, with every unusable entry reported."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bloodcell.data.images import scan_folder
from bloodcell.errors import ConfigError
from bloodcell.provenance import file_sha256


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


def input_sha256(path: str | Path) -> str | None:
    """The SHA-256 of an input file's bytes (None when it cannot be read: its row says why)."""
    try:
        return file_sha256(path)
    except OSError:
        return None
