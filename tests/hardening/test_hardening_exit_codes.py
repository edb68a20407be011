"""Hardening item 7: `predict` and `count` agree: exit 1 when nothing could be processed, 0 otherwise."""

from __future__ import annotations

import pytest
from hardening_helpers import cell_png, save_tiny
from typer.testing import CliRunner

from bloodcell.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "tiny.safetensors")


def _nothing_usable(folder):
    """A folder whose every entry is unusable: a text file named like an image, an empty file, a .gif."""
    folder.mkdir()
    (folder / "text.png").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "anim.gif").write_bytes(b"GIF89a" + bytes(20))
    return folder


@pytest.mark.parametrize("command", ["predict", "count"])
def test_nothing_processed_exits_1(tmp_path, checkpoint, command):
    folder = _nothing_usable(tmp_path / "in")
    args = [command, str(folder), "--model", str(checkpoint)]
    if command == "count":
        args += ["--output", str(tmp_path / "out"), "--detector", "classical"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"no {'image could be classified' if command == 'predict' else 'photo could be counted'}" in result.stderr


@pytest.mark.parametrize("command", ["predict", "count"])
def test_nothing_but_unsupported_formats_exits_1(tmp_path, checkpoint, command):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "anim.gif").write_bytes(b"GIF89a" + bytes(20))
    args = [command, str(folder), "--model", str(checkpoint)]
    if command == "count":
        args += ["--output", str(tmp_path / "out"), "--detector", "classical"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert ".gif images are not supported" in result.stderr


@pytest.mark.parametrize("command", ["predict", "count"])
def test_one_usable_input_among_bad_ones_exits_0(tmp_path, checkpoint, command):
    folder = _nothing_usable(tmp_path / "in")
    cell_png(folder / "good.png", size=96)
    args = [command, str(folder), "--model", str(checkpoint)]
    if command == "count":
        args += ["--output", str(tmp_path / "out"), "--detector", "classical"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
