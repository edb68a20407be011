"""Bad input at the command line: one sentence on stderr and exit code 1, nothing else printed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest


def _bloodcell(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bloodcell", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, "BLOODCELL_NO_PROGRESS": "1", "COLUMNS": "200"})


def _one_sentence(done: subprocess.CompletedProcess, expected: str) -> None:
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip() == f"Error: {expected}"


@pytest.mark.parametrize("command", [["predict"], ["count", "--detector", "classical", "-o", "out"]],
                         ids=["predict", "count"])
def test_a_missing_input_is_one_sentence(command, tmp_path):
    _one_sentence(_bloodcell(*command[:1], "nosuch/", *command[1:], cwd=tmp_path), "nosuch/: no such file or folder")
    _one_sentence(_bloodcell(*command[:1], "missing.jpg", *command[1:], cwd=tmp_path),
                  "missing.jpg: no such file or folder")
    _one_sentence(_bloodcell(*command[:1], "a.jpg", "b.jpg", *command[1:], cwd=tmp_path),
                  "none of the paths given exists (a.jpg, b.jpg)")
    assert not (tmp_path / "out").exists()  # no empty output folder left behind


@pytest.mark.parametrize("command", [["predict"], ["count", "--detector", "classical", "-o", "out"]],
                         ids=["predict", "count"])
def test_an_input_without_images_is_one_sentence(command, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    _one_sentence(_bloodcell(command[0], "empty", *command[1:], cwd=tmp_path), "no image files found in empty")
    assert not (tmp_path / "out").exists()


def test_count_evaluate_without_labels_is_refused_before_counting(tmp_path):
    from PIL import Image

    (tmp_path / "S-1").mkdir()
    Image.new("RGB", (64, 48), (200, 150, 150)).save(tmp_path / "S-1" / "p.png")
    _one_sentence(_bloodcell("count", "S-1", "--detector", "classical", "-o", "out", "--evaluate", cwd=tmp_path),
                  "no labels found for the 1 photos (VOC ../Annotations/<stem>.xml or YOLO ../labels/<stem>.txt "
                  "beside the images folder, or pass --labels DIR)")
    assert not (tmp_path / "out").exists()  # nothing was counted
    for bad in (["--detector", "nosuch.safetensors"], ["--model", "nosuch.safetensors"]):
        refused = _bloodcell("count", "S-1", "-o", "out", *bad, cwd=tmp_path)
        assert refused.returncode != 0 and "nosuch.safetensors" in refused.stderr
        assert not (tmp_path / "out").exists(), bad  # no empty output folder left behind


def test_a_missing_file_among_others_is_still_a_row(tmp_path):
    from bloodcell.data.inputs import collect_inputs

    (tmp_path / "cell.png").write_bytes(b"not really")
    inputs = collect_inputs([tmp_path / "cell.png", tmp_path / "gone.png"])
    assert inputs.paths == [tmp_path / "cell.png", tmp_path / "gone.png"]  # the missing one becomes an error row


def test_serve_on_a_port_in_use_is_one_sentence_and_exit_1():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _bloodcell("serve", "--port", str(port))
    _one_sentence(done, f"port {port} on 127.0.0.1 is already in use; stop what listens there or choose another "
                        "port with --port")
