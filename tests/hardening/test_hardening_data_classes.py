"""Hardening item 9 (last part): `bloodcell data check` and `data split` speak up about an empty class
folder and about a dataset of a single class, and `split` refuses fewer than two classes with images."""

from __future__ import annotations

from pathlib import Path

import pytest
from hardening_helpers import cell_png
from typer.testing import CliRunner

from bloodcell.cli.data import app
from bloodcell.errors import DataError

runner = CliRunner()


def _dataset(root: Path, images: dict[str, int], unreadable: dict[str, int] | None = None) -> Path:
    """``root/<class>/`` folders with the given numbers of images (0: an empty folder) and of unreadable files."""
    seed = 0
    for label, n in images.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(n):
            cell_png(root / label / f"{label}_{index}.png", seed=seed, size=32)
            seed += 1
    for label, n in (unreadable or {}).items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for index in range(n):
            (root / label / f"broken_{index}.png").write_bytes(b"not a PNG at all")
    return root


def _warnings(output: str) -> list[str]:
    """The warning sentences of a command's output (Rich may wrap one over several lines)."""
    text = " ".join(output.split())
    return [part.split(" Warning:")[0].strip() for part in text.split("Warning: ")[1:]]


def test_check_warns_once_about_an_empty_class_folder(tmp_path):
    root = _dataset(tmp_path / "cells", {"alpha": 3, "beta": 3, "gamma": 0})
    result = runner.invoke(app, ["check", "folder", "--data-root", str(root)])
    assert result.exit_code == 0, result.output
    warnings = _warnings(result.output)
    assert sum("holds no images" in w for w in warnings) == 1
    assert any(f"class folder {root / 'gamma'} holds no images" in w for w in warnings)
    assert not any("only one class" in w for w in warnings)


def test_check_warns_about_a_single_class(tmp_path):
    root = _dataset(tmp_path / "cells", {"alpha": 3, "beta": 0})
    result = runner.invoke(app, ["check", "folder", "--data-root", str(root)])
    assert result.exit_code == 0, result.output
    warnings = _warnings(result.output)
    assert any(f"class folder {root / 'beta'} holds no images" in w for w in warnings)
    assert any("only one class (alpha) has images" in w and "at least two" in w for w in warnings)


def test_split_warns_about_an_empty_class_folder_and_still_splits(tmp_path):
    root = _dataset(tmp_path / "cells", {"alpha": 4, "beta": 4, "gamma": 0})
    manifest = tmp_path / "m.csv"
    result = runner.invoke(app, ["split", "folder", "--data-root", str(root), "--output", str(manifest),
                                 "--near-distance", "-1"])
    assert result.exit_code == 0, result.output
    assert any(f"class folder {root / 'gamma'} holds no images" in w for w in _warnings(result.output))
    assert manifest.is_file()


@pytest.mark.parametrize("layout", [{"images": {"alpha": 4, "beta": 0}},
                                    {"images": {"alpha": 4}, "unreadable": {"beta": 3}}],
                         ids=["empty second class", "second class of unreadable files only"])
def test_split_refuses_fewer_than_two_classes_with_images(tmp_path, layout):
    root = _dataset(tmp_path / "cells", layout["images"], layout.get("unreadable"))
    manifest = tmp_path / "m.csv"
    result = runner.invoke(app, ["split", "folder", "--data-root", str(root), "--output", str(manifest),
                                 "--near-distance", "-1"])
    assert result.exit_code == 1
    assert isinstance(result.exception, DataError)
    assert "only one class (alpha) has readable images" in str(result.exception)
    assert "\n" not in str(result.exception)
    assert not manifest.exists()
