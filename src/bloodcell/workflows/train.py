"""The classifier training job: ``run_training(config, resume, overwrite)``.

Reads the manifest (and the ``extra_train`` manifests), resolves the taxonomy (``labels``: the
manifest's own sorted labels), decides the run folder (:mod:`bloodcell.train.run`), builds the
model (``init_from``: starting weights from a checkpoint or bundled model) and the train/val
datasets (with the decoded-image cache), checks the classes each split covers, then hands
everything to the engine (:func:`bloodcell.train.engine.fit`), or for ``sk/...`` models the
images as arrays to :func:`bloodcell.train.classical.fit_classical`. The test split is never
opened. Runs single-process or under torchrun; ``bloodcell train`` and ``bloodcell tune`` call it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from platformdirs import user_cache_dir

from bloodcell.checkpoint import load_checkpoint
from bloodcell.data.dataset import ManifestDataset
from bloodcell.data.locate import dataset_root, manifest_images_root
from bloodcell.data.manifest import Manifest, read_manifest
from bloodcell.data.taxonomy import Taxonomy, get_taxonomy, labels_taxonomy
from bloodcell.errors import ConfigError, DataError
from bloodcell.framing import VERSION as FRAMING_VERSION
from bloodcell.log import get_logger
from bloodcell.models import create_model, get_model_entry
from bloodcell.progress import track
from bloodcell.provenance import file_sha256
from bloodcell.resources import manifest_path
from bloodcell.train import distributed as dist_utils
from bloodcell.train.classical import fit_classical
from bloodcell.train.config import TrainConfig, save_config
from bloodcell.train.data import (
    TRAINING_SPLITS,
    SplitData,
    class_coverage,
    combine_splits,
)
from bloodcell.train.distributed import DistContext
from bloodcell.train.engine import (
    RUN_FILES,
    STATE_FORMAT,
    RunResult,
    fit,
    load_init_weights,
    seed_everything,
)
from bloodcell.train.run import STATE_FILE, check_run_dir, clear_run_files, load_state
from bloodcell.transforms import (
    DataConfig,
    create_pixel_transform,
    create_transform,
    staging_size,
)
from bloodcell.weights import resolve
from bloodcell.workflows.style_bank import read_style_bank

logger = get_logger(__name__)


def default_cache_dir() -> Path:
    """The per-user cache folder for decoded images."""
    return Path(user_cache_dir("bloodcell")) / "decoded"


def resolve_taxonomy(name: str, manifest: Manifest) -> Taxonomy:
    """``pbc8``/``pbc11``, or for ``labels`` the sorted distinct labels of the whole manifest (all splits)."""
    if name.strip().lower() == "labels":
        return labels_taxonomy(row.label for row in manifest.rows)
    return get_taxonomy(name)


def _cache_dir(config: TrainConfig) -> Path | None:
    if not config.cache:
        return None
    return Path(config.cache_dir) if config.cache_dir else default_cache_dir()


def load_split(config: TrainConfig, manifest: Manifest, root: Path, split: str, transform, data_config: DataConfig,
               limit: int | None, taxonomy: Taxonomy | str | None = None) -> SplitData:
    """A ManifestDataset of ``split`` (train or val only), framed as ``data_config`` says; ``limit`` takes
    its stratified subset."""
    if split not in TRAINING_SPLITS:
        raise AssertionError(f"training code must never load the {split!r} split")
    cache_dir = _cache_dir(config)
    taxonomy = taxonomy if taxonomy is not None else resolve_taxonomy(config.taxonomy, manifest)
    framed = data_config.framing != "none"  # a framed cache is keyed by the framing's version too
    dataset = ManifestDataset(manifest, split, taxonomy=taxonomy, root=root, transform=transform, cache_dir=cache_dir,
                              cache_size=staging_size(data_config.input_size) if cache_dir is not None else None,
                              limit=limit, prepare=data_config.prepare,
                              prepare_name=f"{data_config.framing}-v{FRAMING_VERSION}" if framed else "none",
                              resize=data_config.resize)
    if not len(dataset):
        raise DataError(f"the manifest has no readable {split!r} images for taxonomy {config.taxonomy}")
    return SplitData(dataset, list(dataset.targets), list(dataset.class_names))


def load_extra_train(config: TrainConfig, path: str | Path, transform, data_config: DataConfig,
                     taxonomy: Taxonomy | None = None) -> tuple[Manifest, SplitData]:
    """(manifest, train split) of an extra training manifest.

    A ``folder`` manifest sits at the root of its folder (its paths are relative to it), as
    ``bloodcell data crops`` writes it; other datasets are found as usual.
    """
    manifest = read_manifest(path)
    root = manifest_images_root(path, manifest.dataset, config.data_root)
    return manifest, load_split(config, manifest, root, "train", transform, data_config, None, taxonomy)


def split_arrays(config: TrainConfig, manifest: Manifest, root: Path, split: str, input_size: int,
                 limit: int | None, taxonomy: Taxonomy) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, input_size, input_size, 3) images and int labels of the train or val split (for ``sk/...``)."""
    if split not in TRAINING_SPLITS:
        raise AssertionError(f"training code must never load the {split!r} split")
    dataset = ManifestDataset(manifest, split, taxonomy=taxonomy, root=root, transform=None,
                              cache_dir=_cache_dir(config), cache_size=input_size, limit=limit)
    images = np.stack([dataset[i][0].permute(1, 2, 0).numpy() for i in
                       track(range(len(dataset)), f"Loading {split} images", total=len(dataset), unit="images")])
    return images, np.asarray(dataset.targets, dtype=np.int64)


