"""`predict` of the bundled model gives what it gave before the speed work: the same labels, referrals and notes
and the same probabilities within 1e-5, on real single-cell images, smear fields and blank pictures.

The reference (``reference/pbc8_predict.json``) was recorded with the code at the commit it names, by
``python tests/inference/test_predict_reference.py`` (run from the repository root with BLOODCELL_DATA set).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(__file__).parent / "reference" / "pbc8_predict.json"
TOLERANCE = 1e-5


def _inputs(root: Path) -> list[str]:
    """Paths under the data root: PBC test cells (4 per class), PBC originals (2 per class), BCCD smear photos and
    TXL fields of every source."""
    from bloodcell.data.images import class_folders, image_files
    from bloodcell.data.manifest import read_manifest
    from bloodcell.resources import manifest_path

    picks: dict[str, list[str]] = {}
    for row in read_manifest(manifest_path("pbc-seed0")).rows_for("test"):
        picks.setdefault(Path(row.path).parent.name, []).append(f"pbc/{row.path}")
    paths = [path for chosen in picks.values() for path in chosen[:4]]
    originals = root / "pbc_originals_sample"
    paths += [str(p.relative_to(root)) for folder in class_folders(originals) for p in image_files(folder)[:2]]
    paths += [f"bccd/JPEGImages/{p.name}" for p in sorted((root / "bccd" / "JPEGImages").iterdir())[:6]]
    with open(root / "txl" / "sources.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["file"].startswith("val/")]
    for source in sorted({row["source"] for row in rows}):
        paths += [f"txl/{row['file']}" for row in [r for r in rows if r["source"] == source][:3]]
    return paths


def _pictures(root: Path) -> dict[str, np.ndarray]:
    """A blank picture, noise, and fields of 2x2 and 3x3 PBC cells (several white cells: the several-cells note)."""
    from bloodcell.data.images import read_image

    rng = np.random.default_rng(0)
    single = _inputs(root)[:32]  # PBC's 256 x 256 test cells, 4 per class
    cells = [np.asarray(read_image(root / path)) for path in single[::4] + single[1:2]]

    def field(side: int) -> np.ndarray:
        return np.concatenate([np.concatenate(cells[i:i + side], axis=1) for i in range(0, side * side, side)])

    return {"blank": np.full((200, 240, 3), 230, np.uint8),
            "noise": rng.integers(0, 256, (300, 300, 3), dtype=np.uint8),
            "2x2 cells": field(2), "3x3 cells": field(3)}


def _outcomes(root: Path) -> dict:
    from bloodcell.inference.predictor import load

    classifier = load("pbc8", engine="onnx")
    names = _inputs(root)
    pictures = _pictures(root)
    images = [str(root / name) for name in names] + list(pictures.values())
    labels = names + list(pictures)
    runs = {}
    for guard in (True, False):
        results = classifier.predict(images, top_k=len(classifier.class_names), guard=guard, batch_size=16)
        runs["guarded" if guard else "known cells"] = [
            {"input": label, "label": r.label, "referred": r.referred, "reason": r.reason, "note": r.note,
             "error": r.error, "probabilities": dict(r.top_k)} for label, r in zip(labels, results)]
    return runs


def test_predict_gives_the_recorded_outputs(real_data_root):
    from bloodcell.weights import WEIGHTS_DIR

    if not (WEIGHTS_DIR / "pbc8.safetensors").is_file():
        pytest.skip("bundled model pbc8 not trained yet")
    recorded = json.loads(REFERENCE.read_text())
    now = _outcomes(real_data_root)
    assert now.keys() == recorded["runs"].keys()
    for run, expected in recorded["runs"].items():
        assert [r["input"] for r in now[run]] == [r["input"] for r in expected]
        for got, want in zip(now[run], expected):
            assert {k: got[k] for k in ("label", "referred", "reason", "note", "error")} == \
                   {k: want[k] for k in ("label", "referred", "reason", "note", "error")}, got["input"]
            assert got["probabilities"].keys() == want["probabilities"].keys()
            assert max(abs(got["probabilities"][k] - p) for k, p in want["probabilities"].items()) <= TOLERANCE


if __name__ == "__main__":  # record the reference with the code as it is
    import os
    import subprocess

    root = Path(os.environ["BLOODCELL_DATA"])
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    REFERENCE.write_text(json.dumps({"commit": commit, "command": " ".join(["python", *sys.argv]),
                                     "runs": _outcomes(root)}, indent=1) + "\n")
    print(f"wrote {REFERENCE}")
