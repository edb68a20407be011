"""Detection and counting metrics over boxes: IoU, greedy VOC matching, AP@0.5, count errors.

Pure functions: boxes are ``(x1, y1, x2, y2)`` tuples, predictions ``(score, box)`` pairs, and
the class names are passed in (the smear classes live in :data:`bloodcell.data.boxes.SMEAR_LABELS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics.detection import MeanAveragePrecision


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def match(predictions: list[list[tuple[float, tuple]]], truths: list[list[tuple]], threshold: float = 0.5):
    """Greedy VOC matching per image, highest score first: (scores, is_true_positive, n_truth)."""
    scores, hits = [], []
    for preds, gts in zip(predictions, truths):
        used = [False] * len(gts)
        for score, box in sorted(preds, key=lambda p: -p[0]):
            overlaps = [iou(box, g) for g in gts]
            best = int(np.argmax(overlaps)) if overlaps else -1
            hit = best >= 0 and overlaps[best] >= threshold and not used[best]
            if hit:
                used[best] = True
            scores.append(score)
            hits.append(hit)
    return np.array(scores, float), np.array(hits, bool), sum(len(g) for g in truths)


def average_precision(scores: np.ndarray, hits: np.ndarray, n_truth: int) -> float:
    """VOC all-point interpolated AP: area under the monotone precision envelope."""
    if n_truth == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    fp = np.cumsum(~hits[order])
    recall = np.concatenate([[0.0], tp / n_truth, [1.0]])
    precision = np.concatenate([[0.0], tp / np.maximum(tp + fp, 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def evaluate_counts(entries: list[dict[str, Any]], annotations: list[list[tuple]],
                    labels: Sequence[str]) -> dict[str, Any]:
    """Per-class AP@0.5 (VOC all-point, ``ap50_voc``), precision/recall, count MAE/MAPE, count accuracy and
    exact-count rate.

    ``entries`` are counts.json image entries; ``annotations`` the matching lists of
    (label, x1, y1, x2, y2) ground-truth boxes; ``labels`` the classes to score. A metric
    undefined on these images (no box of the class annotated or predicted) is ``None`` (JSON
    null), never NaN.
    """
    result: dict[str, Any] = {"images": len(entries)}
    for label in labels:
        preds = [[(b["score"], (b["x1"], b["y1"], b["x2"], b["y2"])) for b in e["boxes"] if b["label"] == label]
                 for e in entries]
        gts = [[tuple(a[1:]) for a in ann if a[0] == label] for ann in annotations]
        scores, hits, n_truth = match(preds, gts)
        counted = np.array([e["counts"][label] for e in entries], float)
        truth = np.array([len(g) for g in gts], float)
        nonzero = truth > 0
        metrics = {
            "ap50_voc": average_precision(scores, hits, n_truth),
            "precision": float(hits.mean()) if len(hits) else float("nan"),
            "recall": float(hits.sum() / n_truth) if n_truth else float("nan"),
            "annotated": int(truth.sum()), "counted": int(counted.sum()),
            "mae": float(np.abs(counted - truth).mean()),
            "mape": float(np.mean(np.abs(counted - truth)[nonzero] / truth[nonzero])) if nonzero.any() else float("nan"),
            "count_accuracy": float(1 - abs(counted.sum() - truth.sum()) / truth.sum()) if truth.sum() else float("nan"),
            "exact_fraction": float(np.mean(counted == truth)),
        }
        result[label] = {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in metrics.items()}
    return result


def coco_ap50(entries: list[dict[str, Any]], annotations: list[list[tuple]], labels: Sequence[str]) -> dict[str, float | None]:
    """Per-class AP at IoU 0.5 by pycocotools (through torchmetrics): COCO's 101-point interpolation, which
    differs slightly from the VOC all-point area of :func:`average_precision` (the tests check they agree)."""
    metric = MeanAveragePrecision(iou_thresholds=[0.5], class_metrics=True, backend="pycocotools",
                                  max_detection_thresholds=[1, 100, 1000])
    index = {label: i for i, label in enumerate(labels)}

    def tensors(boxes: list[tuple], scores: list[float] | None = None) -> dict[str, torch.Tensor]:
        out = {"boxes": torch.tensor([b[1:] for b in boxes], dtype=torch.float32).reshape(-1, 4),
               "labels": torch.tensor([index[b[0]] for b in boxes], dtype=torch.int64)}
        if scores is not None:
            out["scores"] = torch.tensor(scores, dtype=torch.float32)
        return out

    for entry, truth in zip(entries, annotations):
        kept = [b for b in entry["boxes"] if b["label"] in index]
        predicted = [(b["label"], b["x1"], b["y1"], b["x2"], b["y2"]) for b in kept]
        metric.update([tensors(predicted, [b["score"] for b in kept])], [tensors([a for a in truth if a[0] in index])])
    result = metric.compute()
    per_class = dict(zip(result["classes"].reshape(-1).tolist(), result["map_per_class"].reshape(-1).tolist()))
    return {label: (per_class[i] if per_class.get(i, -1) >= 0 else None) for label, i in index.items()}
