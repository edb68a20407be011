"""White-cell typing adapted to smear photos: a linear head on the cell classifier's features.

Smear photos come from other microscopes and stains than PBC's single-cell images, and a
classifier trained on PBC alone types their white cells poorly (about 40 % of BCCD smears
right). Besides fine-tuning the classifier itself (``bloodcell train --extra-train``), a lab
can fit a :class:`TypingHead`: a multinomial logistic regression on the classifier's
penultimate features of its own labelled smear crops (``python -m bloodcell.smear.wbc_typing
--save-head``). :class:`AdaptedClassifier` applies it in place of the classifier's own head,
with the same ``predict`` interface, so :func:`~bloodcell.smear.counting.count_smears` uses it
unchanged (``bloodcell count --typing-head FILE``). A head is tied to the checkpoint whose
features it was fitted on (by sha256).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from bloodcell.data.images import ImageSource, read_image
from bloodcell.errors import CheckpointError, ImageError
from bloodcell.inference.predictor import Classifier, Prediction, fill_prediction
from bloodcell.metrics.calibration import apply_temperature

FORMAT = "bloodcell-typing-head/1"


@dataclass
class TypingHead:
    """Logits = features @ weight.T + bias over ``class_names`` (scaling folded into the weights)."""

    class_names: list[str]
    weight: np.ndarray
    bias: np.ndarray
    base_sha256: str
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_pipeline(cls, pipeline, base_sha256: str, meta: dict[str, Any] | None = None) -> "TypingHead":
        """Fold a fitted ``StandardScaler`` + ``LogisticRegression`` pipeline into one linear map."""
        scaler, logistic = pipeline[0], pipeline[-1]
        weight = logistic.coef_ / scaler.scale_
        bias = logistic.intercept_ - weight @ scaler.mean_
        if len(logistic.classes_) == 2:  # binary logistic regression has one row; make it two logits
            weight, bias = np.vstack([-weight / 2, weight / 2]), np.array([-bias[0] / 2, bias[0] / 2])
        return cls([str(c) for c in logistic.classes_], weight, bias, base_sha256, dict(meta or {}))

    def logits(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, dtype=np.float64) @ self.weight.T + self.bias

    def save(self, path: str | Path) -> Path:
        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": FORMAT, "class_names": self.class_names, "base_sha256": self.base_sha256, **self.meta}
        save_file({"weight": self.weight.astype(np.float32), "bias": self.bias.astype(np.float32)}, str(path),
                  metadata={"bloodcell": json.dumps(header)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TypingHead":
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: typing head not found")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                header = json.loads((handle.metadata() or {}).get("bloodcell", "{}"))
                weight, bias = handle.get_tensor("weight"), handle.get_tensor("bias")
        except (SafetensorError, OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: not a readable typing head ({exc})") from exc
        if header.get("format") != FORMAT or weight.shape != (len(header.get("class_names", [])), weight.shape[-1]):
            raise CheckpointError(f"{path}: not a bloodcell typing head (format {header.get('format')!r})")
        meta = {k: v for k, v in header.items() if k not in ("format", "class_names", "base_sha256")}
        return cls(list(header["class_names"]), weight.astype(np.float64), bias.astype(np.float64),
                   str(header.get("base_sha256", "")), meta)


def dihedral_features(classifier: Classifier, crops: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
    """Penultimate features of each crop averaged over its 4 rotations x 2 flips (the predictor's TTA views)."""
    return np.concatenate([classifier.features(crops[i:i + batch_size], tta=True) for i in range(0, len(crops), batch_size)])


class AdaptedClassifier:
    """A :class:`Classifier` whose labels come from a :class:`TypingHead` on its features.

    ``predict`` returns :class:`Prediction` objects like the classifier's (features averaged
    over the 8 dihedral views); the base classifier's out-of-distribution guard is not applied,
    since it was calibrated on the base classifier's own domain.
    """

    def __init__(self, base: Classifier, head: TypingHead):
        self.base = base
        self.head = head
        self.class_names = head.class_names
        self.source = f"{base.source} + typing head {head.meta.get('name', '')}".strip()

    def predict(self, images: ImageSource | Sequence[ImageSource], top_k: int = 3, refer_below: float | None = None,
                **_: Any) -> Prediction | list[Prediction]:
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        results = [Prediction(path=str(item) if isinstance(item, (str, Path)) else None) for item in items]
        decoded = []
        for index, item in enumerate(items):
            try:
                decoded.append((index, read_image(item)))
            except ImageError as exc:
                results[index].error = str(exc)
        if decoded:
            probs = apply_temperature(self.head.logits(dihedral_features(self.base, [im for _, im in decoded])), 1.0)
            for (index, _), prob in zip(decoded, probs):
                fill_prediction(results[index], prob, self.class_names, top_k, refer_below)
        return results[0] if single else results


def adapt(classifier: Classifier, head_path: str | Path) -> AdaptedClassifier:
    """Wrap ``classifier`` with the typing head at ``head_path``; refuses a head fitted on another checkpoint."""
    from bloodcell.checkpoint import file_sha256

    head = TypingHead.load(head_path)
    source = classifier.source and Path(classifier.source)
    if not source or source.suffix != ".safetensors" or file_sha256(source) != head.base_sha256:
        raise CheckpointError(
            f"typing head {head_path} was fitted on the features of checkpoint sha256 {head.base_sha256[:12]}..., "
            f"not on {classifier.source or 'this in-memory classifier'}; leave out --typing-head or refit it with "
            "'python -m bloodcell.smear.wbc_typing CHECKPOINT --save-head FILE'")
    return AdaptedClassifier(classifier, head)


def typing_summary(classifier) -> dict[str, Any]:
    """What typed the white cells and how well it types smear photos, for counts.json and the report.

    For a plain classifier the figures come from its checkpoint's ``smear_typing`` metadata
    (written by ``python -m bloodcell.smear.wbc_typing CHECKPOINT --record``), when present.
    """
    if isinstance(classifier, AdaptedClassifier):
        meta = classifier.head.meta
        return {"typer": classifier.source, "head": meta.get("name"), "fitted_on": meta.get("fitted_on"),
                "held_out_smears": meta.get("held_out_smears"), "held_out_accuracy": meta.get("held_out_accuracy")}
    source = getattr(classifier, "source", None)
    summary: dict[str, Any] = {"typer": source, "head": None}
    if source and Path(source).suffix == ".safetensors":
        from bloodcell.checkpoint import read_checkpoint_meta

        recorded = read_checkpoint_meta(source).get("smear_typing") or {}
        summary.update({k: recorded.get(k) for k in ("fitted_on", "held_out_smears", "held_out_accuracy") if k in recorded})
    return summary
