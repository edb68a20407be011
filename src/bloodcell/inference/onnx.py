"""ONNX export and the onnxruntime engine.

:func:`export_onnx` writes a model with input ``input`` (float32 NCHW, dynamic batch) and
outputs ``logits`` and ``features`` (penultimate activations for the OOD guard), exported
with the TorchScript-based exporter (opset 17), which is reliable for the CNNs used here.
The file's ``metadata_props`` carry JSON strings: ``bloodcell`` (the whole document) and
``class_names``, ``data_config``, ``temperature``, ``model_name``, ``ood`` separately, so the
file is self-describing like a checkpoint.

``int8``: without calibration batches, dynamic quantization (int8 weights, activations
quantized on the fly); with ``calibration`` (preprocessed batches, e.g. validation images, which
:func:`bloodcell.workflows.calibrate.int8_calibration_batches` reads from a manifest), static QDQ
quantization: unsigned 8-bit activations with min-max ranges (percentile and entropy calibration
were no better on PBC validation images), per-channel signed weights, usually faster and more
accurate for CNNs (``benchmarks/int8_choice.py``), with weights kept in [-64, 64] (onnxruntime's
``reduce_range``) so that CPUs without VNNI cannot saturate.
A file's metadata is validated when it is loaded (:func:`read_document`).
"""

from __future__ import annotations

import io
import json
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from pydantic import ValidationError

from bloodcell.checkpoint import MetaSchema, load_checkpoint, refuse_json_constant
from bloodcell.errors import CheckpointError, ConfigError
from bloodcell.inference.backends import LogitsAndFeatures
from bloodcell.provenance import file_sha256
from bloodcell.writing import write_bytes

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
        # what `bloodcell evaluate` reads of an exported model: the classes' taxonomy and the manifest it learned from
        "taxonomy": meta.get("taxonomy") or (meta.get("train_config") or {}).get("taxonomy"),
        "manifest_sha256": meta.get("manifest_sha256"),
        # what reports quote of how well it types other labs' cells (validated where read: smear.typing)
        "smear_typing": meta.get("smear_typing"),
        "adaptation": meta.get("adaptation"),
        "bloodcell_version": meta.get("bloodcell_version"),
        "source_checkpoint_sha256": source_sha256,
    }


def export_bytes(model, input_size: int) -> bytes:
    """Export a torch classifier to fp32 ONNX bytes (outputs: logits, features)."""
    wrapped = LogitsAndFeatures(model.eval()).eval()
    dummy = torch.zeros(1, 3, input_size, input_size)
    buffer = io.BytesIO()
    axes = {INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (dummy,), buffer, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def with_metadata(model_bytes: bytes, document: dict[str, Any]):
    """The ONNX model of ``model_bytes`` carrying ``document`` (and its main fields) as its metadata."""
    proto = onnx.load_from_string(model_bytes)
    del proto.metadata_props[:]
    entries = {"bloodcell": document, **{k: document[k] for k in ("model_name", "class_names", "data_config", "temperature", "ood")}}
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, json.dumps(value)
    return proto


def export_onnx(checkpoint: str | Path, out: str | Path, int8: bool = False,
                calibration: Iterable[np.ndarray] | None = None) -> Path:
    """Export a checkpoint (bundled name or ``.safetensors``) to ONNX at ``out``, optionally int8-quantized;
    ``calibration`` yields preprocessed float32 NCHW batches for static quantization."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"{out}: the output file must end in .onnx")
    if calibration is not None and not int8:
        raise ConfigError("calibration images only apply to --int8 export")
    loaded = load_checkpoint(checkpoint)
    document = onnx_document(loaded.meta, file_sha256(loaded.path))
    document["quantization"] = None if not int8 else ("static-qdq" if calibration is not None else "dynamic")
    fp32 = export_bytes(loaded.model, loaded.data_config.input_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not int8:
        return write_bytes(out, with_metadata(fp32, document).SerializeToString())
    with tempfile.TemporaryDirectory() as tmp:
        raw, source, quantized = Path(tmp) / "raw.onnx", Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        raw.write_bytes(fp32)
        from onnxruntime.quantization import (
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(raw), str(source))  # fold constants and infer shapes, as quantization expects
        if calibration is None:
            quantize_dynamic(str(source), str(quantized), weight_type=QuantType.QInt8)
        else:
            # unsigned activations with signed weights: onnxruntime's fast int8 kernels on x86; weights in [-64, 64]
            # (reduce_range): CPUs without VNNI add pairs of u8 x s8 products in 16 bits, which 8-bit weights can
            # saturate (benchmarks/int8_choice.py measures the formats)
            quantize_static(str(source), str(quantized), CalibrationReader(list(calibration)),
                            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return write_bytes(out, with_metadata(quantized.read_bytes(), document).SerializeToString())


class CalibrationReader:
    """onnxruntime's CalibrationDataReader over given batches."""

    def __init__(self, batches: list[np.ndarray]):
        if not batches:
            raise ConfigError("int8 calibration needs at least one image")
        self._batches = batches
        self._iter = iter(self._batches)

    def get_next(self):
        batch = next(self._iter, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._iter = iter(self._batches)


#: Images per onnxruntime call: a small network's activations for 8 images stay in the CPU's caches where those of 32
#: do not (on 2 shared cores, CPU time per image: EfficientNet-Lite0 at 128 px 3.03 ms against 3.26 ms in calls of 32;
#: ResNet50 at 224 px 76.4 against 77.8 ms). Each image's outputs are the same in a call of any size.
CHUNK = 8


class OnnxBackend:
    """Runs an ONNX model with onnxruntime on the CPU execution provider.

    Each call runs on the calling thread alone (``intra_op_num_threads=1``) and calls may run
    concurrently (``concurrent``): the predictor gets its parallelism from whole batches, each
    decoded, classified and guarded by one thread, which beats splitting every operator over
    threads that then wait for each other and for the decoders. A batch is run :data:`CHUNK` images at a time.
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
        """Logits and features of ``batch``, run :data:`CHUNK` images at a time."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        parts = [self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch[start:start + CHUNK]})
                 for start in range(0, max(1, len(batch)), CHUNK)]
        logits, features = parts[0] if len(parts) == 1 else (np.concatenate(outputs) for outputs in zip(*parts))
        return logits, features


def read_document(backend: OnnxBackend, source: str | Path) -> dict[str, Any]:
    """The validated bloodcell document of an ONNX file; CheckpointError when missing or malformed."""
    if "bloodcell" not in backend.metadata:
        raise CheckpointError(f"{source}: ONNX model carries no bloodcell metadata (export it with 'bloodcell export')")
    try:
        document = json.loads(backend.metadata["bloodcell"], parse_constant=refuse_json_constant)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        names = document.get("class_names")
        checked = MetaSchema.model_validate({**document, "format": "bloodcell-checkpoint/1",
                                             "num_classes": len(names) if isinstance(names, list) else 0})
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc) or type(exc).__name__
        raise CheckpointError(f"{source}: invalid bloodcell metadata in the ONNX model ({detail})") from None
    # the validated values (defaults filled in, numbers as numbers), not the file's raw ones
    document.update(checked.model_dump(include={"class_names", "data_config", "temperature"}))
    document["data_config"]["class_names"] = document["class_names"]
    return document
