"""Class counts (per split with a manifest) and a PNG: class-balance bars + sample grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloodcell.data.images import read_image
from bloodcell.data.inventory import inventory
from bloodcell.data.locate import find_dataset_root
from bloodcell.data.manifest import SPLITS, read_manifest
from bloodcell.data.registry import list_datasets
from bloodcell.errors import ImageError
from bloodcell.writing import save_figure

SAMPLES_PER_CLASS = 6


def class_counts(name: str, data_root: str | Path | None = None, manifest: str | Path | None = None) -> tuple[Path, dict[str, dict[str, int]], dict[str, list[str]]]:
    """(root, {class: {split or "all": n}}, {class: sample paths relative to root})."""
    if manifest is not None:
        m = read_manifest(manifest)
        inv_root = inventory(m.dataset, data_root).root if m.dataset != "folder" else Path(data_root or ".")
        counts: dict[str, dict[str, int]] = {}
        samples: dict[str, list[str]] = {}
        for row in m.rows:
            counts.setdefault(row.label, {s: 0 for s in SPLITS})[row.split] += 1
            samples.setdefault(row.label, []).append(row.path)
        return inv_root, dict(sorted(counts.items())), samples
    inv = inventory(name, data_root)
    samples = {}
    for e in inv.entries:
        if e.has_image_name:
            samples.setdefault(e.label, []).append(e.path)
    return inv.root, {c: {"all": n} for c, n in inv.counts.items()}, samples


def write_stats_png(root: Path, counts: dict[str, dict[str, int]], samples: dict[str, list[str]], output: Path, title: str) -> Path:
    """Bar chart of class balance (stacked per split) and a grid of sample images per class."""
    from matplotlib.figure import Figure

    classes = list(counts)
    columns = list(next(iter(counts.values())).keys())
    fig = Figure(figsize=(12, 4 + 1.6 * len(classes)))
    grid = fig.add_gridspec(1 + len(classes), SAMPLES_PER_CLASS, height_ratios=[3] + [1] * len(classes))
    bars = fig.add_subplot(grid[0, :])
    bottom = np.zeros(len(classes))
    for column in columns:
        values = np.array([counts[c][column] for c in classes])
        bars.bar(classes, values, bottom=bottom, label=column)
        bottom += values
    bars.set_ylabel("images")
    bars.set_title(title)
    if len(columns) > 1:
        bars.legend()
    rng = np.random.default_rng(0)
    for r, cls in enumerate(classes):
        paths = sorted(samples.get(cls, []))
        picks = [paths[i] for i in sorted(rng.permutation(len(paths))[:SAMPLES_PER_CLASS])] if paths else []
        for k in range(SAMPLES_PER_CLASS):
            ax = fig.add_subplot(grid[1 + r, k])
            ax.axis("off")
            if k < len(picks):
                try:
                    ax.imshow(read_image(root / picks[k]))
                except ImageError:
                    ax.text(0.5, 0.5, "unreadable", ha="center", va="center")
            if k == 0:
                ax.set_title(cls, loc="left", fontsize=9)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, output, dpi=80)


def registry_status(data_root: str | Path | None = None) -> list[dict]:
    """One row per registry entry: name, classes, expected images, local folder (or None), license."""
    rows = []
    for info in list_datasets():
        rows.append(
            {
                "name": info.name,
                "classes": len(info.class_names) or None,
                "expected_images": info.expected_total,
                "local": find_dataset_root(info.name, data_root),
                "license": info.license,
            }
        )
    return rows
