"""Figures of an evaluation as PNG bytes (matplotlib object API, no global pyplot state)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

DPI = 110


def to_png(fig: Figure) -> bytes:
    """Encode a figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _matrix(matrix: np.ndarray, class_names: Sequence[str], title: str, fmt: str) -> bytes:
    n = len(class_names)
    size = max(4.5, 0.62 * n + 2.5)
    fig = Figure(figsize=(size, size * 0.9))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    top = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix[i, j]
            if value == 0:
                continue
            ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=8,
                    color="white" if value > 0.6 * top else "black")
    return to_png(fig)


def confusion_counts(metrics: dict[str, Any]) -> bytes:
    """Confusion matrix of counts (rows = true class)."""
    counts = np.asarray(metrics["confusion_matrix"]["counts"], dtype=np.int64)
    return _matrix(counts, metrics["class_names"], "Confusion matrix (counts)", "d")


def confusion_normalized(metrics: dict[str, Any]) -> bytes:
    """Row-normalised confusion matrix (each true class sums to 1)."""
    normalized = np.asarray(metrics["confusion_matrix"]["normalized"], dtype=np.float64)
    return _matrix(normalized, metrics["class_names"], "Confusion matrix (row-normalised)", ".2f")


def _roc_zoom(rocs: list[dict[str, Any]]) -> tuple[float, float]:
    """(largest false positive rate, smallest sensitivity) of the corner where the curves of a good model are:
    up to the rate at which every class reaches 98 % sensitivity, and down to their lowest sensitivity there."""
    reach, floor = 0.01, 1.0
    for roc in rocs:
        fpr, tpr = np.asarray(roc["fpr"]), np.asarray(roc["tpr"])
        reach = max(reach, float(fpr[np.argmax(tpr >= 0.98)]) if (tpr >= 0.98).any() else 1.0)
    reach = min(1.0, reach * 1.2)
    for roc in rocs:  # the sensitivity where each curve leaves the left edge (not its (0, 0) start)
        fpr, tpr = np.asarray(roc["fpr"]), np.asarray(roc["tpr"])
        floor = min(floor, float(tpr[fpr > 0][0]) if (fpr > 0).any() else 0.0)
    return reach, max(0.0, floor - 0.02)


def roc_curves(metrics: dict[str, Any]) -> bytes:
    """One-vs-rest ROC curve per class, AUC in the legend: the whole curve, and the corner where they lie."""
    rocs = [roc for roc in metrics["roc"] if roc["auc"] is not None]
    fig = Figure(figsize=(11, 5))
    whole, corner = fig.subplots(1, 2)
    reach, floor = _roc_zoom(rocs) if rocs else (1.0, 0.0)
    for ax, (x_max, y_min) in ((whole, (1.0, 0.0)), (corner, (reach, floor))):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for roc in rocs:
            ax.plot(roc["fpr"], roc["tpr"], linewidth=1.4, label=f"{roc['name']} (AUC {roc['auc']:.4f})")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate (sensitivity)")
        ax.set_xlim(-0.01 * x_max, x_max)
        ax.set_ylim(y_min, 1.005)
        ax.grid(alpha=0.3)
    whole.set_title("ROC curves (one vs rest)")
    corner.set_title("The top-left corner, enlarged")
    whole.legend(loc="lower right", fontsize=8)
    return to_png(fig)


def reliability_diagram(metrics: dict[str, Any]) -> bytes:
    """Accuracy against confidence per bin, with the share of samples per bin underneath."""
    calibration = metrics["calibration"]
    bins = calibration["reliability"]
    fig = Figure(figsize=(6, 6))
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = bins[0]["upper"] - bins[0]["lower"]
    centers = [(b["lower"] + b["upper"]) / 2 for b in bins]
    accuracy = [b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins]
    ax.bar(centers, accuracy, width=width * 0.95, color="#4c72b0", edgecolor="black", linewidth=0.5, label="accuracy")
    confidence = [(c, b["confidence"]) for c, b in zip(centers, bins) if b["count"]]
    if confidence:
        ax.plot(*zip(*confidence), "o", color="#dd8452", markersize=4, label="mean confidence")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Reliability diagram (ECE {calibration['ece']:.4f}, {calibration['n_bins']} bins)")
    ax.legend(loc="upper left", fontsize=8)
    total = max(1, sum(b["count"] for b in bins))
    hist.bar(centers, [b["count"] / total for b in bins], width=width * 0.95, color="grey")
    hist.set_xlabel("confidence (top-class probability)")
    hist.set_ylabel("share")
    hist.set_xlim(0, 1)
    return to_png(fig)


