"""ManifestDataset: labels, taxonomy, limit, on-disk memmap cache, skip-and-report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datafakes import cell, jpeg_bytes, make_tree
from PIL import Image

from bloodcell.data import dataset as dataset_module
from bloodcell.data.dataset import (
    ManifestDataset,
    resize_center_crop,
    stratified_subset,
)
from bloodcell.data.manifest import ManifestRow, write_manifest
from bloodcell.errors import ConfigError, DataError


@pytest.fixture
def manifest(tmp_path):
    root = make_tree(tmp_path / "pbc", per_class=4)
    (root / "ig" / "IG_1.jpg").write_bytes(jpeg_bytes(cell(300)))
    data = jpeg_bytes(cell(301))
    (root / "monocyte" / "MO_cut.jpg").write_bytes(data[: len(data) // 3])
    (root / "monocyte" / "MO_fake.jpg").write_bytes(b"not an image at all")
    rows = []
    for path in sorted(root.rglob("*.jpg")):
        rel = path.relative_to(root).as_posix()
        label = rel.split("/")[0]
        fine = {"MY": "myelocyte", "SNE": "segmented_neutrophil", "IG": "ig"}.get(path.name.split("_")[0], label)
        rows.append(ManifestRow(rel, label, fine, "train", "0" * 64, ""))
    return write_manifest(tmp_path / "m.csv", "pbc", rows), root


def test_uint8_chw_items_and_reported_skips(manifest):
    m, root = manifest
    ds = ManifestDataset(m, "train", root=root)
    assert [p for p, _ in ds.skipped] == ["monocyte/MO_fake.jpg"]  # header check without a cache
    assert ds.class_names[0] == "basophil" and len(ds) == len(ds.targets) == len(ds.paths)
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 48) and target == 0


def test_cache_builds_once_is_memmapped_and_skips_bad_files(manifest, tmp_path, monkeypatch):
    m, root = manifest
    cache = tmp_path / "cache"
    ds = ManifestDataset(m, "train", root=root, cache_dir=cache, cache_size=32, transform=lambda t: t.float() / 255)
    assert sorted(p for p, _ in ds.skipped) == ["monocyte/MO_cut.jpg", "monocyte/MO_fake.jpg"]
    assert len(ds) == 33 and isinstance(ds._array, np.memmap)
    x, _ = ds[3]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
    assert not list(cache.glob(".*tmp"))
    direct = ManifestDataset(m, "train", root=root, cache_size=32)
    assert torch.equal(direct[5][0], (ds[5][0] * 255).round().to(torch.uint8))

    def boom(*args, **kwargs):
        raise AssertionError("cache rebuilt")

    monkeypatch.setattr(ManifestDataset, "_build_cache", boom)
    again = ManifestDataset(m, "train", root=root, cache_dir=cache, cache_size=32)
    assert again.targets == ds.targets and len(again.skipped) == 2
    with pytest.raises(AssertionError, match="rebuilt"):
        ManifestDataset(m, "train", root=root, cache_dir=cache, cache_size=24)


def test_pbc11_excludes_unspecified_and_limit_is_stratified(manifest):
    m, root = manifest
    ds = ManifestDataset(m, "train", taxonomy="pbc11", root=root)
    assert ds.unlabelled == 1 and len(ds.class_names) == 11
    assert "ig/IG_1.jpg" not in [p.relative_to(root).as_posix() for p in ds.paths]
    small = ManifestDataset(m, "train", root=root, limit=8)
    assert sorted(small.targets) == list(range(8))
    assert ManifestDataset(m, "train", root=root, limit=8).paths == small.paths


def test_bad_arguments(manifest):
    m, root = manifest
    with pytest.raises(ConfigError, match="cache_size"):
        ManifestDataset(m, "train", root=root, cache_dir=root / "c")
    with pytest.raises(DataError, match="no images"):
        ManifestDataset(m, "test", root=root)
    with pytest.raises(DataError, match="unknown split"):
        ManifestDataset(m, "holdout", root=root)


def test_resize_center_crop_keeps_aspect():
    img = Image.new("RGB", (200, 100))
    img.paste((255, 0, 0), (0, 0, 50, 100))  # red left quarter is cropped away
    out = resize_center_crop(img, 50)
    assert out.size == (50, 50)
    assert np.asarray(out)[:, 2:].max() < 10  # only antialiasing bleeds into the first column


def test_stratified_subset_is_deterministic_and_balanced():
    targets = [0] * 50 + [1] * 30 + [2] * 20
    pick = stratified_subset(targets, 10)
    assert pick == stratified_subset(targets, 10)
    assert [targets[i] for i in pick].count(0) == 5 and [targets[i] for i in pick].count(2) == 2


def test_cache_key_depends_on_inputs(manifest):
    m, root = manifest
    a = ManifestDataset(m, "train", root=root, cache_size=32)
    b = ManifestDataset(m, "train", root=root, cache_size=64)
    assert a.cache_key() != b.cache_key()
    assert dataset_module.CACHE_VERSION >= 1


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "basophil/../../outside.jpg", "C:\\cells\\x.jpg",
                                  "basophil\\..\\..\\x.jpg"])
def test_a_manifest_row_that_leaves_the_dataset_folder_is_refused(manifest, tmp_path, path):
    from bloodcell.data.manifest import read_manifest

    header, *lines = (tmp_path / "m.csv").read_text().splitlines()
    rows = [line.split(",") for line in lines]
    column = header.split(",").index("path")
    rows[1][column] = f'"{path}"' if "," in path else path
    (tmp_path / "bad.csv").write_text("\n".join([header, *(",".join(row) for row in rows)]) + "\n")
    with pytest.raises(DataError, match="line 3: .* leaves the dataset's folder"):
        read_manifest(tmp_path / "bad.csv")
    assert read_manifest(tmp_path / "m.csv").rows  # the same manifest with its own paths is read
