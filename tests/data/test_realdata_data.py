"""Smoke tests on the shared real datasets (a few hundred images at most)."""

from __future__ import annotations

import pytest
import torch

from bloodcell.data.analysis import analyse_files
from bloodcell.data.dataset import ManifestDataset
from bloodcell.data.inventory import inventory
from bloodcell.data.manifest import read_manifest
from bloodcell.data.smears import smear_images
from bloodcell.resources import manifest_path

pytestmark = pytest.mark.realdata
MANIFEST = manifest_path("pbc-seed0")


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
    manifest = read_manifest(MANIFEST)
    assert manifest.dataset == "pbc" and "neutrophil/.DS_169665.jpg" not in {r.path for r in manifest.rows}
    ds = ManifestDataset(manifest, "val", root=real_data_root / "pbc", cache_dir=tmp_path, cache_size=64, limit=80)
    assert len(ds) == 80 and sorted(set(ds.targets)) == list(range(8))
    image, _ = ds[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8


def test_real_cbc_annotations(real_data_root):
    photos = smear_images("cbc", real_data_root, "Training")[:20]
    assert all(p.path.is_file() for p in photos)
    labels = {b.label for p in photos for b in p.annotation.boxes}
    assert labels == {"RBC", "WBC", "Platelets"}
    assert all(p.annotation.width == 640 and p.annotation.height == 480 for p in photos)


def test_real_txl_fields_have_complete_labels_and_sources(real_data_root):
    photos = smear_images("txl", real_data_root)
    sources = {p.source for p in photos}
    assert sources == {"bccd", "pbc", "raabin", "kaggle-bcd"} and {p.subset for p in photos} == {"train", "val"}
    for source in sources:
        fields = [p for p in photos if p.source == source][:10]
        assert all(sum(b.label == "RBC" for b in p.annotation.boxes) >= 3 for p in fields)  # red cells are boxed
        assert sum(b.label == "WBC" for p in fields for b in p.annotation.boxes) >= 5
