"""Per-epoch records of a run: ``metrics.csv`` and the training-curve figure ``curves.png``."""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")


def write_metrics_csv(history: list[dict], path: str | Path) -> Path:
    """One row per epoch with the columns in ``COLUMNS``."""
    path = Path(path)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: _fmt(row.get(k)) for k in COLUMNS})
    return path


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def plot_curves(history: list[dict], path: str | Path) -> Path:
    """Loss and accuracy against epoch, training and validation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    path = Path(path)
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    for ax, key, title in zip(fig.subplots(1, 2), ("loss", "acc"), ("Loss", "Accuracy")):
        ax.plot(epochs, [row[f"train_{key}"] for row in history], marker="o", label="train")
        ax.plot(epochs, [row[f"val_{key}"] for row in history], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=100)
    return path
