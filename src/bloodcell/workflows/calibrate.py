"""Calibration jobs: fit a checkpoint's out-of-distribution guard, and read int8 calibration images.

The guard (:mod:`bloodcell.inference.ood`) is fitted on a manifest split (never test; by default
val) plus, optionally, the train split of other labs' manifests, and stored in the checkpoint's
``ood`` metadata. Int8 calibration images are preprocessed validation images for static
ONNX quantization (:func:`bloodcell.inference.onnx.export_onnx`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bloodcell.checkpoint import load_checkpoint, update_metadata
from bloodcell.data.images import read_image, scan_folder
from bloodcell.data.locate import dataset_root, manifest_images_root
from bloodcell.data.manifest import read_manifest
from bloodcell.errors import ConfigError, DataError, ImageError
from bloodcell.inference.ood import fit_guard
from bloodcell.inference.predictor import Classifier
from bloodcell.progress import track


def sample_rows(rows: list, limit: int | None, seed: int = 0) -> list:
    """At most ``limit`` of ``rows``, a seeded sample in their original order."""
    if limit is None or len(rows) <= limit:
        return rows
    picks = np.random.default_rng(seed).choice(len(rows), size=limit, replace=False)
    return [rows[i] for i in sorted(picks)]


def decoded_batches(paths: Sequence[Path], batch_size: int, description: str):
    """Batches of decoded images of ``paths`` (unreadable files are left out)."""
    for start in track(range(0, len(paths), batch_size), description, total=len(paths), unit="images",
                       size=lambda s: min(batch_size, len(paths) - s)):
        batch = []
        for path in paths[start:start + batch_size]:
            try:
                batch.append(read_image(path))
            except ImageError:
                continue
        if batch:
            yield batch


def _calibration_set(classifier: Classifier, paths: Sequence[Path], name: str,
                     batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    pixels, features = [], []
    for batch in decoded_batches(paths, batch_size, f"calibrating the guard ({name})"):
        pixels.append(classifier.pixels(batch))
        features.append(classifier.score(pixels[-1])[1][0])
    if not pixels:
        raise DataError(f"{name}: none of its images could be read")
    return np.concatenate(pixels), np.concatenate(features)


def calibrate_ood(checkpoint: str | Path, manifest: str | Path, split: str = "val", *,
                  extra: Sequence[str | Path] = (), unfamiliar: Sequence[str | Path] = (),
                  data_root: str | Path | None = None, limit: int | None = 2000,
                  pass_rate: float = 0.99, batch_size: int = 32, seed: int = 0,
                  output: str | Path | None = None) -> dict[str, Any]:
    """Fit the guard on ``split`` of ``manifest`` (+ the train split of each ``extra`` manifest: other labs
    the model learned from) and on the cell images of each ``unfamiliar`` folder (other labs' stained cells
    the model did not learn from: they pass with the unfamiliar-lab note), and store it in the checkpoint
    file (rewritten in place, or written as ``output``: whole or not at all); returns the fitted parameters."""
    if split == "test":
        raise ConfigError("the guard is calibrated on the validation split; the test split is kept for evaluation")
    loaded = load_checkpoint(checkpoint)
    classifier = Classifier.from_checkpoint(loaded, use_ood=False)
    main = read_manifest(manifest)
    sources = [(main, split, dataset_root(main.dataset, data_root))]
    sources += [(read_manifest(path), "train", manifest_images_root(path, read_manifest(path).dataset, data_root))
                for path in extra]
    pixels, features, names = [], [], []
    for data, part, root in sources:
        rows = sample_rows(list(data.rows_for(part)), limit, seed)
        if not rows:
            raise DataError(f"{data.path}: split {part!r} has no images")
        name = f"{Path(str(data.path)).name} ({part})"
        source_pixels, source_features = _calibration_set(classifier, [root / r.path for r in rows], name, batch_size)
        pixels.append(source_pixels)
        features.append(source_features)
        names += [name] * len(source_pixels)
    others = []
    for folder in unfamiliar:
        paths = sample_rows(scan_folder(folder).images, limit, seed)
        name = f"{Path(folder).name} (unfamiliar)"
        source_pixels, source_features = _calibration_set(classifier, paths, name, batch_size)
        pixels.append(source_pixels)
        features.append(source_features)
        names += [name] * len(source_pixels)
        others.append(name)
    guard = fit_guard(np.concatenate(pixels), np.concatenate(features), pass_rate=pass_rate, sources=names,
                      unfamiliar=others)
    params = guard.to_dict()
    params.update(split=split, manifest_sha256=main.sha256,
                  extra_sha256={Path(str(d.path)).name: d.sha256 for d, _, _ in sources[1:]})
    update_metadata(loaded.path, output, ood=params)
    return params


def int8_calibration_batches(checkpoint: str | Path, manifest: str | Path, limit: int = 200,
                             data_root: str | Path | None = None) -> list[np.ndarray]:
    """Preprocessed single-image batches of up to ``limit`` validation images of ``manifest``."""
    data = read_manifest(manifest)
    rows = list(data.rows_for("val"))
    rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))[:limit]]
    if not rows:
        raise DataError(f"{manifest}: no validation images to calibrate int8 quantization")
    classifier = Classifier.from_checkpoint(load_checkpoint(checkpoint), use_ood=False)
    root = dataset_root(data.dataset, data_root)
    return [classifier.preprocess([image]) for batch in decoded_batches([root / r.path for r in rows], 1,
                                                                        "reading int8 calibration images")
            for image in batch]
