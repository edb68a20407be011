"""``fit`` for scikit-learn registry entries (``sk/...``): images in, ``best.skops`` out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bloodcell.progress import track
from bloodcell.train.config import TrainConfig, save_config
from bloodcell.train.data import TRAINING_SPLITS, default_cache_dir


def split_arrays(config: TrainConfig, manifest, root: Path, split: str, input_size: int,
                 limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, input_size, input_size, 3) images and int labels of the train or val split."""
    if split not in TRAINING_SPLITS:
        raise AssertionError(f"training code must never load the {split!r} split")
    from bloodcell.data.dataset import ManifestDataset

    cache_dir = (Path(config.cache_dir) if config.cache_dir else default_cache_dir()) if config.cache else None
    dataset = ManifestDataset(manifest, split, taxonomy=config.taxonomy, root=root, transform=None,
                              cache_dir=cache_dir, cache_size=input_size, limit=limit)
    images = np.stack([dataset[i][0].permute(1, 2, 0).numpy()
                       for i in track(range(len(dataset)), f"Loading {split} images", total=len(dataset))])
    return images, np.asarray(dataset.targets, dtype=np.int64)


def fit_classical(config: TrainConfig, manifest, class_names: list[str], run_dir: Path):
    """Train the pipeline of ``config.model`` on the train split and score it on validation."""
    from bloodcell.data.locate import dataset_root
    from bloodcell.models import get_model_entry
    from bloodcell.models.classical import train_classical
    from bloodcell.train.engine import RunResult

    size = config.input_size or get_model_entry(config.model).data_config.input_size
    root = dataset_root(manifest.dataset, config.data_root)
    train_x, train_y = split_arrays(config, manifest, root, "train", size, config.limit_train)
    val_x, val_y = split_arrays(config, manifest, root, "val", size, config.limit_val)
    save_config(config, run_dir / "config.json")
    out_path = run_dir / "best.skops"
    meta = {"train_config": config.to_dict(), "manifest_sha256": manifest.sha256, "taxonomy": config.taxonomy,
            "dataset": manifest.dataset}
    _, metrics = train_classical(
        config.model, train_x, train_y, val_x, val_y, class_names, out_path, n_jobs=config.threads or 1, meta=meta
    )
    return RunResult(run_dir, out_path, [], None, dict(metrics), metrics["temperature"], "completed")
