"""The smear-detector jobs: ``train_detector(config, resume, overwrite)`` and the CBC split.

Training reads the ``train`` and ``val`` ids of a smear manifest (:mod:`bloodcell.data.smear_manifest`;
never the ``test`` ones: only the annotation files and photos of the wanted ids are opened),
resizes each photo for the network (so that its longer side is ``input_size``, or at a fixed
red-cell diameter of ``cell_size_px``), keeps them in memory as
:class:`~bloodcell.train.detector.Sample` and runs the engine
(:func:`bloodcell.train.detector.fit_detector`) in a run folder checked by
:mod:`bloodcell.train.run`. ``voc_detector_split`` freezes a seeded split of a VOC smear
dataset's annotated ids; TXL-PBC's split is :mod:`bloodcell.workflows.detector_split`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bloodcell.data.boxes import SMEAR_LABELS as LABELS
from bloodcell.data.images import read_image
from bloodcell.data.locate import dataset_root
from bloodcell.data.registry import get_dataset
from bloodcell.data.smear_manifest import (
    SmearRow,
    make_split,
    read_smear_manifest,
    write_smear_manifest,
)
from bloodcell.data.smears import SmearImage, smear_images
from bloodcell.data.voc import voc_folders
from bloodcell.errors import ConfigError, DataError
from bloodcell.log import get_logger
from bloodcell.models.centernet import input_shape
from bloodcell.progress import track
from bloodcell.provenance import file_sha256
from bloodcell.resources import manifest_path
from bloodcell.train.detector import (
    RUN_FILES,
    STATE_FORMAT,
    DetectorTrainConfig,
    Sample,
    fit_detector,
)
from bloodcell.train.run import STATE_FILE, check_run_dir, clear_run_files, load_state

__all__ = ["DetectorTrainConfig", "load_split_samples", "red_cell_size", "train_detector",
           "voc_detector_split"]
TRAIN_SPLITS = ("train", "val")
#: A white cell's typical diameter in red-cell diameters (TXL-PBC's four sources: 1.9-2.1).
WBC_TO_RBC = 2.1
logger = get_logger(__name__)


def red_cell_size(boxes: np.ndarray, labels: np.ndarray, width: int, height: int) -> float | None:
    """Typical red-cell diameter (median sqrt(w*h)) of one photo's boxes; cells cut by the border are
    left out when at least 3 others remain. From the white cells (about 2.1x a red cell) when no red
    cell is annotated; None when neither is."""
    def median_size(index: int) -> float | None:
        chosen = boxes[labels == index]
        if not len(chosen):
            return None
        inside = (chosen[:, 0] > 1) & (chosen[:, 1] > 1) & (chosen[:, 2] < width - 1) & (chosen[:, 3] < height - 1)
        if inside.sum() >= 3:
            chosen = chosen[inside]
        return float(np.median(np.sqrt((chosen[:, 2] - chosen[:, 0]) * (chosen[:, 3] - chosen[:, 1]))))

    rbc = median_size(LABELS.index("RBC"))
    if rbc is not None:
        return rbc
    wbc = median_size(LABELS.index("WBC"))
    return None if wbc is None else wbc / WBC_TO_RBC


def _split_photos(manifest: str | Path, split: str, config: DetectorTrainConfig) -> list[SmearImage]:
    if split not in TRAIN_SPLITS:
        raise ConfigError(f"training code reads only the {' and '.join(TRAIN_SPLITS)} splits, not {split!r}")
    ids = set(read_smear_manifest(manifest).ids(split))
    subset = None if get_dataset(config.dataset).layout == "yolo" else config.subset  # TXL: both of its subsets
    photos = smear_images(config.dataset, config.data_root, subset, ids=ids)  # other photos are never opened
    missing = sorted(ids - {p.image_id for p in photos})
    if missing:
        raise DataError(f"{manifest}: {len(missing)} {split} photo(s) not found in dataset {config.dataset} "
                        f"(first: {missing[0]})")
    return [p for p in photos if p.source not in config.exclude_sources]


def _sample(photo: SmearImage, config: DetectorTrainConfig) -> Sample | None:
    image = read_image(photo.path)
    known = [b for b in photo.annotation.boxes if b.label in LABELS]
    boxes = np.array([b.xyxy for b in known], np.float32).reshape(-1, 4)
    labels = np.array([LABELS.index(b.label) for b in known], np.int64)
    if config.cell_size_px is None:
        scale, width, height = input_shape(image.width, image.height, config.input_size)
    else:
        size = red_cell_size(boxes, labels, image.width, image.height)
        if size is None:
            return None  # nothing to set the scale by (and nothing to learn from)
        scale = config.cell_size_px / size
        width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    array = np.asarray(image.resize((width, height), Image.BILINEAR))
    return Sample(photo.image_id, array, boxes * scale, labels, photo.source)


def load_split_samples(manifest: str | Path, split: str, config: DetectorTrainConfig,
                       limit: int | None = None) -> list[Sample]:
    """The ``train`` or ``val`` smears of ``manifest`` (the first ``limit``), resized: to
    ``config.cell_size_px`` per red cell when set, else so that the longer side is ``config.input_size``.

    Refuses ``test``: the held-out smears are never opened by training code. Photos of
    ``config.exclude_sources`` are left out.
    """
    photos = _split_photos(manifest, split, config)[:limit]
    if not photos:
        raise DataError(f"{manifest}: no {split} images")
    samples = [_sample(photo, config) for photo in track(photos, f"loading {split} smears", unit="images")]
    return [s for s in samples if s is not None]


def train_detector(config: DetectorTrainConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run (or continue) a detector training into ``config.out``; returns the best epoch's row and checkpoint path."""
    out = Path(config.out)
    check_run_dir(out, RUN_FILES, resume=resume, overwrite=overwrite)
    manifest_sha256 = file_sha256(manifest_path(config.manifest))
    state = None
    if resume:
        state = load_state(out / STATE_FILE, STATE_FORMAT)
        if state["manifest_sha256"] != manifest_sha256:
            raise DataError(f"{config.manifest} is not the manifest {out} was trained on (its sha256 differs)")
    train = load_split_samples(config.manifest, "train", config, config.limit_train)
    val = load_split_samples(config.manifest, "val", config, config.limit_val)
    logger.info("%d training and %d validation smears", len(train), len(val))
    if not resume:
        clear_run_files(out, RUN_FILES)
    return fit_detector(config, train, val, out, manifest_sha256=manifest_sha256, state=state)


def voc_detector_split(out: str | Path, dataset: str = "cbc", subset: str = "Training", seed: int = 0,
                       data_root: str | Path | None = None) -> dict[str, Any]:
    """Freeze a seeded 70/15/15 ``image_id,split`` manifest of a VOC smear dataset's annotated ids."""
    annotations, _ = voc_folders(dataset_root(dataset, data_root), subset)
    ids = [p.stem for p in sorted(annotations.glob("*.xml"))]
    if not ids:
        raise DataError(f"{annotations}: no VOC annotation files")
    result = make_split(ids, seed=seed)
    manifest = write_smear_manifest([SmearRow(i, s) for i, s in result.items()], out, ("image_id", "split"))
    counts = {name: sum(s == name for s in result.values()) for name in ("train", "val", "test")}
    return {"manifest": str(manifest.path), "sha256": manifest.sha256, "smears": len(ids), "counts": counts}
