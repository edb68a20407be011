"""Integrity check and leakage-aware splits on synthetic trees with every known defect."""

from __future__ import annotations

import csv
import json
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from datafakes import blurred, cell, jpeg_bytes, make_tree
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from bloodcell.cli.data import app
from bloodcell.data.analysis import near_duplicate_pairs
from bloodcell.data.check import check_dataset
from bloodcell.data.manifest import read_manifest
from bloodcell.data.split import (
    assign_groups,
    largest_remainder,
    make_split,
    parse_ratios,
)
from bloodcell.errors import ConfigError, DataError

runner = CliRunner()


@pytest.fixture
def bad_tree(tmp_path):
    """A pbc tree with one of each defect."""
    root = make_tree(tmp_path / "pbc", per_class=12)
    (root / "neutrophil" / ".DS_169665.jpg").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(200))
    data = jpeg_bytes(cell(900))
    (root / "basophil" / "BA_9.jpg").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.asarray(cell(901).convert("L"))).save(root / "monocyte" / "MO_gray.png")
    Image.fromarray(np.dstack([np.asarray(cell(902)), np.full((48, 48), 255, np.uint8)]), "RGBA").save(root / "monocyte" / "MO_rgba.png")
    Image.fromarray((np.asarray(cell(903))[..., 0].astype(np.uint16) * 257)).save(root / "monocyte" / "MO_deep.png")
    cell(904, size=120).save(root / "lymphocyte" / "LY_big.jpg", quality=95)
    (root / "eosinophil" / "EO_copy.jpg").write_bytes((root / "eosinophil" / "EO_1000.jpg").read_bytes())
    (root / "platelet" / "PLATELET_near.jpg").write_bytes(jpeg_bytes(cell(7 * 12), quality=70))  # re-encoded platelet 0
    (root / "eosinophil" / "EO_blur.jpg").write_bytes(jpeg_bytes(blurred(cell(905))))
    return tmp_path


def test_check_reports_every_defect(bad_tree):
    report = check_dataset("pbc", bad_tree)
    assert [u["path"] for u in report["unreadable"]] == ["neutrophil/.DS_169665.jpg"]
    assert [t["path"] for t in report["truncated"]] == ["basophil/BA_9.jpg"]
    modes = {m["path"]: m["mode"] for m in report["unusual_mode"]}
    assert modes == {"monocyte/MO_gray.png": "L", "monocyte/MO_rgba.png": "RGBA", "monocyte/MO_deep.png": "I;16"}
    assert report["dominant_size"] == [48, 48]
    assert [u["path"] for u in report["unusual_size"]] == ["lymphocyte/LY_big.jpg"]
    groups = {tuple(g["paths"]): g["kind"] for g in report["duplicate_groups"]}
    assert groups[("eosinophil/EO_1000.jpg", "eosinophil/EO_copy.jpg")] == "exact"
    assert groups[("platelet/PLATELET_1000.jpg", "platelet/PLATELET_near.jpg")] == "near"
    assert len(groups) == 2
    assert report["blurry"][0]["path"] == "eosinophil/EO_blur.jpg"
    assert report["blurry"][0]["focus"] < report["focus_thresholds"]["eosinophil"]
    assert report["counts"]["basophil"] == {"found": 13, "expected": 1218}


def test_check_cli_writes_json_and_changes_nothing(bad_tree, tmp_path):
    before = sorted((p.name, p.stat().st_size) for p in bad_tree.rglob("*") if p.is_file())
    out = tmp_path / "r" / "check.json"
    result = runner.invoke(app, ["check", "pbc", "--data-root", str(bad_tree), "--output", str(out) ])
    assert result.exit_code == 0, result.output
    assert "unreadable" in result.output
    report = json.loads(out.read_text())
    assert set(report) >= {"unreadable", "truncated", "unusual_mode", "duplicate_groups", "blurry"}
    assert sorted((p.name, p.stat().st_size) for p in bad_tree.rglob("*") if p.is_file() and p != out) == before


def test_near_duplicate_pairs_threshold():
    hashes = [0b0, 0b111, 0xFFFF, 0b1]
    assert near_duplicate_pairs(hashes, 3) == [(0, 1, 3), (0, 3, 1), (1, 3, 2)]
    assert near_duplicate_pairs(hashes, 0) == []


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 500), st.sampled_from(["0.7,0.15,0.15", "0.8,0.1,0.1", "0.6,0.2,0.2", "1,0,0", "0.5,0.25,0.25"]))
def test_largest_remainder_is_within_one_of_the_ratios(n, text):
    ratios = parse_ratios(text)
    sizes = largest_remainder(n, ratios)
    assert sum(sizes) == n
    assert all(abs(s - float(r) * n) < 1 for s, r in zip(sizes, ratios))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 300), st.integers(0, 10**6))
def test_singleton_groups_hit_the_targets_exactly(n, seed):
    ratios = parse_ratios("0.7,0.15,0.15")
    out = assign_groups([1] * n, ratios, np.random.default_rng(seed))
    assert [out.count(k) for k in range(3)] == largest_remainder(n, ratios)


