"""Registry entries, data location precedence, class-folder scanning and taxonomies."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from datafakes import make_tree

from bloodcell.data import locate
from bloodcell.data.inventory import Entry, inventory
from bloodcell.data.locate import data_home, dataset_root
from bloodcell.data.registry import get_dataset, list_datasets
from bloodcell.data.taxonomy import get_taxonomy, pbc_fine_label
from bloodcell.errors import ConfigError, DataError


def test_registry_has_the_official_pbc_counts_and_honest_checksums():
    pbc = get_dataset("PBC")
    assert pbc.expected_total == 17092 and pbc.expected_counts["neutrophil"] == 3329
    assert pbc.license == "CC BY 4.0" and "10.17632/snkd93bnjr.1" in pbc.citation
    assert all(f.checksum is None for f in pbc.files)  # not published: none invented
    blood = get_dataset("bloodmnist")
    assert {f.variant for f in blood.files} == {"28", "64", "128", "224"}
    assert all(f.checksum.startswith("md5:") for f in blood.files)
    assert get_dataset("pbc_originals_sample").local_only
    assert [d.name for d in list_datasets()] == sorted(d.name for d in list_datasets())


def test_unknown_dataset_name_is_one_sentence():
    with pytest.raises(DataError, match="unknown dataset 'kaggle'.*known datasets: bccd"):
        get_dataset("kaggle")


def test_data_home_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("BLOODCELL_DATA", str(tmp_path / "env"))
    assert data_home(tmp_path / "explicit") == tmp_path / "explicit"
    assert data_home() == tmp_path / "env"
    monkeypatch.delenv("BLOODCELL_DATA")
    monkeypatch.setattr(locate, "user_cache_dir", lambda app: str(tmp_path / "cache" / app))
    assert data_home() == tmp_path / "cache" / "bloodcell" / "datasets"


def test_official_archive_folder_name_is_accepted(tmp_path):
    make_tree(tmp_path / "PBC_dataset_normal_DIB", per_class=1)
    assert dataset_root("pbc", tmp_path) == tmp_path / "PBC_dataset_normal_DIB"
    make_tree(tmp_path / "pbc", per_class=1)
    assert dataset_root("pbc", tmp_path) == tmp_path / "pbc"


def test_missing_dataset_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError, match=r"not found under .*bloodcell data fetch pbc.*place it at"):
        dataset_root("pbc", tmp_path)


def test_import_creates_and_downloads_nothing(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"), "BLOODCELL_DATA": ""}
    code = (
        "import bloodcell.data.registry, bloodcell.data.locate, bloodcell.data.fetch, bloodcell.data.split, "
        "bloodcell.data.check, bloodcell.data.dataset, bloodcell.data.voc, bloodcell.cli.data"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_fewer_images_warn_with_the_difference(tmp_path):
    make_tree(tmp_path / "pbc", per_class=3)
    inv = inventory("pbc", tmp_path)
    assert inv.counts["basophil"] == 3
    assert len(inv.warnings) == 1
    assert "24 images found, 17092 in the official release" in inv.warnings[0]
    assert "basophil 3/1218" in inv.warnings[0]


def test_complete_copy_has_no_warning(tmp_path):
    make_tree(tmp_path / "pbc_originals_sample", per_class=12)
    assert inventory("pbc-originals-sample", tmp_path).warnings == []


def test_wrong_class_list_and_empty_folder_are_errors(tmp_path):
    make_tree(tmp_path / "pbc", per_class=1)
    (tmp_path / "pbc" / "blast").mkdir()
    with pytest.raises(DataError, match="blast.*not in the pbc class list"):
        inventory("pbc", tmp_path)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files"):
        inventory("folder", tmp_path / "empty")


def test_scan_includes_dot_files_and_fine_labels(tmp_path):
    root = make_tree(tmp_path / "pbc", per_class=1)
    (root / "neutrophil" / ".DS_1.jpg").write_bytes(b"junk")
    (root / "ig" / "IG_5.jpg").write_bytes((root / "ig" / "MY_1000.jpg").read_bytes())
    entries = {e.path: e for e in inventory("pbc", tmp_path).entries}
    assert "neutrophil/.DS_1.jpg" in entries and not entries["neutrophil/.DS_1.jpg"].has_image_name
    assert entries["ig/MY_1000.jpg"].fine_label == "myelocyte"
    assert entries["ig/IG_5.jpg"].fine_label == "ig"
    assert inventory("pbc", tmp_path).counts["neutrophil"] == 1  # the dot-file is not counted as an image


def test_folder_dataset_with_train_test_subsets(tmp_path):
    make_tree(tmp_path / "TRAIN", per_class=2, classes=("EOSINOPHIL", "MONOCYTE"))
    make_tree(tmp_path / "TEST", per_class=1, classes=("EOSINOPHIL", "MONOCYTE"), seed0=50)
    inv = inventory("folder", tmp_path)
    assert inv.counts == {"EOSINOPHIL": 3, "MONOCYTE": 3}
    assert {e.subset for e in inv.entries} == {"TRAIN", "TEST"}


def test_taxonomies():
    pbc11 = get_taxonomy("pbc11")
    assert len(pbc11.class_names) == 11 and len(get_taxonomy("pbc8").class_names) == 8
    assert pbc_fine_label("BNE_1.jpg", "neutrophil") == "band_neutrophil"
    assert pbc_fine_label("MMY_1.jpg", "ig") == "metamyelocyte"
    assert pbc_fine_label("weird.jpg", "ig") == "ig"
    unspecified = Entry("ig/IG_1.jpg", "ig", "ig")
    assert pbc11.label_of(unspecified) is None
    assert get_taxonomy("pbc8").label_of(unspecified) == "ig"
    assert pbc11.label_of(Entry("neutrophil/SNE_1.jpg", "neutrophil", "segmented_neutrophil")) == "segmented_neutrophil"
    with pytest.raises(ConfigError, match="unknown taxonomy"):
        get_taxonomy("pbc5")
