"""The predictor: ``load()`` a model and ``Classifier.predict`` images with referral, TTA and OOD.

Confidences are calibrated: the checkpoint's temperature is applied to the logits. A result
is *referred* (meant for a human) when its confidence is below ``refer_below`` ("low
confidence") or when the out-of-distribution guard fires ("not a single blood cell: ..." or, for a stained
cell unlike every lab it knows, "unfamiliar lab: ...").

Bad inputs never raise from ``predict``: each one becomes a :class:`Prediction` whose
``error`` says why (label and confidence are None), for single inputs and lists alike.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from bloodcell.checkpoint import Checkpoint, load_checkpoint
from bloodcell.data.images import ImageSource, read_image
from bloodcell.errors import CheckpointError, ConfigError, ImageError
from bloodcell.framing import frame_box, search_cells
from bloodcell.inference.backends import TorchBackend
from bloodcell.inference.defaults import DEFAULT_REFER_BELOW, ENGINES  # noqa: F401  (also imported from here)
from bloodcell.inference.explain import save_gradcam_overlay
from bloodcell.inference.onnx import (
    OnnxBackend,
    export_bytes,
    onnx_document,
    read_document,
)
from bloodcell.inference.ood import UNFAMILIAR_NOTE, OODGuard
from bloodcell.inference.tta import DIHEDRAL_VIEWS, dihedral_views
from bloodcell.metrics.calibration import apply_temperature
from bloodcell.progress import track
from bloodcell.transforms import DataConfig, finish_pixels, normalize_batch, stage_image
from bloodcell.weights import resolve

#: The note of an image that shows several white cells (a field or a smear photo, not a single-cell image).
SEVERAL_CELLS_NOTE = ("{} white cells in this image, none of them centred and filling it as in a single-cell image: "
                      "the one nearest the centre was classified; count smear photos with `bloodcell count`")

Images = Union[ImageSource, Sequence[ImageSource]]


@dataclass
class Prediction:
    """One image's result. ``top_k`` lists (label, probability) pairs, most probable first."""

    path: str | None
    label: str | None = None
    confidence: float | None = None
    referred: bool | None = None
    reason: str | None = None
    top_k: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None
    note: str | None = None

    def to_record(self) -> dict[str, Any]:
        """A flat record (``top_k`` as ``"label:prob;..."``) for CSV and JSON output."""
        return {
            "path": self.path,
            "label": self.label,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "referred": self.referred,
            "top_k": ";".join(f"{name}:{prob:.4f}" for name, prob in self.top_k),
            "error": self.error,
            "reason": self.reason,
            "note": self.note,
        }


def fill_prediction(result: Prediction, prob: np.ndarray, class_names: Sequence[str], top_k: int,
                    refer_below: float | None, reason: str | None = None) -> Prediction:
    """Set ``result``'s label, confidence and top-k from class probabilities ``prob``, and refer it
    for ``reason`` (an out-of-distribution finding) or, failing that, for confidence below ``refer_below``."""
    order = np.argsort(-prob, kind="stable")[:min(top_k, len(class_names))]
    result.label, result.confidence = class_names[order[0]], float(prob[order[0]])
    result.top_k = [(class_names[i], float(prob[i])) for i in order]
    if reason:
        result.reason = reason
    elif refer_below is not None and result.confidence < refer_below:
        result.reason = f"low confidence ({result.confidence:.2f} < {refer_below:g})"
    result.referred = result.reason is not None
    return result


