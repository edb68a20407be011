"""Download registry datasets: HTTP Range resume, checksum check, zip/tar extraction.

Without network, fails with one sentence naming the URL and the folder to put files in.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from bloodcell.data.locate import candidates, data_home, looks_like
from bloodcell.data.registry import DatasetInfo, DownloadFile, get_dataset
from bloodcell.errors import DataError
from bloodcell.progress import progress_enabled

CHUNK = 1 << 16


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: Path, checksum: str | None) -> None:
    """Raise ``DataError`` when ``path`` does not match ``"md5:<hex>"``/``"sha256:<hex>"``."""
    if checksum is None:
        return
    algorithm, _, expected = checksum.partition(":")
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise DataError(f"{path.name} failed its {algorithm} check (expected {expected}, got {actual}); it was deleted, retry the download")


def download(url: str, dest: Path, checksum: str | None = None, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest``, resuming a partial ``dest.part`` with an HTTP Range request."""
    if dest.is_file():
        try:
            verify_checksum(dest, checksum)
            return dest
        except DataError:
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "bloodcell"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - registry URLs only
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            part.replace(dest)
            return _finish(dest, checksum)
        raise DataError(f"cannot download {url} (HTTP {exc.code}); download it by hand and put it in {dest.parent}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot download {url} ({reason}); download it by hand and put it in {dest.parent}") from None
    with response:
        if offset and response.status != 206:
            offset = 0  # server ignored the Range header: start again
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        with part.open("ab" if offset else "wb") as handle, _bar(dest.name, total, offset) as advance:
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    handle.write(block)
                    advance(len(block))
            except (OSError, urllib.error.URLError) as exc:
                raise DataError(f"download of {url} was interrupted ({exc}); run the command again to resume") from None
    part.replace(dest)
    return _finish(dest, checksum)


def _finish(dest: Path, checksum: str | None) -> Path:
    try:
        verify_checksum(dest, checksum)
    except DataError:
        dest.unlink()
        raise
    return dest


class _bar:
    """Context manager yielding an ``advance(n)`` callable backed by a Rich download bar."""

    def __init__(self, name: str, total: int | None, done: int) -> None:
        self.progress = None
        if progress_enabled():
            self.progress = Progress(
                TextColumn(name), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), transient=True
            )
            self.task = self.progress.add_task(name, total=total, completed=done)

    def __enter__(self):
        if self.progress is None:
            return lambda n: None
        self.progress.start()
        return lambda n: self.progress.advance(self.task, n)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


def _safe_target(base: Path, member: str) -> Path:
    target = (base / member).resolve()
    if not target.is_relative_to(base.resolve()):
        raise DataError(f"archive member {member!r} would be written outside {base}; refusing to extract")
    return target


def extract(archive: Path, dest: Path) -> None:
    """Extract a zip or tar archive into ``dest`` (refusing members that escape it)."""
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                _safe_target(dest, member.filename)
            zf.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                _safe_target(dest, member.name)
                if member.issym() or member.islnk():
                    raise DataError(f"archive {archive.name} contains link {member.name!r}; refusing to extract")
            tf.extractall(dest, filter="data")
    else:
        raise DataError(f"{archive} is neither a zip nor a tar archive")


def fetch_dataset(
    name: str | DatasetInfo, data_root: str | Path | None = None, variants: list[str] | None = None
) -> Path:
    """Download, verify and extract dataset ``name`` under the data home; return its folder."""
    info = name if isinstance(name, DatasetInfo) else get_dataset(name)
    home = data_home(data_root)
    target = home / info.name
    if info.local_only or not info.files:
        raise DataError(f"dataset {info.name!r} is local only; place it under {target}")
    selected = set(variants) if variants else {info.files[0].variant}
    files = [f for f in info.files if f.variant is None or f.variant in selected]
    if not files:
        raise DataError(f"no download of {info.name} matches {', '.join(variants or [])}")
    for item in files:
        _fetch_file(item, target)
    for folder in candidates(info, home):
        if looks_like(info, folder):
            return folder
    raise DataError(f"downloaded {info.name} into {target} but its layout was not recognised; check the files there")


def _fetch_file(item: DownloadFile, target: Path) -> None:
    downloads = target / "downloads" if item.extract else target
    path = download(item.url, downloads / item.filename, item.checksum)
    if item.extract:
        extract(path, target)
        for nested in sorted(p for p in target.iterdir() if p.is_file() and p.suffix in (".zip", ".tar", ".gz", ".tgz")):
            extract(nested, target)
            nested.unlink()
        shutil.rmtree(downloads, ignore_errors=True)