def init_weights(model: torch.nn.Module, config: TrainConfig, class_names: list[str], load: bool = True) -> str:
    """Check ``config.init_from`` (a checkpoint path or bundled model name) against the run and (with
    ``load``) start ``model`` from its weights (over other classes: the backbone only).

    Returns the checkpoint's sha256 (recorded in the checkpoints of the run).
    """
    path = resolve(config.init_from)
    if path.suffix != ".safetensors":
        raise ConfigError(f"{path}: init_from needs a .safetensors checkpoint")
    checkpoint = load_checkpoint(path)
    if checkpoint.meta["model_name"] != config.model:
        raise ConfigError(f"{path} is a {checkpoint.meta['model_name']}; init_from needs a {config.model} checkpoint")
    if checkpoint.data_config.input_size != model.data_config.input_size:
        raise ConfigError(f"{path} was trained at {checkpoint.data_config.input_size}px; set input_size to match")
    if load:
        load_init_weights(model, checkpoint.model.state_dict(), checkpoint.class_names == class_names, str(path))
    return file_sha256(path)


@dataclass
class _Job:
    """What the job settled before building anything: the resolved config, data and run folder."""

    config: TrainConfig
    manifest: Manifest
    taxonomy: Taxonomy
    run_dir: Path
    state: dict[str, Any] | None

    @property
    def class_names(self) -> list[str]:
        return list(self.taxonomy.class_names)


def _check_required(config: TrainConfig) -> None:
    if not config.manifest:
        raise ConfigError("no manifest given; pass --manifest FILE (see 'bloodcell data split')")
    manifest_path(config.manifest)  # a path or a frozen manifest's name, refused here before any work
    if not config.out:
        raise ConfigError("no output folder given; pass --output DIR")


def _check_resume(state: dict, job: _Job) -> None:
    config = job.config
    if state["class_names"] != job.class_names:
        raise DataError(f"{job.run_dir} was trained on classes {state['class_names']} but taxonomy {config.taxonomy} "
                        f"gives {job.class_names}; resume with the same taxonomy")
    if state["config"]["model"] != config.model:
        raise ConfigError(f"{job.run_dir} trains {state['config']['model']!r}, not {config.model!r}; "
                          "resume with the same model")
    if state["manifest_sha256"] != job.manifest.sha256:
        raise DataError(f"{config.manifest} is not the manifest {job.run_dir} was trained on (its sha256 differs)")


