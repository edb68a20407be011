"""Where datasets live: ``--data-root``, else ``$BLOODCELL_DATA``, else the user cache folder.

Nothing here creates folders; callers that write (``fetch``) create what they need.
"""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir

from bloodcell.data.registry import DatasetInfo, get_dataset
from bloodcell.errors import DataError

ENV_VAR = "BLOODCELL_DATA"


def data_home(data_root: str | Path | None = None) -> Path:
    """The folder that holds the datasets (explicit argument, then ``$BLOODCELL_DATA``, then cache)."""
    if data_root is not None and str(data_root) != "":
        return Path(data_root).expanduser()
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env).expanduser()
    return Path(user_cache_dir("bloodcell")) / "datasets"


def looks_like(info: DatasetInfo, folder: Path) -> bool:
    """True when ``folder`` has the layout of dataset ``info``."""
    if not folder.is_dir():
        return False
    if info.layout == "npz":
        return any(folder.glob("bloodmnist*.npz"))
    if info.layout == "yolo":
        return (folder / "classes.txt").is_file() and any((folder / s / "images").is_dir() for s in ("train", "val"))
    if info.layout == "voc":
        return (folder / "Annotations").is_dir() or (folder / "Training" / "Annotations").is_dir()
    if info.class_names:
        return any((folder / name).is_dir() for name in info.class_names)
    return any(child.is_dir() and not child.name.startswith(".") for child in folder.iterdir())


def candidates(info: DatasetInfo, home: Path) -> list[Path]:
    """Folders checked for ``info`` under ``home``, in order (``home`` itself last)."""
    names = info.folder_names or (info.name,)
    found = [home / name for name in names] + [home / info.name / name for name in names]
    found.append(home)
    return list(dict.fromkeys(found))


def find_dataset_root(name: str, data_root: str | Path | None = None) -> Path | None:
    """The dataset's folder if present, else None (never raises for a missing dataset)."""
    info = get_dataset(name)
    home = data_home(data_root)
    if info.name == "folder":
        return home if looks_like(info, home) else None
    for folder in candidates(info, home):
        if looks_like(info, folder):
            return folder
    return None


def dataset_root(name: str, data_root: str | Path | None = None) -> Path:
    """The folder of dataset ``name``; raises ``DataError`` saying where to put it when absent."""
    info = get_dataset(name)
    root = find_dataset_root(info.name, data_root)
    if root is not None:
        return root
    home = data_home(data_root)
    if info.name == "folder":
        raise DataError(f"{home} is not a root/<class>/<image> folder; pass the dataset folder with --data-root")
    how = "it is local only" if info.local_only else f"run `bloodcell data fetch {info.name}`"
    raise DataError(
        f"dataset {info.name!r} not found under {home} (looked for {', '.join(info.folder_names or (info.name,))}); "
        f"{how} or place it at {home / info.name}"
    )


def manifest_images_root(manifest_path: str | Path, dataset: str, data_root: str | Path | None = None) -> Path:
    """Where a manifest's image paths start: a ``folder`` manifest's own folder (as ``bloodcell
    data crops`` writes it), else the dataset's folder (:func:`dataset_root`)."""
    return Path(manifest_path).parent if dataset == "folder" else dataset_root(dataset, data_root)
