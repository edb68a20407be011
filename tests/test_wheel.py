"""The wheel carries every module and data file of the package, and finds them from any folder once installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SOURCE = Path(__file__).resolve().parents[1]

INSTALLED_CHECK = """
import sys
from pathlib import Path
import bloodcell
from bloodcell.data.manifest import read_manifest
from bloodcell.resources import manifest_path, recipe_path
from bloodcell.train.config import resolve_config
from bloodcell.weights import resolve
site = Path(sys.argv[1]).resolve()
assert Path(bloodcell.__file__).resolve().is_relative_to(site), bloodcell.__file__
for found in (manifest_path("pbc-seed0"), recipe_path("veena-resnet50"), resolve("pbc8"), resolve("smear-detector")):
    assert found.resolve().is_relative_to(site) and found.is_file(), found
assert read_manifest("pbc-seed0").dataset == "pbc"
assert resolve_config("pbc8-lite0-bccd-finetune", {}).style_bank == "four-sources"
print("ok")
"""


def _tracked_package_files() -> set[str]:
    """Every file of the package under version control (modules and data), as the wheel names them."""
    listed = subprocess.run(["git", "ls-files", "src/bloodcell"], cwd=SOURCE, capture_output=True, text=True,
                            check=True).stdout.split()
    return {path.removeprefix("src/") for path in listed if (SOURCE / path).is_file()}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built by pip from a copy of the source (so no build/ folder is left in the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(SOURCE / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(SOURCE / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(source)], check=True, timeout=600)
    (built,) = (tmp / "dist").glob("bloodcell-*.whl")
    return built


def test_the_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _tracked_package_files()
    assert {"bloodcell/resources/manifests/pbc-seed0.csv", "bloodcell/resources/configs/papers/README.md",
            "bloodcell/resources/configs/banks/four-sources.json", "bloodcell/weights/pbc8.safetensors"} <= expected
    assert sorted(expected - names) == []


def test_the_installed_wheel_finds_its_files_from_another_folder(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel installs by unpacking
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", INSTALLED_CHECK, str(site)], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