def _settle(config: TrainConfig, resume: bool, overwrite: bool) -> _Job:
    """Check the options and the run folder (changing nothing yet), read the manifest and the state to resume."""
    _check_required(config)
    run_dir = Path(config.out)
    check_run_dir(run_dir, RUN_FILES, resume=resume, overwrite=overwrite)
    manifest = read_manifest(config.manifest)
    if config.dataset and config.dataset != manifest.dataset:
        raise ConfigError(f"{config.manifest} is a manifest of dataset {manifest.dataset!r}, not {config.dataset!r}")
    job = _Job(replace(config, dataset=manifest.dataset), manifest, resolve_taxonomy(config.taxonomy, manifest),
               run_dir, None)
    if len(job.class_names) < 2:
        raise DataError(f"{config.manifest} has a single class under taxonomy {config.taxonomy} "
                        f"({', '.join(job.class_names) or 'none'}); a classifier needs at least two")
    if resume:
        job.state = load_state(run_dir / STATE_FILE, STATE_FORMAT)
        _check_resume(job.state, job)
    return job


def _start_run_dir(job: _Job, ctx: DistContext) -> None:
    """A new run: rank 0 removes the run's old files; then (new or resumed) it saves config.json."""
    dist_utils.barrier(ctx)
    if ctx.is_main:
        if job.state is None:
            clear_run_files(job.run_dir, RUN_FILES)
        save_config(job.config, job.run_dir / "config.json")
    dist_utils.barrier(ctx)


def _check_classes(job: _Job, train_targets: list[int], val_targets: list[int], ctx: DistContext) -> None:
    """Refuse a single training class; warn, naming them, about classes a split lacks."""
    for message in class_coverage(job.class_names, train_targets, val_targets):
        if ctx.is_main:
            logger.warning("%s", message)


def _report_skipped(name: str, data: SplitData, ctx: DistContext) -> None:
    skipped = getattr(data.dataset, "skipped", [])
    if skipped and ctx.is_main:
        path, reason = skipped[0]
        logger.warning("skipped %d unreadable %s image(s), e.g. %s: %s", len(skipped), name, path, reason)


ExtraSplits = list[tuple[str, Manifest, SplitData]]


def _load_data(job: _Job, data_config, ctx: DistContext) -> tuple[SplitData, SplitData, ExtraSplits]:
    """The train split (augmented tensors), the val split (uint8 model-input pixels) and the extra train splits."""
    config = job.config
    root = dataset_root(job.manifest.dataset, config.data_root)
    if not ctx.is_main:
        dist_utils.barrier(ctx)  # let rank 0 build the decoded-image cache alone first
    bank = read_style_bank(config.style_bank) if config.style_bank else None
    augmented = create_transform(data_config, True, config.augment, bank)
    train = load_split(config, job.manifest, root, "train", augmented, data_config, config.limit_train, job.taxonomy)
    extras = [(path, *load_extra_train(config, path, augmented, data_config, job.taxonomy)) for path in config.extra_train]
    val = load_split(config, job.manifest, root, "val", create_pixel_transform(data_config), data_config, config.limit_val,
                     job.taxonomy)
    if ctx.is_main:
        dist_utils.barrier(ctx)
    for name, data in (("train", train), ("val", val), *((f"{p} train", d) for p, _, d in extras)):
        _report_skipped(name, data, ctx)
    return train, val, extras


def _provenance(job: _Job, extras: list, init_sha256: str | None) -> dict[str, Any]:
    provenance: dict[str, Any] = {"manifest_sha256": job.manifest.sha256, "dataset": job.manifest.dataset,
                                  "taxonomy": job.config.taxonomy}
    if extras:
        # in the order of train_config.extra_train (whose paths a checkpoint keeps as file names only)
        provenance["extra_train_sha256"] = [manifest.sha256 for _, manifest, _ in extras]
    if init_sha256 is not None:
        provenance["init_from_sha256"] = init_sha256
    return provenance


