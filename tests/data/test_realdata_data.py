"""Smoke tests on the shared real datasets (a few hundred images at most)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bloodcell.data.analysis import analyse_files
from bloodcell.data.dataset import ManifestDataset
from bloodcell.data.inventory import inventory
from bloodcell.data.manifest import read_manifest
from bloodcell.data.voc import smear_annotations

pytestmark = pytest.mark.realdata
MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "pbc-seed0.csv"


def test_real_pbc_inventory_finds_the_ds_file(real_data_root):
    inv = inventory("pbc", real_data_root)
    assert "neutrophil/.DS_169665.jpg" in {e.path for e in inv.entries}
    assert inv.warnings and "17092 in the official release" in inv.warnings[0]
    neutro = [e for e in inv.entries if e.label == "neutrophil"][:150]  # the dot-file sorts first
    facts = analyse_files(inv.root, [e.path for e in neutro], workers=1)
    bad = [f.path for f in facts if f.problem]
    assert bad == ["neutrophil/.DS_169665.jpg"]
    assert {(f.width, f.height) for f in facts if not f.problem} == {(256, 256)}


def test_frozen_manifest_dataset_on_real_images(real_data_root, tmp_path):
    if not MANIFEST.is_file():
        pytest.skip("manifests/pbc-seed0.csv not generated")
    manifest = read_manifest(MANIFEST)
    assert manifest.dataset == "pbc" and "neutrophil/.DS_169665.jpg" not in {r.path for r in manifest.rows}
    ds = ManifestDataset(manifest, "val", root=real_data_root / "pbc", cache_dir=tmp_path, cache_size=64, limit=80)
    assert len(ds) == 80 and sorted(set(ds.targets)) == list(range(8))
    image, _ = ds[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8


def test_real_cbc_annotations(real_data_root):
    pairs = smear_annotations("cbc", "Training", data_root=real_data_root)[:20]
    assert all(path.is_file() for path, _ in pairs)
    labels = {b.label for _, ann in pairs for b in ann.boxes}
    assert labels == {"RBC", "WBC", "Platelets"}
    assert all(ann.width == 640 and ann.height == 480 for _, ann in pairs)
