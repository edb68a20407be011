"""Integrity report of a dataset: unreadable, truncated, unusual modes/sizes, duplicates, blur.

Looks at every file under the class folders (dot-files included). Nothing is changed.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from bloodcell.data.analysis import (
    BLUR_Z,
    NEAR_DUPLICATE_DISTANCE,
    analyse_files,
    blurry_images,
    duplicate_groups,
)
from bloodcell.data.inventory import Entry, Inventory, count_warnings, inventory
from bloodcell.data.locate import dataset_root
from bloodcell.data.registry import get_dataset
from bloodcell.errors import DataError

#: A side differing from the dominant size by more than this fraction makes an image "unusual".
SIZE_TOLERANCE = 0.1


def _voc_inventory(name: str, data_root: str | Path | None) -> Inventory:
    info = get_dataset(name)
    root = dataset_root(info.name, data_root)
    entries = []
    for folder in sorted(p for p in root.rglob("*") if p.is_dir() and p.name in ("Images", "JPEGImages")):
        subset = folder.parent.name if folder.parent != root else folder.name
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            entries.append(Entry(path.relative_to(root).as_posix(), subset, subset, subset))
    if not entries:
        raise DataError(f"no image folders (Images/ or JPEGImages/) found in {root}")
    counts = dict(sorted(Counter(e.label for e in entries if e.has_image_name).items()))
    return Inventory(info.name, root, entries, counts, dict(info.expected_counts), count_warnings(info, counts))


def check_dataset(
    name: str,
    data_root: str | Path | None = None,
    near_distance: int = NEAR_DUPLICATE_DISTANCE,
    blur_z: float = BLUR_Z,
    workers: int = 2,
) -> dict:
    """Scan dataset ``name`` and return the JSON-ready integrity report."""
    start = time.perf_counter()
    info = get_dataset(name)
    if info.layout == "npz":
        raise DataError(f"check reads image files; {info.name} is stored as .npz arrays (nothing to check file by file)")
    inv = _voc_inventory(info.name, data_root) if info.layout == "voc" else inventory(info.name, data_root)
    facts = analyse_files(inv.root, [e.path for e in inv.entries], focus=True, workers=workers, description="Checking images")
    labels = [e.label for e in inv.entries]
    ok = [(f, label) for f, label in zip(facts, labels) if f.problem is None]
    sizes = Counter((f.width, f.height) for f, _ in ok)
    dominant = sizes.most_common(1)[0][0] if sizes else (0, 0)

    def unusual(f) -> bool:
        return any(abs(a - b) > SIZE_TOLERANCE * b for a, b in zip((f.width, f.height), dominant))

    blurry, thresholds = blurry_images([f for f, _ in ok], [label for _, label in ok], blur_z)
    return {
        "dataset": inv.name,
        "root": str(inv.root),
        "files": len(facts),
        "readable_images": len(ok),
        "counts": {c: {"found": n, "expected": inv.expected.get(c)} for c, n in inv.counts.items()},
        "warnings": inv.warnings,
        "unreadable": [{"path": f.path, "reason": f.reason} for f in facts if f.problem == "unreadable"],
        "truncated": [{"path": f.path, "reason": f.reason} for f in facts if f.problem == "truncated"],
        "unusual_mode": [{"path": f.path, "mode": f.mode} for f, _ in ok if f.mode != "RGB"],
        "dominant_size": list(dominant),
        "sizes": {f"{w}x{h}": n for (w, h), n in sorted(sizes.items())},
        "unusual_size": [{"path": f.path, "size": [f.width, f.height]} for f, _ in ok if unusual(f)],
        "near_duplicate_distance": near_distance,
        "duplicate_groups": duplicate_groups(facts, near_distance),
        "blur_z": blur_z,
        "focus_thresholds": thresholds,
        "blurry": blurry,
        "seconds": round(time.perf_counter() - start, 1),
    }