class Classifier:
    """A loaded classifier: class names, data config, temperature, engine and OOD guard.

    ``predict`` works on ``workers`` batches at once, each in its own thread from decoding to
    results. A backend whose ``concurrent`` attribute is true (onnxruntime, one thread per call)
    runs those batches' model calls in parallel; otherwise (torch, which spreads one call over
    its own threads, and whose feature hooks live on the shared model) model calls are
    serialised by a lock while the other workers decode. At most half of the workers (at least one) decode at once:
    decoding is many short Pillow, numpy and OpenCV steps, each of which hands the interpreter lock to a waiting
    thread, so two decoding threads pass it back and forth between steps, while a model call runs without it
    (``benchmarks/predict_speed.py``). Safe to share between threads.
    """

    def __init__(self, backend, class_names: Sequence[str], data_config: DataConfig, temperature: float = 1.0,
                 guard: OODGuard | None = None, model=None, source: str | None = None, workers: int = 2):
        if workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        self.backend = backend
        self.class_names = list(class_names)
        self.data_config = data_config
        self.temperature = float(temperature)
        self.guard = guard
        self.model = model
        self.source = source
        # for a cell-framed model, _decode frames each image itself (DataConfig.prepare's step) from one search
        self._unframed = replace(data_config, framing="none")
        self._normalize = partial(normalize_batch, data_config=data_config)
        self.workers = workers
        self._lock = threading.Lock()
        self._decoding = threading.Semaphore(max(1, workers // 2))
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="bloodcell-predict")  # threads start on demand
        self._check_outputs()

    def _check_outputs(self) -> None:
        """Refuse, before any real input, a model whose outputs do not fit its class names or its guard."""
        size = self.data_config.input_size
        try:
            logits, features = self._run(self._normalize(np.zeros((1, 3, size, size), np.uint8)))
        except Exception as exc:  # noqa: BLE001 - any engine failure on a well-formed input means a broken model
            raise CheckpointError(f"{self.source or 'the model'}: does not run on a {size}x{size} input "
                                  f"({type(exc).__name__})") from None
        if logits.shape != (1, len(self.class_names)):
            raise CheckpointError(f"{self.source or 'the model'}: gives {logits.shape[-1]} outputs for "
                                  f"{len(self.class_names)} class names")
        if self.guard is not None and features.shape[-1] != self.guard.feature_dimension:
            raise CheckpointError(f"{self.source or 'the model'}: its guard scores {self.guard.feature_dimension} "
                                  f"features, the model gives {features.shape[-1]}")

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self.backend, "concurrent", False):
            return self.backend.run(batch)
        with self._lock:
            return self.backend.run(batch)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, use_ood: bool = True) -> "Classifier":
        """Wrap a loaded :class:`~bloodcell.checkpoint.Checkpoint` for the torch engine."""
        meta = checkpoint.meta
        return cls(
            TorchBackend(checkpoint.model),
            checkpoint.class_names,
            checkpoint.data_config,
            checkpoint.temperature,
            guard=OODGuard.from_dict(meta["ood"], checkpoint.path) if use_ood and meta.get("ood") else None,
            model=checkpoint.model,
            source=str(checkpoint.path) if checkpoint.path else None,
        )

    @classmethod
    def from_model(cls, model, temperature: float = 1.0) -> "Classifier":
        """Wrap an in-memory torch classifier carrying ``data_config`` (with class names), e.g. one in training."""
        config = model.data_config
        return cls(TorchBackend(model), config.class_names, config, temperature, model=model, workers=1)

    @property
    def engine(self) -> str:
        """What runs the network: "torch" or "onnx"."""
        return type(self.backend).__name__.replace("Backend", "").lower()

    def __repr__(self) -> str:
        return f"Classifier({self.source or 'in-memory'}, engine={self.engine}, classes={len(self.class_names)})"

    def pixels(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Decoded RGB images to the model's uint8 NCHW input pixels (framed as the checkpoint says, resized, cropped)."""
        return finish_pixels(np.stack([stage_image(image, self.data_config) for image in images]), self.data_config)

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Decoded RGB images to the normalised float32 NCHW batch the model expects."""
        return self._normalize(self.pixels(images))

    def features(self, images: Sequence[Image.Image], tta: bool = False) -> np.ndarray:
        """Penultimate features (N, D) of decoded images; with ``tta`` averaged over the 8 dihedral views."""
        return self.pixel_features(self.pixels(images), tta)

    def pixel_features(self, pixels: np.ndarray, tta: bool = False) -> np.ndarray:
        """:meth:`features` of a uint8 NCHW batch from :meth:`pixels`."""
        return self.score(pixels, tta)[1].mean(axis=0)

    def score(self, pixels: np.ndarray, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Raw logits (V, N, C) and penultimate features (V, N, D) of uint8 NCHW model-input pixels:
        the one scoring path. ``V`` is 8 with ``tta`` (the dihedral views, the untouched view first), else 1."""
        batch = self._normalize(pixels)
        views = dihedral_views(batch) if tta else batch
        logits, features = self._run(views)
        shape = (len(DIHEDRAL_VIEWS) if tta else 1, len(batch))
        return logits.reshape(*shape, -1), features.reshape(*shape, -1)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, C) from :meth:`score`'s logits: temperature, then the mean over views."""
        return apply_temperature(logits, self.temperature).mean(axis=0)

    def predict_proba(self, images: Sequence[Image.Image], tta: bool = False) -> np.ndarray:
        """Calibrated class probabilities (N, C) of decoded images."""
        return self.probabilities(self.score(self.pixels(images), tta)[0])

    def predict(self, images: Images, top_k: int = 3, refer_below: float | None = None, tta: bool = False,
                batch_size: int = 32, progress: bool = False, guard: bool = True) -> Prediction | list[Prediction]:
        """Classify one image or a list (paths, bytes, PIL images or arrays; a 4D array is a batch).

        Returns one :class:`Prediction` for a single input and a list for a list. With
        ``tta`` the probabilities are averaged over the 8 dihedral views (rotations by
        multiples of 90 degrees, with and without a flip) of the preprocessed image.
        ``refer_below`` refers results less confident than it (None: only the guard refers; the CLI,
        the service and the counter use :data:`DEFAULT_REFER_BELOW`).
        ``guard=False`` skips the out-of-distribution guard's "is it a cell" question and the several-cells note, for
        callers that already know each input is a single cell (the smear counter's detected white cells); a cell
        unlike every lab the model learned from still gets the unfamiliar-lab note (the lab check).
        """
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, np.ndarray) and images.ndim == 4)
        items = [images] if single else list(images)
        results = [r for batch in self.predict_batches(items, top_k, refer_below, tta, batch_size, progress, guard)
                   for r in batch]
        return results[0] if single else results

    def predict_batches(self, items: Sequence[ImageSource], top_k: int = 3, refer_below: float | None = None,
                        tta: bool = False, batch_size: int = 32, progress: bool = False,
                        guard: bool = True) -> Iterator[list[Prediction]]:
        """:meth:`predict` batch by batch, in input order, so that callers can write results as they come."""
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        if refer_below is not None and not 0.0 <= refer_below <= 1.0:
            raise ConfigError(f"refer_below must be a probability between 0 and 1, got {refer_below}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        size = max(1, min(batch_size, -(-len(items) // self.workers)))  # a small request still keeps every worker busy
        batches = [items[start:start + size] for start in range(0, len(items), size)]
        outcomes = self._batch_outcomes(batches, top_k, refer_below, tta, guard)
        return track(outcomes, "classifying", total=len(items), unit="images", size=len) if progress else outcomes

    def _batch_outcomes(self, batches: list, top_k: int, refer_below: float | None, tta: bool,
                        guard: bool) -> Iterator[list[Prediction]]:
        """Each batch's predictions, in order; ``workers`` batches are worked on at once, one more waits."""
        in_flight: deque[Future] = deque()
        for batch in batches:
            in_flight.append(self._pool.submit(self._predict_batch, batch, top_k, refer_below, tta, guard))
            if len(in_flight) > self.workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()

    def _decode(self, item: ImageSource, single_cell: bool) -> tuple[np.ndarray, str | None, bool] | ImageError:
        """One input's staged uint8 pixels (H, W, C; :func:`~bloodcell.transforms.stage_image`), a note when it shows
        several white cells as a field does, and whether it looks like a single-cell image
        (:meth:`~bloodcell.framing.CellSearch.single_cell`; neither
        looked for when the caller knows it is a ``single_cell``), or the ImageError saying why it cannot be used."""
        try:
            image = read_image(item)
        except ImageError as exc:
            return exc
        framed = self.data_config.framing == "cell"
        if single_cell and not framed:
            return stage_image(image, self.data_config), None, True
        search = search_cells(image)  # one search of the whole image frames the cell and tells a single cell from a field
        lone = single_cell or search.single_cell(image.size)
        note = SEVERAL_CELLS_NOTE.format(search.count) if not lone and search.count > 1 else None
        staged = (stage_image(frame_box(image, search.box), self._unframed) if framed
                  else stage_image(image, self.data_config))
        return staged, note, lone

    def _predict_batch(self, items: Sequence[ImageSource], top_k: int, refer_below: float | None, tta: bool,
                       guard: bool) -> list[Prediction]:
        """Decode, classify and guard one batch; bad inputs become results with an ``error``."""
        results = [Prediction(path=str(item) if isinstance(item, (str, Path)) else None) for item in items]
        decoded = []
        with self._decoding:
            for index, item in enumerate(items):
                outcome = self._decode(item, single_cell=not guard)
                if isinstance(outcome, ImageError):
                    results[index].error = str(outcome)
                else:
                    decoded.append((index, *outcome))
            if not decoded:
                return results
            pixels = finish_pixels(np.stack([p for _, p, _, _ in decoded]), self.data_config)
        logits, features = self.score(pixels, tta)
        probs = self.probabilities(logits)
        if self.guard is None:
            assessed = [(None, None)] * len(decoded)
        elif guard:
            assessed = self.guard.assess(pixels, features[0], single=[lone for _, _, _, lone in decoded])
        else:  # known cells: only the lab check
            assessed = [(None, UNFAMILIAR_NOTE if odd else None) for odd in self.guard.unfamiliar(pixels, features[0])]
        for (index, _, cells_note, _), prob, (ood_reason, note) in zip(decoded, probs, assessed):
            fill_prediction(results[index], prob, self.class_names, top_k, refer_below, ood_reason)
            results[index].note = "; ".join(n for n in (cells_note, note) if n) or None
        return results

    def explain(self, image: ImageSource, out_path: str | Path, class_index: int | None = None) -> Path:
        """Write a LayerCAM heat-map overlay PNG for ``image`` (torch engine only); returns the path."""
        if self.model is None:
            raise ConfigError("LayerCAM needs the torch engine (load the .safetensors checkpoint, not an ONNX file)")
        decoded = read_image(image)
        batch = self.preprocess([decoded])
        with self._lock:
            return save_gradcam_overlay(self.model, batch, self.data_config, out_path, class_index, image=decoded)


def torch_threads(engine: str, threads: int) -> int:
    """Torch's own threads for classifying on ``engine`` with ``threads``: all of them on torch; one on ONNX, where
    torch only does each batch's final resize, and a second torch thread would wait for a core that another worker's
    model call holds (``benchmarks/predict_speed.py`` sets them so, as ``bloodcell predict`` does)."""
    return threads if engine == "torch" else 1


def load(name_or_path: str | Path | None = None, engine: str = "torch", num_threads: int | None = None) -> Classifier:
    """Load a classifier: the bundled model (default), a bundled name, or a checkpoint file.

    ``engine="onnx"`` runs through onnxruntime (a ``.safetensors`` checkpoint is exported in
    memory first); an ``.onnx`` file always runs on onnxruntime, with ``num_threads`` batches at
    once (one thread each, default 2). The torch engine uses torch's own thread setting, which
    the caller owns (``torch.set_num_threads``; the CLI sets it from ``--threads``).
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    path = resolve(name_or_path)
    if path.suffix != ".onnx" and engine == "torch":
        return Classifier.from_checkpoint(load_checkpoint(path))
    if path.suffix == ".onnx":
        backend = OnnxBackend(path)
        document = read_document(backend, path)
    else:
        checkpoint = load_checkpoint(path)
        document = onnx_document(checkpoint.meta)
        backend = OnnxBackend(export_bytes(checkpoint.model, checkpoint.data_config.input_size))
    guard = OODGuard.from_dict(document["ood"], path) if document.get("ood") else None
    return Classifier(backend, document["class_names"], DataConfig.from_dict(document["data_config"]),
                      document["temperature"], guard=guard, source=str(path), workers=num_threads or 2)
