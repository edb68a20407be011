"""Labelled images to score: a manifest split, or every image of a ``root/<class>/<image>`` folder."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bloodcell.data.dataset import ManifestDataset, stratified_subset
from bloodcell.data.images import class_folder_images
from bloodcell.data.locate import dataset_root
from bloodcell.data.manifest import read_manifest
from bloodcell.data.registry import PBC_CLASSES
from bloodcell.errors import ConfigError, DataError
from bloodcell.provenance import file_sha256


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
    #: Rows left out: label outside the taxonomy (per label), no fine label, repeated rows.
    left_out: dict[str, int] = field(default_factory=dict)


def manifest_items(manifest_path: str | Path, split: str, taxonomy: str, data_root: str | Path | None,
                   dataset: str | None = None, limit: int | None = None, check_files: bool = True) -> EvalItems:
    """Rows of ``split`` labelled under ``taxonomy`` (a stratified ``limit`` subset if given).

    Rows whose label lies outside the taxonomy, rows without a fine label and repeated rows are
    counted in ``left_out`` and named in ``notes``. With ``check_files`` the files must still
    match the manifest's sha256 column: a changed file is refused (DataError) or, without the
    check, listed in the notes.
    """
    manifest = read_manifest(manifest_path)
    if dataset is not None and dataset != manifest.dataset:
        raise ConfigError(f"--dataset {dataset} but the manifest {manifest_path} is for dataset {manifest.dataset!r}")
    rows = manifest.rows_for(split)
    if not rows:
        raise DataError(f"the manifest {manifest_path} has no {split!r} rows")
    if manifest.dataset == "folder":
        if data_root is None:
            raise ConfigError("a 'folder' manifest needs --data-root (the folder it was made from)")
        root = Path(data_root)
    else:
        root = dataset_root(manifest.dataset, data_root)
    ds = ManifestDataset(manifest, split, taxonomy=taxonomy, root=root, limit=limit)
    left_out, notes = _left_out(manifest, rows, ds.taxonomy, split)
    changed = changed_files(root, [r for r in rows if r.path in {str(p.relative_to(root)) for p in ds.paths}])
    if changed:
        message = (f"{len(changed)} {split} file(s) no longer match the manifest's sha256 (first: {changed[0]}): "
                   "the data changed since the split was made")
        if check_files:
            raise DataError(message + "; make a new split, or pass --ignore-changed-files to score them anyway")
        notes.append("WARNING: " + message)
    names = ds.class_names
    return EvalItems(ds.paths, [names[t] for t in ds.targets], names, manifest.dataset, split, ds.taxonomy.name,
                     manifest.path, manifest.sha256, root, notes,
                     skipped=[(str(root / p), reason) for p, reason in ds.skipped], left_out=left_out)


def _left_out(manifest, rows, taxonomy, split: str) -> tuple[dict[str, int], list[str]]:
    """Counts and notes of the rows of ``split`` that are not scored, by reason."""
    outside = Counter(r.label for r in rows if taxonomy.label_of(r) is None and r.label not in PBC_CLASSES
                      and r.fine_label not in taxonomy.class_names)
    unspecified = sum(1 for r in rows if taxonomy.label_of(r) is None) - sum(outside.values())
    repeated = sum(1 for p in manifest.duplicates if p in {r.path for r in rows})
    notes = []
    if unspecified:
        notes.append(f"{unspecified} {split} image(s) have no {taxonomy.name} label (unspecified fine class) and were left out")
    if outside:
        listed = ", ".join(f"{label} ({n})" for label, n in sorted(outside.items()))
        notes.append(f"{sum(outside.values())} {split} row(s) carry labels outside {taxonomy.name} and were left out: {listed}")
    if repeated:
        notes.append(f"{repeated} repeated {split} row(s) of the manifest were scored once")
    counts = {"unspecified_fine_label": unspecified, "outside_taxonomy": sum(outside.values()), "repeated_rows": repeated}
    return counts, notes


def changed_files(root: Path, rows) -> list[str]:
    """Paths of rows whose file exists but no longer has the manifest's sha256."""
    changed = []
    for row in rows:
        path = root / row.path
        if row.sha256 and path.is_file() and file_sha256(path) != row.sha256:
            changed.append(row.path)
    return changed


def folder_items(root: str | Path | None, limit: int | None = None) -> EvalItems:
    """Every image under ``root/<class>/`` (all of them are test images); a stratified ``limit`` subset if given."""
    if root is None:
        raise ConfigError("a folder dataset needs --data-root DIR (a root/<class>/<image> folder)")
    root = Path(root)
    found = class_folder_images(root)
    paths, labels = [path for path, _ in found], [label for _, label in found]
    if not paths:
        raise DataError(f"{root}: no images found in root/<class>/<image> layout")
    present = sorted(set(labels))
    if limit is not None:
        keep = stratified_subset([present.index(label) for label in labels], limit)
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    return EvalItems(paths, labels, present, "folder", "test", None, None, None, root)

