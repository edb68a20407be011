"""ONNX export: fp32 parity with PyTorch, metadata, int8 agreement, and the real-data int8 check."""

from __future__ import annotations

import numpy as np
import pytest
from inference_synthetic import synthetic_cells
from PIL import Image

from bloodcell.inference.onnx import export_onnx
from bloodcell.inference.predictor import load


@pytest.fixture(scope="module")
def onnx_paths(trained_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    fp32 = export_onnx(trained_checkpoint, folder / "fp32.onnx")
    int8 = export_onnx(trained_checkpoint, folder / "int8.onnx", int8=True)
    return fp32, int8


def _images(n: int, seed: int) -> list[Image.Image]:
    return [Image.fromarray(im) for im in synthetic_cells(n, seed)[0]]


def test_fp32_onnx_matches_torch(classifier, onnx_paths):
    onnx_clf = load(onnx_paths[0])
    assert onnx_clf.class_names == classifier.class_names and onnx_clf.temperature == classifier.temperature
    images = _images(6, seed=11)
    torch_probs = classifier.predict_proba(images)
    onnx_probs = onnx_clf.predict_proba(images)
    assert np.abs(torch_probs - onnx_probs).max() < 1e-4
    batch = classifier.preprocess(images)
    np.testing.assert_allclose(onnx_clf.backend.run(batch)[1], classifier.backend.run(batch)[1], atol=1e-3, rtol=1e-4)


def test_onnx_runs_batches_in_parallel_and_keeps_the_input_order(classifier, onnx_paths, tmp_path):
    onnx_clf = load(onnx_paths[0], num_threads=3)
    assert onnx_clf.backend.concurrent and onnx_clf.workers == 3
    images = _images(23, seed=14)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    inputs = images[:9] + [str(bad)] + images[9:]
    results = onnx_clf.predict(inputs, batch_size=4, top_k=1)  # 6 batches, 3 at a time
    assert len(results) == 24 and results[9].error and "not an image" in results[9].error
    expected = classifier.predict(images, batch_size=32, top_k=1)
    good = results[:9] + results[10:]
    assert [r.label for r in good] == [r.label for r in expected]
    np.testing.assert_allclose([r.confidence for r in good], [r.confidence for r in expected], atol=1e-4)


@pytest.mark.parametrize("workers, decoding", [(2, 1), (4, 2)])
def test_at_most_half_of_the_workers_decode_at_once(onnx_paths, monkeypatch, workers, decoding):
    """Decoding passes the interpreter lock back and forth between threads: half of the workers decode while the
    others' model calls run."""
    import threading
    import time

    from bloodcell.inference.predictor import Classifier

    onnx_clf = load(onnx_paths[0], num_threads=workers)
    active, most, guard = [0], [0], threading.Lock()
    original = Classifier._decode

    def slow_decode(self, item, single_cell):
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.01)
        try:
            return original(self, item, single_cell)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(Classifier, "_decode", slow_decode)
    results = onnx_clf.predict(_images(16, seed=15), batch_size=2, top_k=1)
    assert most[0] == decoding and all(r.label for r in results)


def test_real_registry_architecture_exports_with_parity(tmp_path):
    import torch

    from bloodcell.checkpoint import CheckpointMeta, save_checkpoint
    from bloodcell.models import create_model

    torch.manual_seed(1)
    model = create_model("efficientnet_lite0", num_classes=3, class_names=["a", "b", "c"], input_size=64).eval()
    path = save_checkpoint(tmp_path / "lite.safetensors", model, CheckpointMeta("efficientnet_lite0", model.data_config))
    images = _images(3, seed=12)
    torch_probs = load(path).predict_proba(images)
    onnx_probs = load(export_onnx(path, tmp_path / "lite.onnx")).predict_proba(images)
    assert np.abs(torch_probs - onnx_probs).max() < 1e-4


def test_onnx_engine_from_safetensors_equals_exported_file(trained_checkpoint, onnx_paths):
    images = _images(3, seed=13)
    in_memory = load(trained_checkpoint, engine="onnx").predict_proba(images)
    from_file = load(onnx_paths[0]).predict_proba(images)
    np.testing.assert_allclose(in_memory, from_file, atol=1e-6)


def test_int8_model_runs_and_mostly_agrees(classifier, onnx_paths):
    fp32_size, int8_size = (p.stat().st_size for p in onnx_paths)
    assert int8_size < fp32_size / 2
    int8 = load(onnx_paths[1])
    images = _images(32, seed=14)
    agree = (int8.predict_proba(images).argmax(1) == classifier.predict_proba(images).argmax(1)).mean()
    assert agree >= 0.85


