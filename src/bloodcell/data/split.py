"""Frozen, leakage-aware, stratified train/val/test splits written as a manifest CSV.

Reproducible byte for byte: inputs are sorted, randomness comes from one
``numpy.random.Generator(seed)`` used in a fixed order, and the CSV has no floats.
Exact and near duplicates (and ``group_by`` groups) are merged with union-find so that
they never cross splits; unreadable files are excluded and reported.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from bloodcell.data.analysis import (
    NEAR_DUPLICATE_DISTANCE,
    UnionFind,
    analyse_files,
    duplicate_groups,
)
from bloodcell.data.inventory import Entry, inventory
from bloodcell.data.manifest import SPLITS, Manifest, ManifestRow, write_manifest
from bloodcell.data.registry import PBC_CLASSES, get_dataset
from bloodcell.data.tables import read_csv
from bloodcell.data.taxonomy import Taxonomy, get_taxonomy, labels_taxonomy
from bloodcell.errors import ConfigError, DataError

BUILTIN_GROUP_COLUMNS = ("label", "fine_label", "subset")


@dataclass
class SplitResult:
    manifest: Manifest
    counts: dict[str, dict[str, int]]
    excluded: list[tuple[str, str]]
    duplicate_groups: list[dict]
    merged_groups: int
    cross_class_groups: int
    unlabelled: int
    taxonomy: str
    warnings: list[str] = field(default_factory=list)


def parse_ratios(text: str | tuple[float, ...] | list[float]) -> tuple[Fraction, Fraction, Fraction]:
    """``"0.7,0.15,0.15"`` -> three exact fractions summing to 1 (ConfigError otherwise)."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p) for p in text]
    try:
        values = [Fraction(p).limit_denominator(10**6) for p in parts]
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"ratios {text!r} must be three numbers such as 0.7,0.15,0.15") from None
    if len(values) != 3 or any(v < 0 for v in values) or abs(float(sum(values)) - 1.0) > 1e-6:
        raise ConfigError(f"ratios {text!r} must be three non-negative numbers (train,val,test) summing to 1")
    total = sum(values)
    return tuple(v / total for v in values)  # type: ignore[return-value]


def largest_remainder(n: int, ratios: tuple[Fraction, ...]) -> list[int]:
    """Integer sizes summing to ``n``, each within one of ``ratio * n`` (ties go to earlier splits)."""
    quotas = [r * n for r in ratios]
    sizes = [int(q) for q in quotas]
    order = sorted(range(len(quotas)), key=lambda k: (-(quotas[k] - sizes[k]), k))
    for k in order[: n - sum(sizes)]:
        sizes[k] += 1
    return sizes


def assign_groups(group_sizes: list[int], ratios: tuple[Fraction, ...], rng: np.random.Generator) -> list[int]:
    """Split index for each group: shuffled, largest first, each to the split with the largest deficit."""
    targets = largest_remainder(sum(group_sizes), ratios)
    filled = [0] * len(ratios)
    order = rng.permutation(len(group_sizes))
    order = sorted(order.tolist(), key=lambda g: -group_sizes[g])
    out = [0] * len(group_sizes)
    for g in order:
        k = max(range(len(ratios)), key=lambda s: (targets[s] - filled[s], -s))
        out[g] = k
        filled[k] += group_sizes[g]
    return out


def read_metadata(path: str | Path) -> dict[str, dict[str, str]]:
    """A CSV with a ``path`` column (relative to the dataset root) and any other columns."""
    return {row["path"]: row for row in read_csv(path, "metadata file", ("path",))[1]}


def _group_values(entries: list[Entry], group_by: str, metadata: dict[str, dict[str, str]] | None) -> list[str]:
    if metadata is not None:
        if not any(group_by in row for row in metadata.values()):
            raise ConfigError(f"--group-by column {group_by!r} is not in the metadata file")
        return [(metadata.get(e.path) or {}).get(group_by, "") or "" for e in entries]
    if group_by not in BUILTIN_GROUP_COLUMNS:
        raise ConfigError(
            f"--group-by column {group_by!r} is unknown; use {', '.join(BUILTIN_GROUP_COLUMNS)} or give --metadata FILE.csv"
        )
    return [getattr(e, group_by) for e in entries]


def default_taxonomy(name: str, labels: list[str]) -> Taxonomy:
    """``pbc8`` for PBC-like datasets, else the sorted folder labels."""
    info = get_dataset(name)
    return get_taxonomy("pbc8") if info.class_names == PBC_CLASSES else labels_taxonomy(labels)


