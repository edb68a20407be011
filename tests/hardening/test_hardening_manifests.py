"""Hardening items 4 and 5: manifests are read strictly and every row is accounted for.

``bloodcell evaluate`` counts rows whose label lies outside the taxonomy and repeated rows, refuses
files whose bytes no longer match the manifest's sha256 (unless told to go on), and refuses a
malformed manifest in one sentence; ``read_manifest`` returns or raises DataError on any bytes.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from hardening_helpers import cell_png, save_tiny
from hypothesis import event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bloodcell.cli.main import app
from bloodcell.data.manifest import COLUMNS, SPLITS, read_manifest
from bloodcell.data.registry import PBC_CLASSES
from bloodcell.data.smear_manifest import read_smear_manifest
from bloodcell.errors import DataError
from bloodcell.provenance import file_sha256

runner = CliRunner()


def _write(path: Path, rows: list[list[str]], header=COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """``root/<class>/<image>`` with two neutrophils, two lymphocytes and one cell of a class pbc8 lacks,
    a tiny pbc8 checkpoint, and the manifest rows of all five (test split, correct sha256)."""
    base = tmp_path_factory.mktemp("evaluate")
    root = base / "cells"
    rows = []
    for index, rel in enumerate(["neutrophil/n0.png", "neutrophil/n1.png", "lymphocyte/l0.png",
                                 "lymphocyte/l1.png", "alien/x0.png"]):
        path = cell_png(root / rel, seed=index, size=20)
        label = rel.split("/")[0]
        rows.append(["folder", rel, label, label, "test", file_sha256(path), ""])
    checkpoint = save_tiny(base / "pbc8.safetensors", classes=PBC_CLASSES)
    return root, checkpoint, rows


def _evaluate(folder, manifest: Path, out: Path, *extra: str):
    root, checkpoint, _ = folder
    return runner.invoke(app, ["evaluate", "--model", str(checkpoint), "--dataset", "folder", "--manifest",
                               str(manifest), "--data-root", str(root), "--output", str(out), "--n-boot", "20",
                               *extra])


def test_evaluate_counts_rows_outside_the_taxonomy_and_repeated_rows_and_checks_sha256(folder, tmp_path):
    root, _, rows = folder
    manifest = _write(tmp_path / "m.csv", rows + [rows[0]])  # n0 listed twice
    changed = root / "lymphocyte" / "l1.png"
    original = changed.read_bytes()
    try:
        cell_png(changed, seed=99, size=20)  # the file changed since the manifest was made
        refused = _evaluate(folder, manifest, tmp_path / "refused")
        assert refused.exit_code == 1 and isinstance(refused.exception, DataError)
        message = str(refused.exception)
        assert "1 test file(s) no longer match the manifest's sha256" in message and "lymphocyte/l1.png" in message
        assert "--ignore-changed-files" in message and "\n" not in message
        assert not (tmp_path / "refused" / "metrics.json").exists()

        result = _evaluate(folder, manifest, tmp_path / "report", "--ignore-changed-files")
    finally:
        changed.write_bytes(original)
    assert result.exit_code == 0, result.output
    counts = json.loads((tmp_path / "report" / "metrics.json").read_text())["counts"]
    assert counts["scored"] == 4  # n0 once, n1, l0, l1
    assert counts["outside_taxonomy"] == 1 and counts["repeated_rows"] == 1 and counts["unspecified_fine_label"] == 0
    output = " ".join(result.output.split())
    assert "scored 4 images" in output
    assert "rows left out: 1 outside the taxonomy, 1 repeated rows (each file scored once)" in output
    assert "carry labels outside pbc8 and were left out: alien (1)" in output
    assert "1 repeated test row(s) of the manifest were scored once" in output
    assert "WARNING: 1 test file(s) no longer match" in output
    with (tmp_path / "report" / "predictions.csv").open(newline="") as handle:
        assert sorted(r["path"].rsplit("/", 1)[-1] for r in csv.DictReader(handle)) == ["l0.png", "l1.png", "n0.png",
                                                                                       "n1.png"]


@pytest.mark.parametrize("defect", ["stray carriage return", "line break in a quoted field", "extra field",
                                    "same file in two splits", "not UTF-8", "unknown split"])
def test_evaluate_refuses_a_malformed_manifest_in_one_sentence(folder, tmp_path, monkeypatch, defect):
    import bloodcell.workflows.evaluate as workflow

    def no_scoring(*_a, **_k):
        raise AssertionError("images were scored")

    monkeypatch.setattr(workflow, "score_paths", no_scoring)
    _, _, rows = folder
    manifest = _write(tmp_path / "m.csv", rows)
    text = manifest.read_bytes()
    lines = text.split(b"\n")
    if defect == "stray carriage return":
        lines[2] = lines[2].replace(b",test,", b",te\rst,")
    elif defect == "line break in a quoted field":
        lines[2] = lines[2].replace(b",test,", b',"te\nst",')
    elif defect == "extra field":
        lines[2] += b",surplus"
    elif defect == "same file in two splits":
        lines.insert(3, lines[1].replace(b",test,", b",train,"))
    elif defect == "not UTF-8":
        lines[2] = lines[2].replace(b"neutrophil/n1.png", b"neutrophil/n\xe91.png")
    elif defect == "unknown split":
        lines[2] = lines[2].replace(b",test,", b",tset,")
    manifest.write_bytes(b"\n".join(lines))
    result = _evaluate(folder, manifest, tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, DataError), repr(result.exception)
    assert "m.csv" in str(result.exception) and "\n" not in str(result.exception)


def test_a_byte_order_mark_is_read_as_the_same_manifest(tmp_path):
    rows = [["pbc", "a/a.png", "neutrophil", "neutrophil", "test", "", ""]]
    plain = _write(tmp_path / "plain.csv", rows)
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert read_manifest(bom).rows == read_manifest(plain).rows
    smears = tmp_path / "smears.csv"
    smears.write_bytes(b"\xef\xbb\xbfimage_id,split\nBloodImage_00001,test\n")
    assert read_smear_manifest(smears).ids("test") == ["BloodImage_00001"]


# ---- property: any bytes ----------------------------------------------------------------------------

FIELD = st.one_of(
    st.sampled_from(["pbc", "folder", "", "a/b.png", "neutrophil", "test", "train", "val", "TEST", "x" * 50,
                     "\r", "\n", "\r\n", '"', '""', ",", "\ufeff", "\x00", " test", "a\rb", "é"]),
    st.text(max_size=12),
)
#: Likely values per column, so that many rows are nearly valid and the checks past the first are reached.
LIKELY = {"dataset": st.sampled_from(["pbc", "pbc", "folder", ""]),
          "path": st.sampled_from(["a.png", "b/c.png", "a.png", "", "d.png\r"]),
          "label": st.sampled_from(["neutrophil", "lymphocyte", "alien", ""]),
          "fine_label": st.sampled_from(["neutrophil", "band_neutrophil", ""]),
          "split": st.sampled_from(SPLITS + SPLITS + ("", "TEST", "tset")),
          "sha256": st.sampled_from(["", "ab" * 32, "x"]), "group": st.sampled_from(["", "g1"])}
HEADER = st.one_of(st.permutations(list(COLUMNS)), st.permutations(list(COLUMNS)),
                   st.lists(st.sampled_from(list(COLUMNS) + ["extra", "", "path"]), max_size=9))


@st.composite
def row_for(draw, header):
    row = [draw(LIKELY[c] if c in LIKELY and draw(st.integers(0, 19)) else FIELD) for c in header]
    cut = draw(st.sampled_from(["keep"] * 8 + ["shorten", "lengthen"]))
    if cut == "shorten":  # a row that lost its last fields
        row = row[:max(0, len(row) - draw(st.integers(1, 3)))]
    elif cut == "lengthen":
        row += draw(st.lists(FIELD, min_size=1, max_size=3))
    return row


@st.composite
def manifest_bytes(draw):
    if not draw(st.integers(0, 4)):
        return draw(st.binary(max_size=300))
    header = draw(HEADER)
    rows = draw(st.lists(row_for(header), min_size=draw(st.sampled_from([0, 1, 1, 1])), max_size=4))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONE]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])), quoting=quoting,
                        escapechar="\\")
    try:
        writer.writerow(header)
        writer.writerows(rows)
    except csv.Error:
        buffer.write(",".join(header) + "\n" + "\n".join(",".join(r) for r in rows))
    text = draw(st.sampled_from(["", "", "", "\ufeff"])) + buffer.getvalue()
    return text.encode(draw(st.sampled_from(["utf-8"] * 6 + ["latin-1", "utf-16"])), errors="replace")


@settings(max_examples=300, deadline=None)
@given(data=manifest_bytes())
def test_read_manifest_returns_or_raises_data_error_on_any_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.csv"
        path.write_bytes(data)
        try:
            manifest = read_manifest(path)
        except DataError as exc:
            assert "\n" not in str(exc)
            event(str(exc).split("m.csv", 1)[-1][:24])
        else:
            event("read")
            assert manifest.rows and isinstance(manifest.dataset, str)
            assert len({r.path for r in manifest.rows}) == len(manifest.rows)
            for row in manifest.rows:
                assert row.split in SPLITS and row.path and row.label
                assert all("\r" not in v and "\n" not in v for v in (row.path, row.label, row.fine_label, row.split,
                                                                      row.sha256, row.group))
        try:
            smears = read_smear_manifest(path)
        except DataError as exc:
            assert "\n" not in str(exc)
        else:
            assert len({r.image_id for r in smears.rows}) == len(smears.rows)
