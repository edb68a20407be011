"""The `bloodcell data` commands: Typer wiring, tables, PNG output and one-sentence errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from datafakes import make_tree
from PIL import Image
from typer.testing import CliRunner

from bloodcell.cli.data import app

runner = CliRunner()


def _run(*args, env_extra=None):
    env = {**os.environ, "BLOODCELL_NO_PROGRESS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "bloodcell", "data", *args], capture_output=True, text=True, env=env)


def test_errors_are_one_red_sentence_with_exit_1(tmp_path):
    result = _run("split", "nosuch", "--output", str(tmp_path / "m.csv"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("Error: unknown dataset 'nosuch'")
    assert len(result.stderr.strip().splitlines()) <= 2
    missing = _run("check", "pbc", "--data-root", str(tmp_path))
    assert missing.returncode == 1 and "not found under" in missing.stderr and "Traceback" not in missing.stderr
    ratios = _run("split", "pbc", "--ratios", "0.9,0.9,0.1", "--output", str(tmp_path / "m.csv"))
    assert ratios.returncode == 1 and "summing to 1" in ratios.stderr


def test_split_stats_and_list_commands(tmp_path):
    make_tree(tmp_path / "pbc", per_class=5)
    manifest = tmp_path / "m.csv"
    result = runner.invoke(app, ["split", "pbc", "--data-root", str(tmp_path), "--output", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "40 images; 0 unreadable excluded; 0 duplicate groups" in result.output
    assert "Warning: pbc: 40 images found, 17092" in result.output
    out = tmp_path / "stats"
    result = runner.invoke(app, ["stats", "pbc", "--data-root", str(tmp_path), "--manifest", str(manifest), "--output", str(out)])
    assert result.exit_code == 0, result.output
    counts = json.loads((out / "counts.json").read_text())
    assert counts["basophil"] == {"train": 3, "val": 1, "test": 1}
    with Image.open(out / "stats.png") as png:
        assert png.size[0] > 400 and png.size[1] > 400
    (tmp_path / "afile").write_text("x")
    refused = runner.invoke(app, ["stats", "pbc", "--data-root", str(tmp_path), "-o", str(tmp_path / "afile")])
    assert refused.exit_code != 0 and "afile: is a file, not a folder for the dataset statistics" in str(refused.exception)
    listing = runner.invoke(app, ["list", "--data-root", str(tmp_path)], env={"COLUMNS": "200"})
    assert listing.exit_code == 0
    line = next(l for l in listing.output.splitlines() if "│ pbc " in l)
    assert str(tmp_path / "pbc") in line
    assert "not found" in next(l for l in listing.output.splitlines() if "bloodmnist" in l)
