"""Photos kept by content: ``<folder>/<sha256[:2]>/<sha256>``; no name given by a user ever reaches a path."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from bloodcell.store.errors import NotFoundError, StoreError

_SHA256 = re.compile(r"[0-9a-f]{64}")


class PhotoFolder:
    """Content-addressed photo files; writes are atomic (a temporary file renamed into place)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        """The file of ``sha256``; StoreError for anything but 64 lowercase hex digits."""
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
            raise StoreError(f"{sha256!r} is not a photo's SHA-256")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Keep ``data``; returns its SHA-256 (the same bytes are kept once)."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.is_file():
            return digest
        temporary = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except OSError as exc:
            if temporary:
                Path(temporary).unlink(missing_ok=True)
            raise StoreError(f"{self.root}: cannot keep the photo ({exc.strerror or exc})") from None
        return digest

    def get(self, sha256: str) -> bytes:
        path = self.path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"photo {sha256} is missing from {self.root}") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise StoreError(f"{path}: the photo file was changed on disk (its SHA-256 no longer matches)")
        return data
