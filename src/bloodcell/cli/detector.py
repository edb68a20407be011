"""``bloodcell detector train|split|split-txl|adapt``: freeze a smear split, train the CenterNet smear detector on it,
adapt it to a lab from its reviewed photos."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bloodcell.cli.options import ConfigFile, DataRoot, Overwrite, ReplaceOutput, Resume, training_overrides

app = typer.Typer(help="Learned smear cell detector (CenterNet on EfficientNet-Lite0).", no_args_is_help=True,
                  rich_markup_mode=None)


@app.command("train")
def train(
    manifest: Optional[Path] = typer.Option(None, help="image_id,split CSV or a frozen manifest's name (e.g. cbc-seed0); train on 'train', select on 'val'."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder: config.json, metrics.csv, last.pt, best.safetensors."),
    config: ConfigFile = None,
    resume: Resume = False,
    overwrite: Overwrite = False,
    data_root: DataRoot = None,
    dataset: Optional[str] = typer.Option(None, help="Smear dataset name: cbc, bccd or txl."),
    subset: Optional[str] = typer.Option(None, help="Subset folder of a VOC dataset."),
    epochs: Optional[int] = typer.Option(None, help="Number of epochs."),
    input_size: Optional[int] = typer.Option(None, help="Longer side of the network input, a multiple of 32 (384: 640x480 -> 384x288); with --cell-size-px the side of the training crops."),
    cell_size_px: Optional[int] = typer.Option(None, help="Resize every photo so a red cell is this many pixels across (default: by --input-size)."),
    scale_range: Optional[str] = typer.Option(None, help="Scale jitter of the training views, LOW,HIGH (e.g. 0.85,1.15)."),
    architecture: Optional[str] = typer.Option(None, "--architecture", help="Detector network: centernet-lite0 or fcos-lite0 (torchvision's FCOS, for comparison)."),
    shared_head: Optional[bool] = typer.Option(None, "--shared-head/--no-shared-head", help="centernet-lite0 only (fcos-lite0 has its own head): one 3x3 convolution shared by the three heads (a third of their cost)."),
    exclude_sources: Optional[str] = typer.Option(None, help="Comma-separated photo sources left out of training and validation (e.g. kaggle-bcd)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size."),
    lr: Optional[float] = typer.Option(None, help="Peak AdamW learning rate."),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay."),
    warmup_epochs: Optional[float] = typer.Option(None, help="Linear warmup length in epochs."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", help="Start from ImageNet weights."),
    criterion: Optional[str] = typer.Option(None, help="Threshold choice on val: count (lowest per-image count error) or f1."),
    threads: Optional[int] = typer.Option(None, help="Torch threads."),
    seed: Optional[int] = typer.Option(None, help="Random seed."),
    limit_train: Optional[int] = typer.Option(None, help="Use only the first N train smears (smoke runs)."),
    limit_val: Optional[int] = typer.Option(None, help="Use only the first N val smears (smoke runs)."),
    time_budget_s: Optional[float] = typer.Option(None, "--time-budget", help="Stop cleanly after the epoch that passes this many seconds."),
) -> None:
    """Train the smear detector on a manifest's train split; thresholds and best epoch chosen on val.

    Options not given take DetectorTrainConfig's defaults (or, with --resume, the run's saved config.json)."""
    given = training_overrides(locals())  # first: the options by name, which are DetectorTrainConfig's field names
    import torch

    from bloodcell.workflows.detector import DetectorTrainConfig, train_detector

    resolved = DetectorTrainConfig.resolve(config, given, resume=resume)
    torch.set_num_threads(resolved.threads)
    result = train_detector(resolved, resume=resume, overwrite=overwrite)
    best = result["best"]
    typer.echo(f"best epoch {result['best_epoch']}: val relative count error {best.get('val_rel_mae', float('nan')):.3f}, "
               f"thresholds RBC {best.get('RBC_threshold')}, WBC {best.get('WBC_threshold')}, "
               f"Platelets {best.get('Platelets_threshold')} -> {result['checkpoint']}")


@app.command("split")
def split(
    out: Path = typer.Option(..., "--output", "-o", help="image_id,split CSV to write (e.g. cbc-seed0.csv)."),
    data_root: DataRoot = None,
    dataset: str = typer.Option("cbc", help="VOC smear dataset name."),
    subset: str = typer.Option("Training", help="Subset folder of the dataset whose annotated smears are split."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Freeze a seeded 70/15/15 train/val/test split of a smear dataset's annotated image ids."""
    from bloodcell.workflows.detector import voc_detector_split

    result = voc_detector_split(out, dataset, subset, seed, data_root)
    counts = result["counts"]
    typer.echo(f"{result['smears']} smears -> train {counts['train']}, val {counts['val']}, test {counts['test']}: "
               f"{result['manifest']}")