def _int8_format(path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The int8 weight tensors and the activation zero points of a QDQ model."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    weights = [constants[n.input[0]] for n in graph.node
               if n.op_type == "DequantizeLinear" and constants.get(n.input[0]) is not None
               and constants[n.input[0]].dtype == np.int8]
    activations = [constants[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    return weights, activations


def _assert_saturation_safe(path) -> None:
    """onnxruntime's fast x86 int8 kernels take u8 activations and s8 weights; weights in [-64, 64] (onnxruntime's
    reduce_range) cannot saturate the 16-bit pair sums of CPUs without VNNI (2 x 255 x 64 < 2 ** 15)."""
    weights, activations = _int8_format(path)
    assert weights and activations
    assert all(w.min() >= -64 and w.max() <= 64 for w in weights) and max(w.max() for w in weights) > 32
    assert all(zero.dtype == np.uint8 for zero in activations)


def test_static_int8_has_unsigned_activations_and_7_bit_weights(classifier, trained_checkpoint, tmp_path):
    calibration = [classifier.preprocess(_images(4, seed=seed)) for seed in (21, 22)]
    path = export_onnx(trained_checkpoint, tmp_path / "static.onnx", int8=True, calibration=calibration)
    _assert_saturation_safe(path)
    int8 = load(path)
    images = _images(32, seed=14)
    assert (int8.predict_proba(images).argmax(1) == classifier.predict_proba(images).argmax(1)).mean() >= 0.85


def test_bundled_int8_is_the_bundled_pbc8_quantized():
    """pbc8-int8 carries pbc8's classes, preprocessing, temperature and guard, and names the very pbc8 file it was
    exported from: re-calibrating pbc8 without exporting it again fails here."""
    from bloodcell.checkpoint import read_checkpoint_meta
    from bloodcell.inference.onnx import read_document
    from bloodcell.provenance import file_sha256
    from bloodcell.weights import resolve

    int8 = load("pbc8-int8")
    document = read_document(int8.backend, "pbc8-int8")
    meta = read_checkpoint_meta("pbc8")
    assert int8.engine == "onnx" and document["quantization"] == "static-qdq"
    assert document["source_checkpoint_sha256"] == file_sha256(resolve("pbc8"))
    assert int8.class_names == meta["class_names"] and document["temperature"] == meta["temperature"]
    assert int8.data_config.to_dict() == load("pbc8").data_config.to_dict()
    assert document["ood"] == meta["ood"] and int8.guard is not None
    _assert_saturation_safe(resolve("pbc8-int8"))


@pytest.mark.parametrize("command", [["adapt", "--model", "pbc8-int8", "--output", "{tmp}/a.safetensors", "{tmp}"],
                                     ["calibrate-ood", "--model", "pbc8-int8", "--manifest", "pbc-seed0"],
                                     ["export", "--model", "pbc8-int8", "--output", "{tmp}/b.onnx"],
                                     ["count", "--detector", "pbc8-int8", "{tmp}/photo.png", "--output", "{tmp}/out"]])
def test_an_exported_model_where_a_checkpoint_is_needed_is_refused_saying_what_to_use(command, tmp_path):
    from typer.testing import CliRunner

    from bloodcell.cli.main import app
    from bloodcell.errors import BloodcellError

    Image.fromarray(synthetic_cells(1, seed=3)[0][0]).save(tmp_path / "photo.png")
    result = CliRunner().invoke(app, [part.format(tmp=tmp_path) for part in command])
    # a BloodcellError: `bloodcell` prints its one sentence and exits 1 (tests/cli/test_cli_errors.py)
    assert isinstance(result.exception, BloodcellError), result.output
    message = str(result.exception)
    assert message.startswith("pbc8-int8.onnx")
    assert ("the bundled detector is smear-detector" if "--detector" in command else "use pbc8, the checkpoint") in message


@pytest.mark.realdata
@pytest.mark.slow
def test_bundled_int8_loses_at_most_2_accuracy_points(real_data_root):
    """The bundled pbc8-int8 (per-channel 7-bit weights, activations calibrated on validation images) on a fixed
    test slice."""
    from bloodcell.data.images import read_image
    from bloodcell.data.manifest import read_manifest

    fp32, int8 = load("pbc8"), load("pbc8-int8")
    rows = sorted(read_manifest("pbc-seed0").rows_for("test"), key=lambda r: (r.label, r.path))
    fixed_slice = [r for name in fp32.class_names for r in [row for row in rows if row.label == name][:40]]
    images = [read_image(real_data_root / "pbc" / r.path) for r in fixed_slice]
    truth = np.array([fp32.class_names.index(r.label) for r in fixed_slice])
    acc32 = (fp32.predict_proba(images).argmax(1) == truth).mean()
    acc8 = (int8.predict_proba(images).argmax(1) == truth).mean()
    assert len(images) == 320 and acc32 > 0.9
    assert acc32 - acc8 <= 0.02


@pytest.mark.realdata
@pytest.mark.slow
def test_the_int8_cards_command_makes_the_bundled_file_again(real_data_root, tmp_path):
    """`bloodcell export --model pbc8 --int8 --calibration-manifest pbc-seed0` (pbc8-int8's card) quantizes as the
    bundled file was: the same weights, and on real cells the same probabilities within 0.01 (its activation ranges,
    measured on validation images, may differ in the last bits on another CPU)."""
    from typer.testing import CliRunner

    from bloodcell.cli.main import app
    from bloodcell.data.images import read_image
    from bloodcell.data.manifest import read_manifest
    from bloodcell.weights import resolve

    out = tmp_path / "again.onnx"
    result = CliRunner().invoke(app, ["export", "--model", "pbc8", "--int8", "--calibration-manifest", "pbc-seed0",
                                      "--data-root", str(real_data_root), "--output", str(out)])
    assert result.exit_code == 0, result.output
    weights, bundled = _int8_format(out)[0], _int8_format(resolve("pbc8-int8"))[0]
    assert len(weights) == len(bundled) == 50 and all(np.array_equal(a, b) for a, b in zip(weights, bundled))
    rows = read_manifest("pbc-seed0").rows_for("test")[::100]
    images = [read_image(real_data_root / "pbc" / row.path) for row in rows]
    np.testing.assert_allclose(load(out).predict_proba(images), load("pbc8-int8").predict_proba(images), atol=0.01)
