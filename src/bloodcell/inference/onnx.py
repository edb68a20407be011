"""ONNX export and the onnxruntime engine.

:func:`export_onnx` writes a model with input ``input`` (float32 NCHW, dynamic batch) and
outputs ``logits`` and ``features`` (penultimate activations for the OOD guard), exported
with the TorchScript-based exporter (opset 17), which is reliable for the CNNs used here.
The file's ``metadata_props`` carry JSON strings: ``bloodcell`` (the whole document) and
``class_names``, ``data_config``, ``temperature``, ``model_name``, ``ood`` separately, so the
file is self-describing like a checkpoint.

``int8``: without a calibration manifest, dynamic quantization (int8 weights, activations
quantized on the fly); with ``calibration_manifest``, static QDQ quantization (per-channel
int8 weights, activation ranges calibrated on up to ``calibration_limit`` images of the
manifest's validation split), which is usually faster and more accurate for CNNs.
"""

from __future__ import annotations

import io
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bloodcell.errors import CheckpointError, ConfigError
from bloodcell.inference.ood import OODGuard
from bloodcell.models.registry import DataConfig

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "features")


def onnx_document(meta: dict[str, Any], source_sha256: str | None = None) -> dict[str, Any]:
    """The self-description stored in the ONNX file, taken from checkpoint metadata."""
    return {
        "model_name": meta["model_name"],
        "class_names": list(meta["class_names"]),
        "data_config": meta["data_config"],
        "temperature": float(meta.get("temperature", 1.0)),
        "ood": meta.get("ood"),
        "metrics": meta.get("metrics", {}),
        "bloodcell_version": meta.get("bloodcell_version"),
        "source_checkpoint_sha256": source_sha256,
    }


def export_bytes(model, input_size: int) -> bytes:
    """Export a torch classifier to fp32 ONNX bytes (outputs: logits, features)."""
    import torch

    from bloodcell.inference.backends import LogitsAndFeatures

    wrapped = LogitsAndFeatures(model.eval()).eval()
    dummy = torch.zeros(1, 3, input_size, input_size)
    buffer = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (dummy,), buffer, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def _with_metadata(model_bytes: bytes, document: dict[str, Any]):
    import onnx

    proto = onnx.load_from_string(model_bytes)
    del proto.metadata_props[:]
    entries = {"bloodcell": document, **{k: document[k] for k in ("model_name", "class_names", "data_config", "temperature", "ood")}}
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, json.dumps(value)
    return proto


def export_onnx(checkpoint_path: str | Path, out: str | Path, int8: bool = False,
                calibration_manifest: str | Path | None = None, calibration_limit: int = 200,
                data_root: str | Path | None = None) -> Path:
    """Export a ``.safetensors`` checkpoint to ONNX at ``out`` (optionally int8-quantized)."""
    import onnx

    from bloodcell.checkpoint import file_sha256, load_checkpoint

    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"{out}: the output file must end in .onnx")
    if calibration_manifest is not None and not int8:
        raise ConfigError("--calibration-manifest only applies to --int8 export")
    checkpoint = load_checkpoint(checkpoint_path)
    document = onnx_document(checkpoint.meta, file_sha256(checkpoint_path))
    document["quantization"] = None if not int8 else ("static-qdq" if calibration_manifest else "dynamic")
    fp32 = export_bytes(checkpoint.model, checkpoint.data_config.input_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not int8:
        onnx.save(_with_metadata(fp32, document), str(out))
        return out
    with tempfile.TemporaryDirectory() as tmp:
        raw, source, quantized = Path(tmp) / "raw.onnx", Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        raw.write_bytes(fp32)
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(raw), str(source))  # fold constants and infer shapes, as quantization expects
        if calibration_manifest is None:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(source), str(quantized), weight_type=QuantType.QInt8)
        else:
            from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

            reader = _ManifestCalibrationReader(checkpoint, calibration_manifest, calibration_limit, data_root)
            quantize_static(str(source), str(quantized), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        onnx.save(_with_metadata(quantized.read_bytes(), document), str(out))
    return out


class _ManifestCalibrationReader:
    """onnxruntime CalibrationDataReader over validation images of a manifest."""

    def __init__(self, checkpoint, manifest: str | Path, limit: int, data_root: str | Path | None):
        from bloodcell.data.images import read_image
        from bloodcell.data.locate import dataset_root
        from bloodcell.data.manifest import read_manifest
        from bloodcell.errors import DataError, ImageError
        from bloodcell.inference.predictor import Classifier

        data = read_manifest(manifest)
        rows = list(data.rows_for("val"))
        if not rows:
            raise DataError(f"{manifest}: no validation images to calibrate int8 quantization")
        picks = np.random.default_rng(0).permutation(len(rows))[:limit]
        root = dataset_root(data.dataset, data_root)
        preprocess = Classifier.from_checkpoint(checkpoint, use_ood=False).preprocess
        self._batches = []
        for i in picks:
            try:
                self._batches.append(preprocess([read_image(root / rows[i].path)]))
            except ImageError:
                continue
        self._iter = iter(self._batches)

    def get_next(self):
        batch = next(self._iter, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._iter = iter(self._batches)


class OnnxBackend:
    """Runs an ONNX model with onnxruntime on the CPU execution provider.

    Each call runs on the calling thread alone (``intra_op_num_threads=1``) and calls may run
    concurrently (``concurrent``): the predictor gets its parallelism from whole batches, each
    decoded, classified and guarded by one thread, which beats splitting every operator over
    threads that then wait for each other and for the decoders.
    """

    concurrent = True

    def __init__(self, model: str | Path | bytes):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable models
            raise CheckpointError(f"{model if not isinstance(model, bytes) else '<onnx bytes>'}: not a loadable ONNX model ({exc})") from exc
        self.metadata = self.session.get_modelmeta().custom_metadata_map

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})
        return logits, features


def load_onnx_classifier(path: str | Path, num_threads: int = 2):
    """A :class:`~bloodcell.inference.predictor.Classifier` on onnxruntime from ``.onnx`` or ``.safetensors``; ``num_threads`` batches run at once."""
    from bloodcell.inference.predictor import Classifier

    path = Path(path)
    if path.suffix == ".onnx":
        backend = OnnxBackend(path)
        if "bloodcell" not in backend.metadata:
            raise CheckpointError(f"{path}: ONNX model carries no bloodcell metadata (export it with 'bloodcell export')")
        document = json.loads(backend.metadata["bloodcell"])
    else:
        from bloodcell.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(path)
        document = onnx_document(checkpoint.meta)
        backend = OnnxBackend(export_bytes(checkpoint.model, checkpoint.data_config.input_size))
    return Classifier(
        backend,
        document["class_names"],
        DataConfig.from_dict(document["data_config"]),
        document["temperature"],
        guard=OODGuard.from_dict(document["ood"]) if document.get("ood") else None,
        source=str(path),
        workers=num_threads,
    )
