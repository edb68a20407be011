"""Hardening item 3 (and the symlink-loop part of item 9): no file disappears from a folder scan.

Every entry found is processed, reported with a reason, or counted as an other file: through
``bloodcell predict`` and ``bloodcell count``, and property-based over random folder trees.
The tests run as root, where permissions do not stop reading: an unreadable folder is
simulated by making ``os.scandir`` refuse it, as the kernel would for another user.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import stat
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from hardening_helpers import cell_png, save_tiny
from hypothesis import given, note, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bloodcell.cli.main import app
from bloodcell.data import images
from bloodcell.data.images import read_image, scan_folder
from bloodcell.errors import ImageError

runner = CliRunner()


@contextmanager
def unreadable(*folders: Path):
    """``os.scandir`` refuses ``folders`` (by real path, so links to them are refused too)."""
    refused = {os.path.realpath(f) for f in folders}
    real = os.scandir

    def scandir(path="."):
        if os.path.realpath(path) in refused:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path)

    with mock.patch.object(os, "scandir", scandir):
        yield


def _awkward_folder(root: Path, photo_side: int) -> dict[str, str]:
    """One usable image and one entry of every awkward kind; returns {entry: words its report must hold}."""
    cell_png(root / "good.png", size=photo_side)
    (root / "notes.txt").write_text("not an image, only counted")
    (root / "anim.gif").write_bytes(b"GIF89a" + bytes(20))
    (root / "photo.heic").write_bytes(bytes(20))
    (root / "self.png").symlink_to("self.png")
    (root / "broken.jpg").symlink_to(root / "missing.jpg")
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to(root)
    (root / "locked").mkdir()
    cell_png(root / "locked" / "hidden_from_us.png")
    return {"anim.gif": ".gif images are not supported", "photo.heic": ".heic images are not supported",
            "self.png": "symbolic link loop", "broken.jpg": "broken symbolic link",
            "sub/up": "leads back into a folder already scanned", "locked": "folder cannot be read"}


def test_predict_reports_every_folder_entry_it_cannot_use(tmp_path):
    folder = tmp_path / "cells"
    expected = _awkward_folder(folder, 24)
    checkpoint = save_tiny(tmp_path / "tiny.safetensors")
    out = tmp_path / "p.csv"
    with unreadable(folder / "locked"):
        result = runner.invoke(app, ["predict", str(folder), "--model", str(checkpoint), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 images" in result.stdout
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == len(expected), result.stderr
    for entry, words in expected.items():
        assert any(f"skipped {folder / entry}: " in line and words in line for line in skipped), (entry, skipped)
    with out.open(newline="") as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    assert {str(folder / entry) for entry in expected} < set(rows)  # an error row each, besides the one image
    assert all(words in rows[str(folder / entry)]["error"] for entry, words in expected.items())


def test_count_reports_every_folder_entry_it_cannot_use(tmp_path):
    folder = tmp_path / "smears"
    expected = _awkward_folder(folder, 96)
    checkpoint = save_tiny(tmp_path / "tiny.safetensors")
    out = tmp_path / "counts"
    with unreadable(folder / "locked"):
        result = runner.invoke(app, ["count", str(folder), "--output", str(out), "--model", str(checkpoint),
                                     "--detector", "classical"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "counts.json").read_text())
    assert [Path(e["path"]).name for e in doc["images"]] == ["good.png"]
    errors = {str(Path(e["path"]).relative_to(folder)): e["error"] for e in doc["errors"]}
    assert set(errors) == set(expected)
    for entry, words in expected.items():
        assert words in errors[entry]
        assert f"skipped {folder / entry}: " in result.stderr
    assert f"1 photos counted, {len(expected)} skipped" in result.stdout


def test_reading_a_symlink_loop_says_so(tmp_path):
    loop = tmp_path / "loop.png"
    loop.symlink_to("loop.png")
    with pytest.raises(ImageError, match="symbolic link loop"):
        read_image(loop)
    broken = tmp_path / "broken.png"
    broken.symlink_to(tmp_path / "gone.png")
    with pytest.raises(ImageError, match="broken symbolic link"):
        read_image(broken)
    with pytest.raises(ImageError, match="file not found"):
        read_image(tmp_path / "never.png")


def test_reading_a_fifo_named_like_an_image_does_not_hang(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        read_image(fifo)


def test_a_file_too_large_for_an_image_is_refused_before_reading(tmp_path, monkeypatch):
    big = tmp_path / "scan.tif"
    with big.open("wb") as handle:  # sparse: no disk used
        handle.seek(images.MAX_FILE_BYTES)
        handle.write(b"\0")
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the file was read"))
    with pytest.raises(ImageError, match="file too large for an image"):
        read_image(big)


# ---- property: random trees ------------------------------------------------------------------------

IMAGE_NAMES = [".png", ".jpg", ".JPEG", ".tif", ".webp", ".bmp"]
UNSUPPORTED_NAMES = [".gif", ".heic", ".HEIF", ".svg", ".dng"]
OTHER_NAMES = [".txt", ".csv", ".xml", ""]
KINDS = ["dir", "hidden_dir", "unreadable_dir", "image", "unsupported", "hidden_image", "hidden_unsupported",
         "text", "link_file", "link_dir", "broken", "loop"]

steps = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 1000), st.integers(0, 1000),
                           st.sampled_from(IMAGE_NAMES + UNSUPPORTED_NAMES + OTHER_NAMES)), max_size=30)


def _build(root: Path, plan) -> set[Path]:
    """Create the entries of ``plan``; returns the folders to make unreadable."""
    folders, files, locked = [root], [], set()
    for index, (kind, where, target, suffix) in enumerate(plan):
        parent = folders[where % len(folders)]
        if kind in ("dir", "hidden_dir", "unreadable_dir"):
            folder = parent / {"dir": f"d{index}", "hidden_dir": f".h{index}", "unreadable_dir": f"u{index}"}[kind]
            folder.mkdir()
            folders.append(folder)
            if kind == "unreadable_dir":
                locked.add(folder)
        elif kind in ("image", "unsupported", "hidden_image", "hidden_unsupported", "text"):
            suffix = {"image": IMAGE_NAMES, "unsupported": UNSUPPORTED_NAMES, "text": OTHER_NAMES,
                      "hidden_image": IMAGE_NAMES, "hidden_unsupported": UNSUPPORTED_NAMES}[kind][target % 4]
            path = parent / f"{'.' if kind.startswith('hidden') else ''}f{index}{suffix}"
            path.write_bytes(b"content")
            files.append(path)
        elif kind == "link_file" and files:
            (parent / f"l{index}{suffix}").symlink_to(files[target % len(files)])
        elif kind == "link_dir":
            (parent / f"ld{index}").symlink_to(folders[target % len(folders)])
        elif kind == "broken":
            (parent / f"b{index}{suffix}").symlink_to(parent / f"missing{index}")
        elif kind == "loop":
            (parent / f"o{index}{suffix}").symlink_to(f"o{index}{suffix}")
    return locked


def _expected(root: Path, locked: set[Path]):
    """What a scan must account for, by (real folder, entry name): every folder reachable from the root
    (through sub-folders and links) is listed once; each further arrival at it is a reported loop, each
    arrival at an unreadable folder a reported folder problem."""
    locked_real = {os.path.realpath(f) for f in locked}
    images, problems, others = Counter(), Counter(), 0
    listed: set[str] = set()
    arrivals = Counter()
    stack = [os.path.realpath(root)]
    while stack:
        folder = stack.pop()
        arrivals[folder] += 1
        if folder in locked_real or folder in listed:
            continue
        listed.add(folder)
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            try:
                info = os.stat(path)
            except OSError:
                problems[(folder, name)] += 1
                continue
            if stat.S_ISDIR(info.st_mode):
                stack.append(os.path.realpath(path))
                continue
            suffix, visible = os.path.splitext(name)[1].lower(), not name.startswith(".")
            if visible and suffix in {s.lower() for s in IMAGE_NAMES}:
                images[(folder, name)] += 1
            elif visible and suffix in {s.lower() for s in UNSUPPORTED_NAMES}:
                problems[(folder, name)] += 1
            else:
                others += 1
    loops = sum(n - 1 for f, n in arrivals.items() if f not in locked_real)
    refused = sum(n for f, n in arrivals.items() if f in locked_real)
    return images, problems, others, loops, refused


def _key(path: str) -> tuple[str, str]:
    return os.path.realpath(os.path.dirname(path)), os.path.basename(path)


@settings(max_examples=150, deadline=None)
@given(plan=steps)
def test_every_entry_of_a_random_tree_is_processed_reported_or_counted(plan):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        locked = _build(root, plan)
        images, problems, others, loops, refused = _expected(root, locked)
        with unreadable(*locked):
            scan = scan_folder(root)
        note(f"expected images {sorted(images)}, problems {sorted(problems)}; found {scan}")
        # keys are real paths: taken while the tree (and its links) still exists
        found_images = Counter(_key(str(p)) for p in scan.images)
        found_problems = Counter(_key(p) for p, reason in scan.problems
                                 if not reason.startswith(("folder cannot be read", "a symbolic link leads back")))
    assert found_images == images
    assert found_problems == problems
    assert scan.other_files == others
    assert sum("leads back into a folder already scanned" in r for _, r in scan.problems) == loops
    assert sum(r.startswith("folder cannot be read") for _, r in scan.problems) == refused
