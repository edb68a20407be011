"""The main job (``make demo``) end to end on the shared PBC copy, with a small evaluation subset."""

from __future__ import annotations

import csv


def test_demo_checks_splits_evaluates_and_classifies_only_test_originals(real_data_root, tmp_path):
    from bloodcell.data.manifest import read_manifest
    from bloodcell.workflows.demo import FROZEN_MANIFEST, run_demo

    result = run_demo(tmp_path / "demo", data_root=real_data_root, limit=40)
    assert set(result.outputs) == {"integrity report", "split manifest", "class balance and samples",
                                   "evaluation report", "predictions"}
    assert all(path.is_file() for path in result.outputs.values())
    assert any(f.startswith("split: identical to the frozen manifest") for f in result.findings), result.findings
    with open(result.outputs["predictions"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    test_stems = {row.path.rsplit(".", 1)[0] for row in read_manifest(FROZEN_MANIFEST).rows_for("test")}
    classified = {"/".join(row["path"].replace("\\", "/").split("/")[-2:]).rsplit(".", 1)[0] for row in rows}
    assert rows and classified <= test_stems  # originals of training images would flatter the model
    assert not any(row["error"] for row in rows)