def coverage_curve(metrics: dict[str, Any]) -> bytes:
    """Accuracy of accepted predictions as a function of coverage (the rest referred)."""
    selective = metrics["selective"]
    curve = selective["curve"]
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    ax.plot(curve["coverage"], curve["accuracy"], color="#4c72b0", linewidth=1.6)
    for point in selective["threshold_for_accuracy"]:
        if point["reached"]:
            ax.plot(point["coverage"], point["accuracy"], "o", markersize=5,
                    label=f"≥{point['target']:.1%} at coverage {point['coverage']:.1%} (p ≥ {point['threshold']:.3f})")
    ax.set_xlabel("coverage (share of cells classified automatically)")
    ax.set_ylabel("accuracy on accepted cells")
    ax.set_title("Selective prediction: referring the least confident cells")
    ax.set_xlim(0, 1.01)
    low = min(curve["accuracy"]) if curve["accuracy"] else 0.0
    ax.set_ylim(max(0.0, low - 0.01), 1.002)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8)
    return to_png(fig)


def per_class_bars(metrics: dict[str, Any]) -> bytes:
    """Precision, recall and F1 per class (classes without samples are left empty)."""
    rows = metrics["per_class"]
    n = len(rows)
    x = np.arange(n)
    fig = Figure(figsize=(max(6, 0.8 * n + 2), 4.5))
    ax = fig.add_subplot()
    for offset, key, color in ((-0.27, "precision", "#4c72b0"), (0, "recall", "#55a868"), (0.27, "f1", "#c44e52")):
        values = [r[key] if r[key] is not None else np.nan for r in rows]
        ax.bar(x + offset, values, width=0.26, label=key, color=color)
    ax.set_xticks(x, [r["name"] for r in rows], rotation=45, ha="right")
    finite = [r[k] for r in rows for k in ("precision", "recall", "f1") if r[k] is not None]
    bottom = max(0.0, min(finite, default=0.0) - 0.05)
    ax.set_ylim(bottom, 1.0)
    ax.set_ylabel("score" + (f" (axis starts at {bottom:.2f}, not 0)" if bottom > 0 else ""))
    ax.set_title("Per-class precision, recall (sensitivity) and F1")
    ax.legend(loc="lower left", fontsize=8, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    return to_png(fig)


#: Figures of an evaluation report: key -> (title, function).
EVALUATION_FIGURES = {
    "confusion_counts": ("Confusion matrix (counts)", confusion_counts),
    "confusion_normalized": ("Confusion matrix (row-normalised)", confusion_normalized),
    "roc": ("ROC curves", roc_curves),
    "reliability": ("Reliability diagram", reliability_diagram),
    "coverage": ("Coverage curve (selective prediction)", coverage_curve),
    "per_class": ("Per-class precision, recall and F1", per_class_bars),
}


def evaluation_figures(metrics: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    """All figures of a classification report: key -> (title, PNG bytes)."""
    return {key: (title, draw(metrics)) for key, (title, draw) in EVALUATION_FIGURES.items()}


def comparison_chart(rows: Sequence[dict[str, Any]], metric: str = "accuracy") -> bytes:
    """Bar chart of ``metric`` per model with its 95% CI as error bars (benchmark table rows)."""
    names = [r["model"] for r in rows]
    values = np.array([r[metric] for r in rows], dtype=np.float64)
    low = np.array([r.get(f"{metric}_low", v) for r, v in zip(rows, values)], dtype=np.float64)
    high = np.array([r.get(f"{metric}_high", v) for r, v in zip(rows, values)], dtype=np.float64)
    fig = Figure(figsize=(max(5, 1.1 * len(rows) + 2), 4.5))
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    ax.bar(x, values, color="#4c72b0", yerr=np.vstack([values - low, high - values]), capsize=5)
    for i, v in enumerate(values):
        ax.text(i, v, f" {v:.3f}", ha="center", va="bottom", fontsize=8, rotation=90)
    ax.set_xticks(x, names, rotation=30, ha="right")
    bottom = max(0.0, (float(np.nanmin(low)) if len(rows) else 0.0) - 0.05)
    ax.set_ylim(bottom, 1.0)
    ax.set_ylabel(f"{metric} (test split, 95% bootstrap CI)" + (f"; axis starts at {bottom:.2f}" if bottom > 0 else ""))
    ax.set_title(f"Model comparison: {metric}")
    ax.grid(axis="y", alpha=0.3)
    return to_png(fig)
