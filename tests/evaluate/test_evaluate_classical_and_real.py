"""Classical (scikit-learn) scoring, and a smoke test on a few real PBC images."""

from __future__ import annotations

import numpy as np
import pytest
from evaluate_fixtures import COLOURS, make_pbc_dataset, trained_tiny_checkpoint
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from bloodcell.data.dataset import resize_center_crop
from bloodcell.data.registry import PBC_CLASSES
from bloodcell.evaluation.scoring import ScoringModel, align_columns, score_paths
from bloodcell.inference.tta import DIHEDRAL_VIEWS, dihedral_view, dihedral_views
from bloodcell.workflows.evaluate import evaluate


def _mean_colour(images):
    return np.array([np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(0) for image in images])


@pytest.fixture(scope="module")
def colour_pipeline():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, 400)
    x = np.array(COLOURS, dtype=np.float64)[y] + rng.normal(0, 10, (400, 3))
    clf = LogisticRegression(max_iter=2000).fit(x / 255, np.array(PBC_CLASSES)[y])
    return make_pipeline(FunctionTransformer(lambda imgs: _mean_colour(imgs) / 255), clf)


def test_classical_scores_rgb_arrays_and_skips_bad_files(colour_pipeline, tmp_path):
    make_pbc_dataset(tmp_path, {"test": 2}, corrupt=1)
    paths = sorted((tmp_path / "pbc").rglob("*.png"))
    model = ScoringModel("sklearn", colour_pipeline, "sk/colour", list(PBC_CLASSES), 1.0, {}, input_size=16)
    scores = score_paths(model, paths, batch_size=5)
    assert len(scores.indices) == 16 and len(scores.skipped) == 1 and "corrupt" in scores.skipped[0][0]
    probs = scores.probabilities(1.0)
    good = [paths[i] for i in scores.indices]
    expected = colour_pipeline.predict_proba(np.stack([np.asarray(resize_center_crop(Image.open(p).convert("RGB"), 16))
                                                       for p in good]))
    np.testing.assert_allclose(probs, expected, atol=1e-9)
    assert not np.allclose(scores.probabilities(3.0), probs)  # temperature applies to classical too


def test_evaluate_a_classical_model_with_tta_ignored(colour_pipeline, tmp_path):
    manifest = make_pbc_dataset(tmp_path, {"train": 1, "test": 3})
    model = ScoringModel("sklearn", colour_pipeline, "sk/colour", list(PBC_CLASSES), 1.0, {}, input_size=16)
    checkpoint = tmp_path / "colour.skops"
    checkpoint.write_bytes(b"stand-in file for the checksum")
    ev = evaluate(checkpoint, manifest=manifest, data_root=tmp_path, tta=True, n_boot=20, model=model)
    assert ev.result["metrics"]["accuracy"] == pytest.approx(1.0)
    assert ev.result["provenance"]["tta"] is False and ev.result["provenance"]["n_parameters"] is None
    assert any("torch models only" in note for note in ev.result["notes"])


def test_align_columns_by_index_and_by_name():
    probs = np.array([[0.2, 0.8]])
    np.testing.assert_allclose(align_columns(probs, np.array([0, 2]), ["a", "b", "c"]), [[0.2, 0.0, 0.8]])
    np.testing.assert_allclose(align_columns(probs, np.array(["c", "a"]), ["a", "b", "c"]), [[0.8, 0.0, 0.2]])


@pytest.mark.realdata
def test_real_pbc_folder_smoke(real_data_root, tmp_path):
    checkpoint = trained_tiny_checkpoint(tmp_path / "tiny.safetensors")
    ev = evaluate(checkpoint, dataset="folder", data_root=real_data_root / "pbc", limit=48, n_boot=20)
    result = ev.result
    assert result["counts"]["scored"] == 48 and result["counts"]["skipped"] == 0
    assert result["label"].endswith("SUBSET (--limit 48: a quick look)")  # never passed off as the whole split
    assert result["is_test_result"] is False
    from bloodcell.report.summary import count_rows

    assert count_rows(result)[0] == ("Images taken from the split (a subset: --limit 48)", "48")
    assert all(result["class_mapping"][c] == c for c in PBC_CLASSES)
    supports = [row["support"] for row in result["metrics"]["per_class"]]
    assert sum(supports) == 48 and min(supports) >= 1  # stratified: every class, in proportion
    assert not any(".DS_" in p["path"] for p in ev.predictions)


def test_tta_views_are_the_eight_distinct_dihedral_views_untouched_first():
    batch = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    views = dihedral_views(batch).reshape(8, 2, 3, 4, 4)
    np.testing.assert_array_equal(views[0], batch)
    for view, (k, flip) in zip(views, DIHEDRAL_VIEWS):
        np.testing.assert_array_equal(view, dihedral_view(batch, k, flip))
    assert len({v.tobytes() for v in views}) == 8
