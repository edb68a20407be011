"""Shipped files by name from any folder: frozen manifests, training configs, paper recipes, style banks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bloodcell.data.manifest import read_manifest
from bloodcell.data.smear_manifest import read_smear_manifest
from bloodcell.errors import ConfigError, DataError
from bloodcell.resources import (
    MANIFESTS,
    RECIPES,
    config_path,
    manifest_names,
    manifest_path,
    recipe_path,
    style_bank_path,
)
from bloodcell.train.config import resolve_config
from bloodcell.workflows.style_bank import read_style_bank


def test_a_frozen_manifest_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert manifest_names() == ["cbc-seed0", "pbc-seed0", "txl-detector"]
    assert manifest_path("pbc-seed0") == manifest_path("pbc-seed0.csv") == MANIFESTS / "pbc-seed0.csv"
    manifest = read_manifest("pbc-seed0")
    assert manifest.dataset == "pbc" and len(manifest.rows_for("test")) > 2000 and manifest.path.is_file()
    assert read_smear_manifest("cbc-seed0").ids("test")


def test_a_file_at_the_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pbc-seed0.csv").write_text("dataset,path,label,fine_label,split,sha256,group\n"
                                           "folder,a/1.png,a,a,test,0,\n")
    assert manifest_path("pbc-seed0.csv").resolve() == tmp_path / "pbc-seed0.csv"
    assert read_manifest("pbc-seed0.csv").dataset == "folder"
    assert manifest_path("pbc-seed0") == MANIFESTS / "pbc-seed0.csv"  # no file of that exact name here


@pytest.mark.parametrize("spec", ["pbc-seed9", "manifests/pbc-seed0.csv", "runs/x/manifest.csv"])
def test_an_unknown_manifest_is_one_sentence_naming_the_known_ones(tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as error:
        read_manifest(spec)
    message = str(error.value)
    assert message.startswith(f"{spec}: manifest file not found") and "\n" not in message
    assert all(name in message for name in manifest_names())


def test_configs_recipes_and_style_banks_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = resolve_config("pbc8-lite0-bccd-finetune", {})
    assert config.manifest == "pbc-seed0" and config.style_bank == "four-sources"
    assert read_style_bank(config.style_bank).shape[1] == 6
    assert config_path("khalil2022-vgg16") == recipe_path("khalil2022-vgg16") == RECIPES / "khalil2022-vgg16.json"
    with pytest.raises(ConfigError, match="nope: config file not found.*pbc8-lite0.*veena-resnet50"):
        config_path("nope")
    with pytest.raises(ConfigError, match="no paper recipe named 'pbc8-lite0'"):
        recipe_path("pbc8-lite0")
    with pytest.raises(DataError, match="four: style bank file not found.*four-sources, raabin-pbc"):
        style_bank_path("four")


def test_the_cli_refuses_an_unknown_manifest_name_in_one_sentence(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bloodcell", "evaluate", "--model", "pbc8", "--manifest", "pbc-seed9",
                             "--output", str(tmp_path / "report")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pbc-seed9: manifest file not found" in lines[0] and "pbc-seed0" in lines[0], result.stderr
