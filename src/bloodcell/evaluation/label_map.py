"""Mapping an external dataset's class names onto a model's classes.

A label map is a JSON object ``{"DATASET_CLASS": "model_class" | null}`` or a CSV file with
the header ``source,target`` (an empty target means null). Dataset classes mapped to null or
missing from the map are *unknown to the model*: their images are predicted and reported
separately, never scored. Without a map, dataset classes are matched to model classes by
name, ignoring case.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from bloodcell.data.tables import csv_rows
from bloodcell.errors import ConfigError

LabelMap = dict[str, "str | None"]


def read_label_map(path: str | Path) -> LabelMap:
    """Read a ``.json`` or ``.csv`` label map; raises ConfigError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: label map file not found")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: label map cannot be read as UTF-8 text ({exc})") from exc
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: label map is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        if not isinstance(data, dict) or not all(v is None or isinstance(v, str) for v in data.values()):
            raise ConfigError(f"{path}: a JSON label map must be an object of dataset class -> model class or null")
        return {str(k): (v.strip() or None) if isinstance(v, str) else None for k, v in data.items()}
    if suffix == ".csv":
        fields, rows = csv_rows(text, str(path))
        if [c.strip().lower() for c in fields] != ["source", "target"]:
            raise ConfigError(f"{path}: a CSV label map needs the header 'source,target'")
        out: LabelMap = {}
        for line, row in enumerate(rows, start=2):
            source, target = (row.get(name) or "" for name in fields)
            if not source.strip() and not target.strip() and None not in row:
                continue  # a blank row
            if None in row or not source.strip():
                raise ConfigError(f"{path} line {line}: expected 'source,target' (target may be empty)")
            out[source.strip()] = target.strip() or None
        return out
    raise ConfigError(f"{path}: label maps must be .json or .csv files")


def resolve_label_map(
    dataset_classes: Sequence[str], model_classes: Sequence[str], label_map: Mapping[str, str | None] | None
) -> tuple[dict[str, str | None], list[str]]:
    """Dataset class -> model class (None = unknown to the model), and notes about the map.

    Raises ConfigError when the map targets a class the model does not have, or when no
    dataset class maps onto the model at all.
    """
    notes: list[str] = []
    if label_map is None:
        by_lower = {c.lower(): c for c in model_classes}
        mapping = {c: by_lower.get(c.lower()) for c in dataset_classes}
    else:
        bad = sorted({t for t in label_map.values() if t is not None and t not in model_classes})
        if bad:
            raise ConfigError(
                f"the label map targets class(es) {', '.join(map(repr, bad))} that the model does not have "
                f"(model classes: {', '.join(model_classes)})"
            )
        mapping = {c: label_map.get(c) for c in dataset_classes}
        unused = sorted(set(label_map) - set(dataset_classes))
        if unused:
            notes.append(f"label map entries with no such dataset class were ignored: {', '.join(unused)}")
    if not any(mapping.values()):
        raise ConfigError(
            f"none of the dataset classes ({', '.join(dataset_classes)}) maps onto the model's classes "
            f"({', '.join(model_classes)}); pass --label-map FILE"
        )
    unknown = [c for c, t in mapping.items() if t is None]
    if unknown:
        notes.append(
            f"dataset class(es) unknown to the model, reported separately and not scored: {', '.join(unknown)}"
        )
    absent = [c for c in model_classes if c not in mapping.values()]
    if absent:
        notes.append(
            f"model class(es) absent from this dataset: {', '.join(absent)}; predictions into them count as errors"
        )
    return mapping, notes