def test_bad_ratios_are_config_errors():
    for text in ("0.7,0.2", "0.5,0.5,0.5", "a,b,c", "-0.1,0.6,0.5"):
        with pytest.raises(ConfigError):
            parse_ratios(text)
    assert parse_ratios("0.7,0.15,0.15")[0] == Fraction(7, 10)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_split_is_stratified_reproducible_and_duplicate_aware(bad_tree, tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    result = make_split("pbc", a, "0.7,0.15,0.15", seed=0, data_root=bad_tree, workers=1)
    make_split("pbc", b, "0.7,0.15,0.15", seed=0, data_root=bad_tree, workers=2)
    make_split("pbc", c, "0.7,0.15,0.15", seed=1, data_root=bad_tree)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert b"\r" not in a.read_bytes()
    assert result.manifest.sha256 == read_manifest(a).sha256
    # unreadable and truncated files are excluded and reported
    assert sorted(p for p, _ in result.excluded) == ["basophil/BA_9.jpg", "neutrophil/.DS_169665.jpg"]
    rows = {r["path"]: r for r in _rows(a)}
    assert "neutrophil/.DS_169665.jpg" not in rows
    # duplicates are kept in one split and marked as a group
    assert result.merged_groups == 2
    assert rows["eosinophil/EO_1000.jpg"]["split"] == rows["eosinophil/EO_copy.jpg"]["split"]
    assert rows["eosinophil/EO_copy.jpg"]["group"] == "dup:eosinophil/EO_1000.jpg"
    assert rows["platelet/PLATELET_1000.jpg"]["split"] == rows["platelet/PLATELET_near.jpg"]["split"]
    # per class sizes within one image of the ratios (singletons)
    for cls, per in result.counts.items():
        n = sum(per.values())
        for split, ratio in zip(("train", "val", "test"), (0.7, 0.15, 0.15)):
            assert abs(per[split] - ratio * n) <= 1 + (1 if cls in ("eosinophil", "platelet") else 0), (cls, per)
    assert Counter(r["split"] for r in rows.values())["train"] == sum(p["train"] for p in result.counts.values())


def test_duplicates_across_classes_and_group_by(tmp_path):
    root = make_tree(tmp_path / "pbc", per_class=10)
    (root / "neutrophil" / "BNE_dup.jpg").write_bytes((root / "eosinophil" / "EO_1003.jpg").read_bytes())
    meta = tmp_path / "meta.csv"
    paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    meta.write_text("path,patient\n" + "".join(f"{p},P{i % 7}\n" for i, p in enumerate(paths)))
    out = tmp_path / "m.csv"
    result = make_split("pbc", out, "0.6,0.2,0.2", seed=3, data_root=tmp_path, group_by="patient", metadata=meta)
    rows = _rows(out)
    by_patient: dict[str, set] = {}
    for r in rows:
        by_patient.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_patient.values()), by_patient
    assert result.cross_class_groups == 1
    with pytest.raises(ConfigError, match="--group-by column 'site'"):
        make_split("pbc", out, data_root=tmp_path, group_by="site", metadata=meta)
    with pytest.raises(ConfigError, match="unknown"):
        make_split("pbc", out, data_root=tmp_path, group_by="patient")


def test_pbc11_unspecified_labels_are_kept_and_counted(tmp_path):
    root = make_tree(tmp_path / "pbc", per_class=6)
    (root / "ig" / "IG_1.jpg").write_bytes(jpeg_bytes(cell(700)))
    (root / "neutrophil" / "NEUTROPHIL_1.jpg").write_bytes(jpeg_bytes(cell(701)))
    result = make_split("pbc", tmp_path / "m.csv", data_root=tmp_path, taxonomy="pbc11")
    assert result.unlabelled == 2 and result.taxonomy == "pbc11"
    assert any("2 images have no pbc11 label" in w for w in result.warnings)
    rows = {r["path"]: r for r in _rows(tmp_path / "m.csv")}
    assert rows["ig/IG_1.jpg"]["fine_label"] == "ig" and rows["ig/MY_1000.jpg"]["fine_label"] == "myelocyte"


def test_split_of_a_folder_dataset_and_wrong_taxonomy(tmp_path):
    make_tree(tmp_path / "TRAIN", per_class=5, classes=("EOSINOPHIL", "MONOCYTE"))
    result = make_split("folder", tmp_path / "f.csv", data_root=tmp_path, near_distance=-1)
    assert result.taxonomy == "labels" and set(result.counts) == {"EOSINOPHIL", "MONOCYTE"}
    with pytest.raises(ConfigError, match="taxonomy 'pbc8' has none"):
        make_split("folder", tmp_path / "f.csv", data_root=tmp_path, taxonomy="pbc8")
    with pytest.raises(DataError, match="not found"):
        read_manifest(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("path,label\nx,y\n")
    with pytest.raises(DataError, match="lacks column"):
        read_manifest(tmp_path / "bad.csv")


def test_check_refuses_a_bad_output_before_the_scan_in_one_sentence(bad_tree, tmp_path, monkeypatch):
    """The scan may take minutes: a report that cannot be written is refused before it, not after."""
    import bloodcell.data.check as check_module
    from bloodcell.errors import ConfigError

    def scanned(*args, **kwargs):
        raise AssertionError("the dataset was scanned before the output was checked")

    monkeypatch.setattr(check_module, "check_dataset", scanned)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    (tmp_path / "a-folder.json").mkdir()
    for out, sentence in ((a_file / "check.json", f"{a_file}: is a file, not a folder for the check report"),
                          (a_file / "sub" / "check.json", f"{a_file / 'sub'}: cannot create the folder for the check "
                                                          "report"),
                          (tmp_path / "a-folder.json", "a-folder.json: is a folder; give a file name for the check "
                                                       "report"),
                          (tmp_path / "check.txt", "check.txt: the check report file must end in .json")):
        result = runner.invoke(app, ["check", "pbc", "--data-root", str(bad_tree), "--output", str(out)])
        assert result.exit_code != 0 and isinstance(result.exception, ConfigError), result.output
        assert sentence in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "check.txt").exists()