def _split_taxonomy(inv, entries: list, taxonomy: str | None):
    """The taxonomy the split stratifies by; ConfigError/DataError when it leaves fewer than two classes."""
    tax = get_taxonomy(taxonomy) if taxonomy and taxonomy != "labels" else default_taxonomy(inv.name, [e.label for e in entries])
    if not any(tax.label_of(e) is not None for e in entries):
        raise ConfigError(f"taxonomy {tax.name!r} has none of the labels of {inv.name} ({', '.join(inv.class_names)})")
    classes = sorted({tax.label_of(e) for e in entries} - {None})
    if len(classes) < 2:
        raise DataError(f"{inv.root}: only one class ({classes[0]}) has readable images under taxonomy {tax.name}; "
                        "a split for training a classifier needs at least two")
    return tax


def _linked_groups(entries: list, facts: list, strata: list[str], group_values: list[str] | None,
                   near_distance: int) -> tuple[list[list[int]], list[dict], int, int]:
    """Images that must share a split (same group value or (near-)duplicates): the components, the duplicate
    groups, how many of those merged components and how many span two classes."""
    uf = UnionFind(len(entries))
    first: dict[str, int] = {}
    for i, value in enumerate(group_values or []):
        if value:
            uf.union(first.setdefault(value, i), i)
    index = {f.path: i for i, f in enumerate(facts)}
    dups = duplicate_groups(facts, near_distance)
    merged = sum(any([uf.union(index[g["paths"][0]], index[p]) for p in g["paths"][1:]]) for g in dups)
    cross = sum(1 for g in dups if len({strata[index[p]] for p in g["paths"]}) > 1)
    return uf.groups(), dups, merged, cross


def _assign_splits(components: list[list[int]], strata: list[str], fractions, seed: int) -> list[str]:
    """Each image's split: whole components assigned per class (a component's majority class), seeded."""
    comp_class = []
    for members in components:
        votes = Counter(strata[i] for i in members)
        comp_class.append(min(votes, key=lambda c: (-votes[c], c)))
    rng = np.random.default_rng(seed)
    split_of = [""] * sum(len(members) for members in components)
    for cls in sorted(set(comp_class)):
        comps = [c for c, k in enumerate(comp_class) if k == cls]
        for c, s in zip(comps, assign_groups([len(components[c]) for c in comps], fractions, rng)):
            for i in components[c]:
                split_of[i] = SPLITS[s]
    return split_of


def make_split(
    name: str,
    output: str | Path,
    ratios: str | tuple[float, ...] = "0.7,0.15,0.15",
    seed: int = 0,
    group_by: str | None = None,
    taxonomy: str | None = None,
    data_root: str | Path | None = None,
    metadata: str | Path | None = None,
    near_distance: int = NEAR_DUPLICATE_DISTANCE,
    workers: int = 2,
) -> SplitResult:
    """Scan dataset ``name``, split it per class and write the manifest to ``output``."""
    fractions = parse_ratios(ratios)
    inv = inventory(name, data_root)
    meta = read_metadata(metadata) if metadata is not None else None
    facts = analyse_files(inv.root, [e.path for e in inv.entries], focus=False, workers=workers, description="Hashing images")
    excluded = [(f.path, f.reason) for f in facts if f.problem is not None]
    keep = [i for i, f in enumerate(facts) if f.problem is None]
    if not keep:
        raise DataError(f"no readable images in {inv.root}")
    entries = [inv.entries[i] for i in keep]
    kept_facts = [facts[i] for i in keep]
    tax = _split_taxonomy(inv, entries, taxonomy)
    strata = [tax.label_of(e) or e.label for e in entries]
    group_values = _group_values(entries, group_by, meta) if group_by else None
    components, dups, merged, cross = _linked_groups(entries, kept_facts, strata, group_values, near_distance)
    split_of = _assign_splits(components, strata, fractions, seed)

    rows = []
    for members in components:
        dup_key = "dup:" + entries[members[0]].path if len(members) > 1 else ""
        for i in members:
            e = entries[i]
            group = group_values[i] if group_values is not None else dup_key
            rows.append(ManifestRow(e.path, e.label, e.fine_label, split_of[i], kept_facts[i].sha256, group))
    manifest = write_manifest(output, inv.name, rows)

    counts: dict[str, dict[str, int]] = {}
    for cls, split in zip(strata, split_of):
        counts.setdefault(cls, {s: 0 for s in SPLITS})[split] += 1
    unlabelled = sum(1 for e in entries if tax.label_of(e) is None)
    warnings = list(inv.warnings)
    if unlabelled:
        warnings.append(
            f"{unlabelled} images have no {tax.name} label (unspecified fine label); they stay in the manifest "
            f"and are excluded from {tax.name} training and evaluation"
        )
    return SplitResult(manifest, dict(sorted(counts.items())), excluded, dups, merged, cross, unlabelled, tax.name, warnings)