def _train_classical(job: _Job, ctx: DistContext) -> RunResult:
    config = job.config
    if ctx.enabled:
        raise ConfigError(f"{config.model} is a scikit-learn model; run it without torchrun")
    if config.resize != "crop":
        raise ConfigError(f"{config.model} is a scikit-learn model: its images are centre-cropped; drop resize")
    size = config.input_size or get_model_entry(config.model).data_config.input_size
    root = dataset_root(job.manifest.dataset, config.data_root)
    train_x, train_y = split_arrays(config, job.manifest, root, "train", size, config.limit_train, job.taxonomy)
    val_x, val_y = split_arrays(config, job.manifest, root, "val", size, config.limit_val, job.taxonomy)
    _check_classes(job, train_y.tolist(), val_y.tolist(), ctx)
    _start_run_dir(job, ctx)
    meta = {"train_config": config.to_dict(), "manifest_sha256": job.manifest.sha256, "taxonomy": config.taxonomy,
            "dataset": job.manifest.dataset}
    return fit_classical(config.model, train_x, train_y, val_x, val_y, job.class_names, job.run_dir,
                         n_jobs=config.threads or 1, meta=meta)


def _run(config: TrainConfig, resume: bool, overwrite: bool, ctx: DistContext,
         on_epoch: Callable[[dict[str, Any]], None] | None) -> RunResult:
    entry = get_model_entry(config.model)
    if entry.kind == "detector":
        raise ConfigError(f"{config.model} is a smear detector; train it with 'bloodcell detector train'")
    job = _settle(config, resume, overwrite)
    if entry.kind == "sklearn":
        return _train_classical(job, ctx)
    config = job.config
    seed_everything(config.seed)
    pretrained = (config.pretrained_weights or True) if config.pretrained else False
    model = create_model(config.model, num_classes=len(job.class_names), pretrained=pretrained,
                         class_names=job.class_names, input_size=config.input_size)
    model.data_config = replace(model.data_config, framing=config.framing, resize=config.resize)
    init_sha256 = init_weights(model, config, job.class_names, load=job.state is None) if config.init_from else None
    train, val, extras = _load_data(job, model.data_config, ctx)
    _check_classes(job, train.targets, val.targets, ctx)
    if extras:
        if ctx.is_main:
            logger.info("extra training images: %s (each seen %dx per epoch)",
                        ", ".join(f"{len(d.targets)} from {p}" for p, _, d in extras), config.extra_repeat)
        train = combine_splits(train, [d for _, _, d in extras], config.extra_repeat)
    if ctx.is_main:
        logger.info("%s at %dpx: %d training and %d validation images, %d classes, %d thread(s) x %d process(es)",
                    config.model, model.data_config.input_size, len(train.targets), len(val.targets),
                    len(job.class_names), torch.get_num_threads(), ctx.world_size)
    _start_run_dir(job, ctx)
    return fit(model, config, train, val, job.run_dir, ctx, state=job.state,
               provenance=_provenance(job, extras, init_sha256), on_epoch=on_epoch)


def run_training(config: TrainConfig, *, resume: bool = False, overwrite: bool = False, ctx: DistContext | None = None,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Train ``config.model`` on the manifest's train split, validating every epoch; see the module doc.

    Without ``ctx`` the process joins the torchrun group when launched by torchrun (and leaves it
    at the end). Torch runs on ``config.threads`` threads (by default the cores shared by the processes
    of this machine) for the run, and on as many as before after it. ``on_epoch(row)`` is called after each epoch's files are written.
    """
    own_ctx = ctx is None
    ctx = dist_utils.init_distributed() if own_ctx else ctx
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(dist_utils.threads_per_process(config.threads))
    try:
        result = _run(config, resume, overwrite, ctx, on_epoch)
    except BaseException:
        if own_ctx and ctx.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        raise
    finally:
        torch.set_num_threads(previous_threads)
    if own_ctx:
        dist_utils.cleanup(ctx)
    return result
