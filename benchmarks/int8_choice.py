"""How the bundled model's int8 format was chosen: accuracy on PBC validation and the network's speed per format.

Each candidate is a static QDQ export of the bundled pbc8 (per-channel weights, activations calibrated with min-max on
the first 200 seeded validation images, as ``bloodcell export --int8 --calibration-manifest`` does), differing in
activation type (signed or unsigned) and weight range (full 8 bits, or [-64, 64] with onnxruntime's
``reduce_range``); and the dynamic export that ``--int8`` writes without calibration images. Each is scored on the whole validation split of the manifest (never the test split; 200 of its
images calibrated the activations) through ``Classifier.predict``, and its network is timed alone on one thread
(batches of 8, as predict runs them; the median of ``--repeats`` passes, the candidates taken in turn in each pass).

    python benchmarks/int8_choice.py [--manifest pbc-seed0] [--repeats 7]

Writes benchmarks/results/int8_choice.json with the command and the git commit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "int8_choice.json"
#: (name, unsigned activations, weights in [-64, 64])
CANDIDATES = (("s8 activations, 8-bit weights", False, False), ("u8 activations, 8-bit weights", True, False),
              ("u8 activations, weights in [-64, 64]", True, True))
DYNAMIC = "dynamic: activations quantized on the fly, 8-bit weights"


def _quantize(source: Path, out: Path, batches: list[np.ndarray], unsigned: bool, reduced: bool) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from bloodcell.inference.onnx import CalibrationReader

    quantize_static(str(source), str(out), CalibrationReader(batches), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduced, activation_type=QuantType.QUInt8 if unsigned else QuantType.QInt8,
                    weight_type=QuantType.QInt8)
    return out


def _network_ms(paths: dict[str, Path], repeats: int) -> dict[str, float]:
    """Median ms per image of each model's network alone, one thread, batches of 8."""
    import onnxruntime as ort

    batch = np.random.default_rng(0).standard_normal((64, 3, 128, 128)).astype(np.float32)
    sessions = {}
    for name, path in paths.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        sessions[name] = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            feed = session.get_inputs()[0].name
            session.run(None, {feed: batch[:8]})
            start = time.perf_counter()
            for first in range(0, len(batch), 8):
                session.run(None, {feed: batch[first:first + 8]})
            times[name].append((time.perf_counter() - start) / len(batch) * 1000)
    return {name: round(statistics.median(values), 3) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", default="pbc-seed0")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from bloodcell.checkpoint import load_checkpoint
    from bloodcell.data.locate import dataset_root
    from bloodcell.data.manifest import read_manifest
    from bloodcell.evaluation.evaluate import git_commit
    from bloodcell.inference.onnx import with_metadata, export_bytes, onnx_document
    from bloodcell.inference.predictor import load
    from bloodcell.weights import resolve
    from bloodcell.workflows.calibrate import int8_calibration_batches

    checkpoint = resolve("pbc8")
    batches = int8_calibration_batches(checkpoint, args.manifest)
    loaded = load_checkpoint(checkpoint)
    manifest = read_manifest(args.manifest)
    val = list(manifest.rows_for("val"))
    files = [str(dataset_root(manifest.dataset) / row.path) for row in val]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raw, prepared = Path(tmp) / "raw.onnx", Path(tmp) / "fp32.onnx"
        raw.write_bytes(export_bytes(loaded.model, loaded.data_config.input_size))
        quant_pre_process(str(raw), str(prepared))
        paths = {"fp32": prepared}
        for index, (name, unsigned, reduced) in enumerate(CANDIDATES):
            paths[name] = _quantize(prepared, Path(tmp) / f"int8-{index}.onnx", batches, unsigned, reduced)
        paths[DYNAMIC] = Path(tmp) / "dynamic.onnx"  # what export --int8 writes without calibration images
        quantize_dynamic(str(prepared), str(paths[DYNAMIC]), weight_type=QuantType.QInt8)
        speeds = _network_ms(paths, args.repeats)
        document = onnx_document(loaded.meta)
        for name, path in paths.items():
            path.write_bytes(with_metadata(path.read_bytes(), document).SerializeToString())
            labels = [p.label for p in load(path).predict(files, top_k=1, guard=False)]
            accuracy = float(np.mean([label == row.label for label, row in zip(labels, val)]))
            rows.append({"format": name, "val_accuracy": round(accuracy, 4), "val_images": len(val),
                         "network_ms_per_image_one_thread": speeds[name]})
            print(json.dumps(rows[-1]), flush=True)
    result = {"command": " ".join(["python", *sys.argv]), "commit": git_commit() or "unknown",
              "onnxruntime": onnxruntime.__version__, "manifest": args.manifest, "split": "val",
              "calibration_images": sum(len(b) for b in batches), "candidates": rows}
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
