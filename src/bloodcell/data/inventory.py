"""List the files of a class-folder dataset (every file, dot-files included) and verify counts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bloodcell.data.images import IMAGE_EXTENSIONS, class_folders
from bloodcell.data.locate import dataset_root
from bloodcell.data.registry import PBC_CLASSES, DatasetInfo, get_dataset
from bloodcell.data.taxonomy import pbc_fine_label
from bloodcell.errors import DataError

#: Top-level folder names read as subsets (Kaggle "Blood Cell Images" uses TRAIN/TEST/TEST_SIMPLE).
SUBSET_NAMES = {"train", "test", "val", "valid", "validation", "test_simple"}


@dataclass(frozen=True)
class Entry:
    """One file: path relative to the dataset root (POSIX), folder label, fine label, subset."""

    path: str
    label: str
    fine_label: str
    subset: str = ""

    @property
    def has_image_name(self) -> bool:
        name = self.path.rsplit("/", 1)[-1]
        return Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith(".")


@dataclass
class Inventory:
    """All files of a dataset plus count checks against the registry."""

    name: str
    root: Path
    entries: list[Entry]
    counts: dict[str, int]
    expected: dict[str, int]
    warnings: list[str] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return sorted(self.counts)


def _class_dirs(root: Path) -> list[tuple[str, Path]]:
    """(subset, class folder) pairs; subset folders (TRAIN/TEST...) add one level."""
    pairs = []
    for child in class_folders(root):
        if child.name.lower() in SUBSET_NAMES:
            pairs += [(child.name, sub) for sub in class_folders(child)]
        else:
            pairs.append(("", child))
    return pairs


def scan_folder(root: Path, info: DatasetInfo) -> list[Entry]:
    """Every regular file under the class folders of ``root`` (hidden files included)."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    pairs = _class_dirs(root)
    if info.class_names:
        unknown = sorted({folder.name for _, folder in pairs} - set(info.class_names))
        if unknown:
            raise DataError(
                f"{root} has class folder(s) {', '.join(unknown)} that are not in the {info.name} class list "
                f"({', '.join(info.class_names)})"
            )
    entries = []
    for subset, folder in pairs:
        label = folder.name
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            fine = pbc_fine_label(path.name, label) if info.class_names == PBC_CLASSES else label
            entries.append(Entry(rel, label, fine, subset))
    entries.sort(key=lambda e: e.path)
    if not any(e.has_image_name for e in entries):
        raise DataError(f"no image files found in {root} (expected {root}/<class>/<image>)")
    return entries


def count_warnings(info: DatasetInfo, counts: dict[str, int]) -> list[str]:
    """Sentences naming how a local copy differs from the official counts (missing classes too)."""
    if not info.expected_counts:
        return []
    found, expected = sum(counts.values()), sum(info.expected_counts.values())
    diffs = [
        f"{name} {counts.get(name, 0)}/{want}" for name, want in info.expected_counts.items() if counts.get(name, 0) != want
    ]
    if not diffs:
        return []
    kind = "fewer" if found < expected else ("more" if found > expected else "a different split of")
    return [
        f"{info.name}: {found} images found, {expected} in the official release ({kind} images; "
        f"per class found/official: {', '.join(diffs)})"
    ]


def class_warnings(root: Path, entries: list[Entry]) -> list[str]:
    """One sentence per class folder that holds no image, and one when fewer than two classes have images."""
    folders = [folder.relative_to(root).as_posix() for _, folder in _class_dirs(root)]
    # the class folder of an entry: <class>/... or <subset>/<class>/...
    filled = {"/".join(e.path.split("/")[:2 if e.subset else 1]) for e in entries if e.has_image_name}
    warnings = [f"class folder {root / folder} holds no images" for folder in folders if folder not in filled]
    labels = sorted({e.label for e in entries if e.has_image_name})
    if len(labels) == 1:
        warnings.append(f"only one class ({labels[0]}) has images in {root}: a classifier needs at least two")
    return warnings


def inventory(name: str, data_root: str | Path | None = None, root: Path | None = None) -> Inventory:
    """Scan a class-folder dataset and compare its per-class image counts with the registry; empty class
    folders and a dataset of a single class are warned about."""
    info = get_dataset(name)
    if info.layout != "classes":
        raise DataError(f"dataset {info.name!r} is not a class-folder dataset (layout {info.layout})")
    root = Path(root) if root is not None else dataset_root(info.name, data_root)
    entries = scan_folder(root, info)
    counts = Counter(e.label for e in entries if e.has_image_name)
    for name_ in info.class_names:
        counts.setdefault(name_, 0)
    warnings = count_warnings(info, counts) + class_warnings(root, entries)
    return Inventory(info.name, root, entries, dict(sorted(counts.items())), dict(info.expected_counts), warnings)
