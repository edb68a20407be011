"""Per-epoch records of a classifier run: the ``metrics.csv`` columns and the training-curve figure ``curves.png``."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from bloodcell.writing import save_figure

COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")


def plot_curves(history: list[dict], path: str | Path) -> Path:
    """Loss and accuracy against epoch, training and validation, as a PNG."""
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
    return save_figure(fig, path, dpi=100)
