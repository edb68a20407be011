"""A folder of sample folders (``count samples/``): what lies beside and inside them is reported, never merged."""

from __future__ import annotations

import json

import pytest
from hardening_helpers import cell_png, save_tiny
from typer.testing import CliRunner

from bloodcell.cli.main import app
from bloodcell.errors import DataError

runner = CliRunner()


@pytest.fixture()
def samples(tmp_path):
    """``samples/a/`` and ``samples/b/``, one smear photo each, and a tiny typing checkpoint."""
    root = tmp_path / "samples"
    cell_png(root / "a" / "smear_a.png", size=96)
    cell_png(root / "b" / "smear_b.png", seed=1, size=96)
    return root, save_tiny(tmp_path / "tiny.safetensors")


def _count(root, checkpoint, out):
    return runner.invoke(app, ["count", str(root), "--output", str(out), "--detector", "classical",
                               "--model", str(checkpoint)])


def test_a_broken_link_beside_the_sample_folders_is_reported(samples, tmp_path):
    root, checkpoint = samples
    (root / "lost.png").symlink_to(root / "gone.png")
    result = _count(root, checkpoint, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "lost.png" in result.stderr


def test_a_readme_beside_the_sample_folders_keeps_the_samples_apart(samples, tmp_path):
    root, checkpoint = samples
    (root / "README.txt").write_text("samples of 3 May")
    out = tmp_path / "out"
    result = _count(root, checkpoint, out)
    assert result.exit_code == 0, result.output
    assert (out / "a" / "counts.json").is_file() and (out / "b" / "counts.json").is_file()


def test_an_empty_sample_folder_is_named(samples, tmp_path):
    root, checkpoint = samples
    (root / "c").mkdir()
    out = tmp_path / "out"
    result = _count(root, checkpoint, out)
    if result.exit_code == 0:  # counted the others and reported the empty one
        assert json.loads((out / "a" / "counts.json").read_text())["images"]
        assert "c" in {line.split(":")[0] for line in result.output.splitlines()}
    else:  # or refused before any work, naming it
        assert str(root / "c") in str(result.exception)


def test_sample_ids_of_a_samples_csv_follow_the_one_rule_and_become_safe_folder_names(samples, tmp_path):
    root, checkpoint = samples
    sheet = root / "samples.csv"
    sheet.write_text("sample_id,photo\n../../escape,a/smear_a.png\nS 17,b/smear_b.png\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["count", "--samples", str(sheet), "--output", str(out), "--detector", "classical",
                                 "--model", str(checkpoint)])
    assert isinstance(result.exception, DataError)  # the service's and the store's rule, in the same words
    assert str(result.exception).endswith("line 2: the sample id '../../escape' cannot be used: use 1 to 190 letters "
                                          "(of any script), digits, '.', '_', '-' or spaces between them, not starting "
                                          "with '.'")
    assert not out.exists() and not (tmp_path / "escape").exists()
    sheet.write_text("sample_id,photo\nÜnïcödé-血液,a/smear_a.png\nS 17,b/smear_b.png\n", encoding="utf-8")
    result = runner.invoke(app, ["count", "--samples", str(sheet), "--output", str(out), "--detector", "classical",
                                 "--model", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert (out / "S_17" / "counts.json").is_file()
    assert json.loads((out / "Ünïcödé-血液" / "counts.json").read_text())["sample_id"] == "Ünïcödé-血液"


def test_sample_ids_that_would_share_a_folder_are_refused(samples, tmp_path):
    root, checkpoint = samples
    sheet = root / "samples.csv"
    sheet.write_text("sample_id,photo\nS 17,a/smear_a.png\nS_17,b/smear_b.png\n")
    result = runner.invoke(app, ["count", "--samples", str(sheet), "--output", str(tmp_path / "out"),
                                 "--detector", "classical", "--model", str(checkpoint)])
    assert isinstance(result.exception, DataError)  # the entry point prints it as one sentence, exit 2
    assert "would share the output folder 'S_17'" in str(result.exception)


def test_a_single_folder_of_photos_is_one_sample_named_after_it(samples, tmp_path):
    root, checkpoint = samples
    out = tmp_path / "out"
    assert _count(root / "a", checkpoint, out).exit_code == 0
    assert json.loads((out / "counts.json").read_text())["sample_id"] == "a"
