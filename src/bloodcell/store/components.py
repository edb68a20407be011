"""The classifier and detector a sample was counted with: file name and SHA-256 of each model file."""

from __future__ import annotations

import getpass
from pathlib import Path

from bloodcell.provenance import file_sha256
from bloodcell.weights import DEFAULT_DETECTOR, resolve


def classifier_used(classifier) -> tuple[str | None, str | None]:
    source = getattr(classifier, "source", None)
    if not source or not Path(source).is_file():
        return (Path(source).name if source else None), None
    return Path(source).name, file_sha256(source)


def detector_used(detector: str) -> tuple[str, str | None]:
    if str(detector) == "classical":
        return "classical", None
    path = resolve(DEFAULT_DETECTOR if str(detector) in ("learned", DEFAULT_DETECTOR) else detector)
    return path.name, file_sha256(path)


def system_account() -> str:
    """Who ran a command-line job, as the operating system names them (for the audit trail)."""
    try:
        return f"{getpass.getuser()} (system account)"
    except (OSError, KeyError):
        return "unknown system account"
