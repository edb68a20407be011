"""Classical baselines: segmentation and features on drawn cells, sk/... pipelines, .skops files, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from joblib import parallel_config
from PIL import Image

from bloodcell.errors import CheckpointError
from bloodcell.models import create_model
from bloodcell.models.classical import (
    FEATURE_NAMES,
    CellFeatureExtractor,
    image_features,
    load_classical,
    save_classical,
)
from bloodcell.segmentation import lobe_count, preprocess, segment
from bloodcell.train.classical import train_classical

SIZE = 128
BACKGROUND, CYTOPLASM, NUCLEUS, RED_CELL = (238, 218, 222), (196, 178, 222), (92, 42, 142), (222, 150, 162)


def draw_cell(kind: str, rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, float]:
    """A drawn cell (``round``, ``lobed`` = 3 separate lobes, ``kidney``) and its nucleus/cell area ratio."""
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = BACKGROUND
    for _ in range(4):  # red cells around, away from the centre
        angle = rng.uniform(0, 2 * np.pi)
        centre = (int(size / 2 + 50 * np.cos(angle)), int(size / 2 + 50 * np.sin(angle)))
        cv2.circle(image, centre, 12, RED_CELL, -1)
    c = size // 2 + int(rng.integers(-3, 4))
    radius = int(rng.integers(30, 35))
    cell = cv2.circle(np.zeros((size, size), np.uint8), (c, c), radius, 1, -1)
    nucleus = np.zeros((size, size), np.uint8)
    if kind == "round":
        cv2.circle(nucleus, (c, c), int(radius * 0.6), 1, -1)
    elif kind == "lobed":
        for angle in (0.3, 2.4, 4.5):
            cv2.circle(nucleus, (int(c + 15 * np.cos(angle)), int(c + 15 * np.sin(angle))), 8, 1, -1)
    else:
        cv2.ellipse(nucleus, (c, c), (22, 13), 0, 0, 360, 1, -1)
        cv2.circle(nucleus, (c, c + 12), 9, 0, -1)
    image[cell > 0] = CYTOPLASM
    image[nucleus > 0] = NUCLEUS
    noisy = image.astype(float) + rng.normal(0, 5, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), nucleus.sum() / cell.sum()


def feature(vector: np.ndarray, name: str) -> float:
    return float(vector[FEATURE_NAMES.index(name)])


@pytest.mark.parametrize("kind", ["round", "lobed", "kidney"])
def test_segmentation_finds_cell_and_nucleus(kind):
    image, drawn_ratio = draw_cell(kind, np.random.default_rng(1))
    seg = segment(preprocess(image))
    assert seg.failure is None
    assert seg.nucleus.sum() / seg.cell.sum() == pytest.approx(drawn_ratio, abs=0.08)
    assert not seg.cell[:10, :10].any() and seg.cell[SIZE // 2, SIZE // 2]
    assert lobe_count(seg.nucleus) == (3 if kind == "lobed" else 1)


def test_shape_and_texture_features():
    rng = np.random.default_rng(2)
    round_features, failure = image_features(draw_cell("round", rng)[0])
    kidney_features, _ = image_features(draw_cell("kidney", rng)[0])
    assert failure is None and feature(round_features, "segmentation_failed") == 0
    assert feature(round_features, "cell_circularity") == pytest.approx(1.0, abs=0.1)
    assert feature(round_features, "nucleus_solidity") > feature(kidney_features, "nucleus_solidity")
    assert feature(round_features, "nucleus_R_mean") < feature(round_features, "cytoplasm_R_mean")
    texture = [i for i, n in enumerate(FEATURE_NAMES) if n.startswith(("glcm_", "lbp_"))]
    assert np.isfinite(round_features[texture]).all() and np.abs(round_features[texture]).sum() > 0
    lbp_cell = [i for i, n in enumerate(FEATURE_NAMES) if n.startswith("lbp_cell_")]
    assert round_features[lbp_cell].sum() == pytest.approx(1.0)


def test_segmentation_failure_is_reported_not_raised():
    rng = np.random.default_rng(3)
    blank = np.full((SIZE, SIZE, 3), 230, np.uint8)
    images = np.stack([draw_cell("round", rng)[0], blank, draw_cell("lobed", rng)[0]])
    extractor = CellFeatureExtractor()
    features = extractor.transform(images)
    assert features.shape == (3, len(FEATURE_NAMES)) and np.isfinite(features).all()
    assert [i for i, _ in extractor.failures_] == [1] and "contrast" in extractor.failures_[0][1]
    assert features[:, FEATURE_NAMES.index("segmentation_failed")].tolist() == [0, 1, 0]


def test_parallel_extraction_matches_serial():
    rng = np.random.default_rng(4)
    images = [draw_cell("kidney", rng)[0] for _ in range(12)]  # one chunk per worker
    images[7] = np.full((SIZE, SIZE, 3), 230, np.uint8)
    extractor = CellFeatureExtractor(n_jobs=2)
    with parallel_config(backend="threading"):  # chunking and order are under test, not process start-up
        parallel = extractor.transform(images)
    np.testing.assert_allclose(parallel, CellFeatureExtractor().transform(np.stack(images)))
    assert [i for i, _ in extractor.failures_] == [7]


def synthetic_set(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    kinds = ["round", "lobed", "kidney"]
    images = [draw_cell(kinds[i % 3], rng)[0] for i in range(3 * per_class)]
    return np.stack(images), np.arange(3 * per_class) % 3


@pytest.fixture(scope="module")
def synthetic_split():
    return synthetic_set(8, seed=10), synthetic_set(5, seed=11)


@pytest.mark.parametrize("name", ["sk/svm", "sk/rf", "sk/knn", "sk/mlp"])
def test_pipelines_fit_and_predict(name, synthetic_split):
    (train_x, train_y), (test_x, test_y) = synthetic_split
    pipeline = create_model(name, num_classes=3, class_names=["a", "b", "c"])
    assert pipeline.model_name == name and pipeline.data_config.input_size == 128
    pipeline.fit(train_x, train_y)
    probs = pipeline.predict_proba(test_x)
    assert list(pipeline.classes_) == [0, 1, 2]
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert (pipeline.predict(test_x) == test_y).mean() > 0.6  # chance is 1/3


def test_train_save_load_round_trip(synthetic_split, tmp_path):
    (train_x, train_y), (val_x, val_y) = synthetic_split
    out = tmp_path / "svm.skops"
    pipeline, metrics = train_classical("sk/svm", train_x, train_y, val_x, val_y, ["a", "b", "c", "d"], out,
                                        meta={"taxonomy": "test", "manifest_sha256": "abc"})
    assert metrics["val_acc"] > 0.6 and metrics["n_train"] == 24 and metrics["segmentation_failures_train"] == 0
    loaded, meta = load_classical(out)
    np.testing.assert_array_equal(loaded.predict_proba(val_x), pipeline.predict_proba(val_x))
    assert meta["class_names"] == ["a", "b", "c", "d"] and meta["input_size"] == SIZE
    assert meta["taxonomy"] == "test" and meta["manifest_sha256"] == "abc" and meta["temperature"] > 0
    assert meta["best_params"] in [t["params"] for t in meta["grid"]] and len(meta["grid"]) == 2
    assert loaded.data_config.class_names == ("a", "b", "c", "d") and loaded.model_name == "sk/svm"


def test_bad_checkpoints_raise_checkpoint_error(tmp_path):
    corrupt = tmp_path / "corrupt.skops"
    corrupt.write_bytes(b"not a zip archive at all")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_classical(corrupt)
    with pytest.raises(CheckpointError, match="not found"):
        load_classical(tmp_path / "missing.skops")
    from collections import OrderedDict

    import skops.io as sio

    foreign = tmp_path / "foreign.skops"
    sio.dump({"pipeline": OrderedDict(a=1), "meta_json": "{}", "x": Path("/")}, foreign)
    with pytest.raises(CheckpointError, match="untrusted"):
        load_classical(foreign)


def test_save_refuses_unserialisable_metadata(tmp_path):
    pipeline = create_model("sk/knn", num_classes=2)
    with pytest.raises(TypeError, match="JSON"):
        save_classical(tmp_path / "x.skops", pipeline, {"bad": object()})


def _write_manifest(root: Path) -> Path:
    """``root/pbc/<class>/*.png`` drawn cells and a manifest (train/val/test) as the trainer reads it."""
    from bloodcell.data.manifest import ManifestRow, write_manifest
    from bloodcell.provenance import file_sha256

    rng = np.random.default_rng(5)
    rows = []
    for label, kind in (("lymphocyte", "round"), ("neutrophil", "lobed"), ("monocyte", "kidney")):
        (root / "pbc" / label).mkdir(parents=True)
        for i in range(12):
            rel = f"{label}/{label[:2].upper()}_{i}.png"
            Image.fromarray(draw_cell(kind, rng, size=150)[0]).save(root / "pbc" / rel)
            split = "train" if i < 6 else "val" if i < 9 else "test"
            rows.append(ManifestRow(rel, label, label, split, file_sha256(root / "pbc" / rel), f"{label}-{i}"))
    write_manifest(root / "manifest.csv", "pbc", rows)
    return root / "manifest.csv"


@pytest.mark.slow
def test_cli_train_and_evaluate_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from bloodcell.cli.main import app
    from bloodcell.errors import BloodcellError
    runner = CliRunner()
    manifest = _write_manifest(tmp_path)
    run, out = tmp_path / "run", tmp_path / "eval"
    result = runner.invoke(app, ["train", "--model", "sk/svm", "--manifest", str(manifest), "--data-root",
                                 str(tmp_path / "pbc"), "--out", str(run), "--threads", "1", "--no-cache"])
    assert result.exit_code == 0, result.output
    _, meta = load_classical(run / "best.skops")
    assert meta["model_name"] == "sk/svm" and len(meta["class_names"]) == 8 and meta["metrics"]["n_train"] == 18
    result = runner.invoke(app, ["evaluate", "--model", str(run / "best.skops"), "--manifest", str(manifest),
                                 "--data-root", str(tmp_path), "--output", str(out), "--n-boot", "20"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["scored"] == 9 and metrics["metrics"]["accuracy"] > 0.5
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "manifest.csv"), "--manifest", str(manifest),
                                 "--output", str(out)])
    assert result.exit_code != 0 and isinstance(result.exception, BloodcellError)


@pytest.mark.realdata
def test_segmentation_on_real_pbc_white_cells(real_data_root):
    from bloodcell.data.dataset import resize_center_crop

    paths = [p for c in ("neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil")
             for p in sorted((real_data_root / "pbc" / c).glob("[!.]*.jpg"))[:8]]
    images = np.stack([np.asarray(resize_center_crop(Image.open(p).convert("RGB"), SIZE)) for p in paths])
    extractor = CellFeatureExtractor()
    features = extractor.transform(images)
    assert len(paths) == 40 and len(extractor.failures_) <= 4 and np.isfinite(features).all()
    ratios = features[:, FEATURE_NAMES.index("nucleus_cell_ratio")]
    assert np.median(ratios) < 0.95 and (ratios > 0.2).mean() > 0.9  # a nucleus inside a larger cell


def _pbc_images(root: Path, per_class: slice) -> tuple[np.ndarray, np.ndarray]:
    """128 px PBC images of all 8 classes (the files ``per_class`` of each sorted class folder)."""
    from bloodcell.data.dataset import resize_center_crop

    classes = sorted(p.name for p in (root / "pbc").iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / "pbc" / name).glob("[!.]*.jpg"))[per_class]:
            images.append(np.asarray(resize_center_crop(Image.open(path).convert("RGB"), SIZE)))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


@pytest.mark.realdata
@pytest.mark.slow
def test_svm_on_real_pbc_beats_chance(real_data_root):
    train_x, train_y = _pbc_images(real_data_root, slice(0, 25))
    test_x, test_y = _pbc_images(real_data_root, slice(25, 35))
    assert len(train_y) == 200 and len(test_y) == 80
    pipeline = create_model("sk/svm", num_classes=8).fit(train_x, train_y)
    accuracy = (pipeline.predict(test_x) == test_y).mean()
    assert accuracy > 0.35  # chance is 1/8; balanced classes