@app.command("split-txl")
def split_txl(
    out: Path = typer.Option(Path("txl-detector.csv"), "--output", "-o", help="Smear manifest to write."),
    cbc_manifest: Path = typer.Option(Path("cbc-seed0"), help="The CBC split whose test smears' copies are kept out of training."),
    data_root: DataRoot = None,
) -> None:
    """Freeze the detector's TXL-PBC split: its own train/val subsets, copies of held-out photos excluded."""
    from bloodcell.workflows.detector_split import txl_detector_split

    result = txl_detector_split(out, cbc_manifest, data_root)
    typer.echo(", ".join(f"{key} {n}" for key, n in result["counts"].items()))
    typer.echo(f"{result['unmatched_copies']} BCCD-source fields matched no BCCD photo -> {result['manifest']} "
               f"(sha256 {result['sha256'][:16]}...)")


@app.command("adapt")
def adapt(
    photos: Optional[Path] = typer.Argument(None, help="Folder of a lab's reviewed photos, each with VOC <name>.xml or YOLO <name>.txt labels beside it (classes RBC, WBC, Platelets), or a reviewed sample folder (written by 'bloodcell review apply'). Not with --store."),
    output: Path = typer.Option(..., "--output", "-o", help="Adapted detector checkpoint to write (.safetensors)."),
    lab: str = typer.Option(..., "--lab", help="Name of the lab whose photos these are (recorded in the checkpoint); with --store, the lab whose reviewed and signed samples are used."),
    store: Optional[str] = typer.Option(None, "--store", help="Adapt from the reviewed and signed samples of --lab in this sample store (an SQLite file or a postgresql:// URL) instead of PHOTOS; each sample used keeps the adaptation in its audit trail."),
    detector: str = typer.Option("smear-detector", "--detector", help="Detector to start from: the bundled smear-detector or a checkpoint file."),
    folds: int = typer.Option(3, "--folds", min=2, help="Cross-validation folds over the photos for choosing the score thresholds."),
    epochs: int = typer.Option(20, "--epochs", min=1, help="Fine-tuning passes over the photos."),
    lr: float = typer.Option(5e-4, "--lr", help="Peak AdamW learning rate of the fine-tuning."),
    freeze_blocks: int = typer.Option(3, "--freeze-blocks", min=0, max=7, help="Early backbone blocks kept frozen (0-7)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (folds and augmentation)."),
    keep_if_worse: bool = typer.Option(True, "--keep-if-worse/--adapt-all", help="A class whose cross-validated count accuracy adapting does not raise keeps the original detector's network and threshold."),
    threads: int = typer.Option(2, "--threads", min=1, help="Torch threads."),
    overwrite: ReplaceOutput = False,
) -> None:
    """Fine-tune the smear detector on a lab's reviewed photos; score thresholds chosen by cross-validation."""
    from bloodcell.errors import ConfigError

    if (photos is None) == (store is None):
        raise ConfigError("give PHOTOS (a folder of reviewed photos or a reviewed sample) or --store, one of the two")
    import torch

    from bloodcell.train.detector_adapt import AdaptOptions
    from bloodcell.workflows.detector_adapt import adapt_detector, adapt_from_store

    torch.set_num_threads(threads)
    settings = {"detector": detector, "folds": folds, "keep_if_worse": keep_if_worse, "overwrite": overwrite,
                "options": AdaptOptions(epochs=epochs, lr=lr, freeze_blocks=freeze_blocks, seed=seed)}
    if store is None:
        result = adapt_detector(photos, output, lab=lab, **settings)
    else:
        from bloodcell.store.components import system_account
        from bloodcell.store.database import open_store

        result = adapt_from_store(open_store(store, create=False), output, lab=lab, actor=system_account(), **settings)
    for skipped in result["skipped"]:
        typer.echo(f"skipped {skipped['path']}: {skipped['reason']}")
    typer.echo(f"{len(result['photos'])} photos, {result['folds']}-fold cross-validated (adapted / original detector):")
    for label, figures in result["cross_validated"].items():
        if label in result["kept_because"]:
            typer.echo(f"  {label}: kept as the original detector has it ({result['kept_because'][label]})")
            continue
        before = result["original_on_these_photos"][label]
        typer.echo(f"  {label}: count accuracy {_percent(figures['count_accuracy'])} / {_percent(before['count_accuracy'])}, "
                   f"AP@0.5 {_fraction(figures['ap50'])} / {_fraction(before['ap50'])}")
    typer.echo(f"{result['seconds']:.0f} s -> {result['checkpoint']}")


def _percent(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _fraction(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"
