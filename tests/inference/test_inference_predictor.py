"""Python API: predict on paths/PIL/arrays, top-k, referral, temperature, TTA, bundled weights."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from inference_synthetic import CLASSES, synthetic_cells
from PIL import Image

from bloodcell.errors import WeightsUnavailableError
from bloodcell.inference.predictor import DIHEDRAL_VIEWS, Prediction


def test_import_bloodcell_does_not_import_torch():
    code = "import sys, bloodcell; assert bloodcell.__version__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_load_without_bundled_weights_explains_what_to_do(monkeypatch, tmp_path):
    import bloodcell
    import bloodcell.weights as weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(WeightsUnavailableError, match=r"pbc8.*missing.*bloodcell train.*--model"):
        bloodcell.load()


def test_predict_accepts_paths_pil_and_arrays_and_reports_bad_inputs(classifier, tmp_path):
    images, labels = synthetic_cells(8, seed=1)
    path = tmp_path / "cell.png"
    Image.fromarray(images[0]).save(path)
    results = classifier.predict([str(path), Image.fromarray(images[1]), images[2], b"garbage", tmp_path / "missing.jpg"])
    assert [r.error is None for r in results] == [True, True, True, False, False]
    assert results[0].path == str(path) and results[1].path is None
    assert "not an image" in results[3].error and "not found" in results[4].error
    assert results[3].label is None and results[3].confidence is None and results[3].referred is None
    single = classifier.predict(images[0])
    assert isinstance(single, Prediction) and single.label == results[0].label
    bad_single = classifier.predict(b"")
    assert bad_single.error and bad_single.label is None
    batch = classifier.predict(np.stack(images))
    assert isinstance(batch, list) and len(batch) == 8
    accuracy = np.mean([r.label == CLASSES[y] for r, y in zip(batch, labels)])
    assert accuracy >= 0.75  # the fixture model learned the synthetic classes
    assert classifier.predict([]) == []


def test_top_k_is_sorted_calibrated_and_sums_to_one_over_all_classes(classifier):
    images, _ = synthetic_cells(4, seed=2)
    for result in classifier.predict(images, top_k=len(CLASSES)):
        probs = [p for _, p in result.top_k]
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-6)
        assert result.top_k[0] == (result.label, result.confidence)
    two = classifier.predict(images[0], top_k=2)
    assert len(two.top_k) == 2 and two.to_record()["top_k"].count(";") == 1
    # the checkpoint's temperature 1.3 is applied to the logits
    batch = classifier.preprocess([Image.fromarray(images[0])])
    logits, _ = classifier.backend.run(batch)
    expected = np.exp(logits[0] / 1.3) / np.exp(logits[0] / 1.3).sum()
    assert classifier.temperature == pytest.approx(1.3)
    assert classifier.predict(images[0]).confidence == pytest.approx(expected.max(), abs=1e-6)


def test_refer_below_marks_low_confidence(classifier):
    images, _ = synthetic_cells(6, seed=3)
    plain = classifier.predict(images)
    threshold = float(np.median([r.confidence for r in plain])) + 1e-9
    referred = classifier.predict(images, refer_below=threshold)
    for before, after in zip(plain, referred):
        assert after.referred == (before.confidence < threshold)
        assert (after.reason or "").startswith("low confidence") == after.referred
    assert all(r.referred is False and r.reason is None for r in plain)


def test_tta_equals_mean_of_manual_dihedral_views(classifier):
    images, _ = synthetic_cells(2, seed=4)
    tta = classifier.predict(images, top_k=len(CLASSES), tta=True)
    for image, result in zip(images, tta):
        views = []
        for k, flip in DIHEDRAL_VIEWS:
            view = np.rot90(image, k)
            views.append(np.ascontiguousarray(view[:, ::-1] if flip else view))
        manual = classifier.predict_proba([Image.fromarray(v) for v in views]).mean(axis=0)
        got = np.array([dict(result.top_k)[name] for name in CLASSES])
        np.testing.assert_allclose(got, manual, atol=5e-4)  # resampling is not exactly rotation-equivariant (1.2e-4 seen)
    assert len(set(DIHEDRAL_VIEWS)) == 8


def test_invalid_options_raise_clear_errors(classifier):
    from bloodcell.errors import CheckpointError, ConfigError
    from bloodcell.inference.predictor import load

    with pytest.raises(ConfigError, match="refer_below"):
        classifier.predict([np.zeros((8, 8, 3), np.uint8)], refer_below=1.5)
    with pytest.raises(ConfigError, match="engine"):
        load("pbc8", engine="tensorrt")
    with pytest.raises(CheckpointError, match="no such model file"):
        load("does/not/exist.safetensors")


def _field(cells: list[tuple[int, int]]) -> Image.Image:
    """A pale 300x220 photo with a 40-px purple cell at each centre."""
    from PIL import ImageDraw

    image = Image.new("RGB", (300, 220), (235, 225, 230))
    for x, y in cells:
        ImageDraw.Draw(image).ellipse((x - 20, y - 20, x + 20, y + 20), fill=(90, 40, 140))
    return image


def test_cell_framed_model_searches_each_image_once_and_frames_it_as_its_pixels_do(classifier, monkeypatch):
    """A model trained on framed cells: ``predict`` frames each input and checks for several cells from one search
    of its stained groups, and reaches exactly the input pixels of the framing pixel transform."""
    from dataclasses import replace

    from bloodcell import framing
    from bloodcell.inference.predictor import SEVERAL_CELLS_NOTE, Classifier
    from bloodcell.transforms import finish_pixels

    framed = Classifier(classifier.backend, classifier.class_names,
                        replace(classifier.data_config, framing="cell"), classifier.temperature)
    lone, pair = _field([(170, 100)]), _field([(150, 110), (40, 40)])
    searches = []
    original = framing._stained_groups
    monkeypatch.setattr(framing, "_stained_groups", lambda image: searches.append(1) or original(image))
    results = framed.predict([lone, pair], top_k=len(CLASSES))
    assert len(searches) == 2  # one search per image, not one to frame and another to count
    assert results[0].note is None and results[1].note == SEVERAL_CELLS_NOTE.format(2)
    for image in (lone, pair):
        for single_cell in (False, True):
            staged, _, _ = framed._decode(image, single_cell)
            pixels = finish_pixels(staged[None], framed.data_config)[0]
            assert np.array_equal(pixels, framed.pixels([image])[0])  # as DataConfig.prepare frames it
    assert not np.array_equal(framed.pixels([lone]), classifier.pixels([lone]))  # the framing did crop


def test_a_single_cell_crop_with_a_neighbour_at_its_edge_is_not_told_to_use_count(classifier):
    """Issue 26: PBC originals with a second cell cut by the edge were told to count smear photos."""
    from PIL import ImageDraw

    from bloodcell.inference.predictor import SEVERAL_CELLS_NOTE

    crop = Image.new("RGB", (160, 160), (235, 225, 230))
    ImageDraw.Draw(crop).ellipse((45, 45, 115, 115), fill=(90, 40, 140))
    ImageDraw.Draw(crop).ellipse((132, 30, 200, 110), fill=(90, 40, 140))  # a neighbour cut by the edge
    field = Image.new("RGB", (640, 480), (235, 225, 230))
    for x, y in ((320, 240), (100, 100), (500, 380)):
        ImageDraw.Draw(field).ellipse((x - 40, y - 40, x + 40, y + 40), fill=(90, 40, 140))
    results = classifier.predict([crop, field], top_k=1)
    assert results[0].note is None or "bloodcell count" not in results[0].note
    assert results[1].note.startswith(SEVERAL_CELLS_NOTE.format(3)[:20])
