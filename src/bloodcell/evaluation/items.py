"""The images to evaluate: a manifest split, or every image of a ``root/<class>/<image>`` folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bloodcell.data.images import image_files
from bloodcell.errors import ConfigError, DataError


@dataclass
class EvalItems:
    """Image paths with their dataset class names, plus what describes where they came from."""

    paths: list[Path]
    labels: list[str]
    class_names: list[str]
    dataset: str
    split: str
    taxonomy: str | None = None
    manifest: Path | None = None
    manifest_sha256: str | None = None
    root: Path | None = None
    notes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def manifest_items(manifest_path: str | Path, split: str, taxonomy: str, data_root: str | Path | None,
                   dataset: str | None = None, limit: int | None = None) -> EvalItems:
    """Rows of ``split`` labelled under ``taxonomy`` (a stratified ``limit`` subset if given)."""
    from bloodcell.data.dataset import ManifestDataset
    from bloodcell.data.locate import dataset_root
    from bloodcell.data.manifest import read_manifest

    manifest = read_manifest(manifest_path)
    if dataset is not None and dataset != manifest.dataset:
        raise ConfigError(f"--dataset {dataset} but the manifest {manifest_path} is for dataset {manifest.dataset!r}")
    if not manifest.rows_for(split):
        raise DataError(f"the manifest {manifest_path} has no {split!r} rows")
    if manifest.dataset == "folder":
        if data_root is None:
            raise ConfigError("a 'folder' manifest needs --data-root (the folder it was made from)")
        root = Path(data_root)
    else:
        root = dataset_root(manifest.dataset, data_root)
    ds = ManifestDataset(manifest, split, taxonomy=taxonomy, root=root, limit=limit)
    notes = []
    if ds.unlabelled:
        notes.append(f"{ds.unlabelled} {split} image(s) have no {ds.taxonomy.name} label (unspecified fine class) "
                     "and were left out")
    names = ds.class_names
    return EvalItems(ds.paths, [names[t] for t in ds.targets], names, manifest.dataset, split, ds.taxonomy.name,
                     Path(manifest_path), manifest.sha256, root, notes,
                     skipped=[(str(root / p), reason) for p, reason in ds.skipped])


def folder_items(root: str | Path | None, limit: int | None = None) -> EvalItems:
    """Every image under ``root/<class>/`` (all of them are test images); a stratified ``limit`` subset if given."""
    from bloodcell.data.dataset import stratified_subset

    if root is None:
        raise ConfigError("a folder dataset needs --data-root DIR (a root/<class>/<image> folder)")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, labels = [], []
    for name in classes:
        for path in image_files(root / name):
            paths.append(path)
            labels.append(name)
    if not paths:
        raise DataError(f"{root}: no images found in root/<class>/<image> layout")
    present = sorted(set(labels))
    if limit is not None:
        keep = stratified_subset([present.index(label) for label in labels], limit)
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    return EvalItems(paths, labels, present, "folder", "test", None, None, None, root)
