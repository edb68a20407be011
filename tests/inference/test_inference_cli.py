"""`bloodcell predict` and `bloodcell export` end to end through the Typer app."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bloodcell.cli.main import app

EXPECTED_COLUMNS = ["path", "label", "confidence", "referred", "top_k", "error", "reason", "note", "sha256", "made_with"]


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def test_predict_folder_writes_one_row_per_file_with_errors(runner, trained_checkpoint, cells_folder, tmp_path):
    out = tmp_path / "preds.csv"
    result = runner.invoke(app, ["predict", str(cells_folder), "--model", str(trained_checkpoint), "--output", str(out),
                                 "--top-k", "2", "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    with out.open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        assert reader.fieldnames == EXPECTED_COLUMNS
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert set(by_name) == {"good_0.png", "good_1.png", "good_2.png", "good_3.jpg", "not_an_image.jpg",
                            "truncated.jpg", "gray.png", "rgba.png", "deep16.png"}
    for bad in ("not_an_image.jpg", "truncated.jpg"):
        assert by_name[bad]["error"] and by_name[bad]["label"] == "" and by_name[bad]["confidence"] == ""
    for good in ("good_0.png", "good_3.jpg", "gray.png", "rgba.png", "deep16.png"):
        row = by_name[good]
        assert row["error"] == "" and row["label"] and 0 < float(row["confidence"]) <= 1
        assert row["referred"] in ("true", "false") and row["top_k"].count(";") == 1
        assert row["top_k"].startswith(row["label"] + ":")


def test_predict_json_glob_and_refer_below(runner, trained_checkpoint, cells_folder, tmp_path):
    out = tmp_path / "preds.json"
    result = runner.invoke(app, ["predict", str(cells_folder / "good_*.png"), "--model", str(trained_checkpoint),
                                 "--output", str(out), "--refer-below", "1.0"])
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert len(records) == 3 and list(records[0]) == EXPECTED_COLUMNS
    assert all(r["referred"] is True and r["reason"].startswith("low confidence") for r in records)


def test_predict_prints_table_and_explains(runner, trained_checkpoint, cells_folder, tmp_path):
    cams = tmp_path / "cams"
    result = runner.invoke(app, ["predict", str(cells_folder / "good_0.png"), str(cells_folder / "truncated.jpg"),
                                 "--model", str(trained_checkpoint), "--explain", str(cams), "--tta"],
                           env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "good_0.png" in result.output and "truncated" in result.output
    assert sorted(p.name for p in cams.iterdir()) == ["good_0_gradcam.png", "index.csv"]


def test_heat_maps_of_images_with_one_name_are_told_apart_by_the_index(runner, trained_checkpoint, cells_folder,
                                                                         tmp_path):
    """Two folders' cell.png give two heat maps, and index.csv says which image each one explains."""
    import shutil

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(cells_folder / ("good_0.png" if folder == "a" else "good_1.png"), tmp_path / folder / "cell.png")
    cams = tmp_path / "cams"
    result = runner.invoke(app, ["predict", str(tmp_path / "a"), str(tmp_path / "b"), "--model", str(trained_checkpoint),
                                 "--explain", str(cams), "-o", str(tmp_path / "rows.csv")])
    assert result.exit_code == 0, result.output
    with (cams / "index.csv").open(newline="") as handle:
        index = list(csv.DictReader(handle))
    with (tmp_path / "rows.csv").open(newline="") as handle:
        rows = {row["path"]: row["label"] for row in csv.DictReader(handle)}
    assert sorted(Path(entry["path"]).parent.name for entry in index) == ["a", "b"]
    assert len({entry["heat_map"] for entry in index}) == 2 and all((cams / entry["heat_map"]).is_file() for entry in index)
    assert all(rows[entry["path"]] == entry["label"] for entry in index)


def test_predict_user_errors_exit_1_without_traceback(trained_checkpoint, tmp_path):
    import subprocess
    import sys

    code = "import sys; from bloodcell.cli.main import main; sys.argv=['bloodcell','predict',sys.argv[1],'--model','nope.safetensors']; main()"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "Error" in out.stderr


def test_export_cli_writes_onnx_with_metadata(runner, trained_checkpoint, tmp_path):
    import onnx

    out = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", "--model", str(trained_checkpoint), "--format", "onnx", "--output", str(out)])
    assert result.exit_code == 0, result.output
    props = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert props["class_names"] == ["lymphocyte", "monocyte", "neutrophil", "eosinophil"]
    assert props["temperature"] == pytest.approx(1.3) and props["data_config"]["input_size"] == 64


def test_calibrate_ood_refuses_the_test_split(runner, trained_checkpoint, tmp_path):
    from bloodcell.errors import ConfigError

    result = runner.invoke(app, ["calibrate-ood", "--model", str(trained_checkpoint), "--manifest", str(tmp_path / "m.csv"),
                                 "--split", "test"])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert "validation split" in str(result.exception)



def test_calibrate_ood_onto_itself_and_a_failed_calibration_leaves_no_copy(runner, trained_checkpoint, tmp_path):
    from bloodcell.errors import DataError

    missing = tmp_path / "missing.csv"
    same = runner.invoke(app, ["calibrate-ood", "--model", str(trained_checkpoint), "--manifest", str(missing),
                               "--output", str(trained_checkpoint)])
    assert not isinstance(same.exception, OSError) and same.exit_code != 0  # the manifest error, not SameFileError
    out = tmp_path / "guarded.safetensors"
    failed = runner.invoke(app, ["calibrate-ood", "--model", str(trained_checkpoint), "--manifest", str(missing),
                                 "--output", str(out)])
    assert isinstance(failed.exception, DataError) and not out.exists()

def test_predict_refuses_an_unknown_output_extension_before_loading_a_model(runner, cells_folder, tmp_path):
    from bloodcell.errors import ConfigError

    out = tmp_path / "preds.xlsx"
    result = runner.invoke(app, ["predict", str(cells_folder), "--model", str(tmp_path / "missing.safetensors"),
                                 "--output", str(out)])
    assert isinstance(result.exception, ConfigError) and ".csv or .json" in str(result.exception)
    assert not out.exists()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [9_000, 20_000], ids=["over-our-limit", "over-pillows-bomb-limit"])
def test_an_over_large_image_is_refused_in_our_words(runner, trained_checkpoint, tmp_path, side):
    from bloodcell.data.images import MAX_PIXELS

    big = tmp_path / "big.png"
    big.write_bytes(_png_claiming(side, side))
    out = tmp_path / "preds.csv"
    result = runner.invoke(app, ["predict", str(big), "--model", str(trained_checkpoint), "-o", str(out)])
    assert result.exit_code == 1
    [row] = list(csv.DictReader(out.open()))
    expected = (f"{big}: image is {side}x{side} pixels, more than the limit of {MAX_PIXELS}" if side == 9_000
                else f"{big}: image has too many pixels (limit {MAX_PIXELS})")
    assert row["error"] == expected
    assert "decompression" not in result.output.lower()


@pytest.mark.parametrize("engine, expected", [("torch", 2), ("onnx", 1)])
def test_predict_gives_torch_its_threads_only_on_the_torch_engine(runner, trained_checkpoint, cells_folder, engine,
                                                                  expected):
    """On ONNX torch only resizes each batch, and a second torch thread would wait for a core a worker holds."""
    import torch

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        result = runner.invoke(app, ["predict", str(cells_folder / "good_0.png"), "--model", str(trained_checkpoint),
                                     "--engine", engine, "--threads", "2"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(previous)
