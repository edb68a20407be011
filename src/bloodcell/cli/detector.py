"""``bloodcell detector split|train``: freeze a smear split, train the CenterNet smear detector on it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Learned smear cell detector (CenterNet on EfficientNet-Lite0).", no_args_is_help=True)


@app.command("train")
def train(
    manifest: Path = typer.Option(..., help="image_id,split CSV (e.g. manifests/cbc-seed0.csv); train on 'train', select on 'val'."),
    out: Path = typer.Option(..., help="Run folder: config.json, metrics.csv, last.pt, best.safetensors."),
    data_root: Optional[Path] = typer.Option(None, help="Folder holding the datasets (default $BLOODCELL_DATA)."),
    dataset: Optional[str] = typer.Option(None, help="VOC smear dataset name (default cbc)."),
    subset: Optional[str] = typer.Option(None, help="Subset folder of the dataset (default Training)."),
    epochs: Optional[int] = typer.Option(None, help="Number of epochs (default 60)."),
    input_size: Optional[int] = typer.Option(None, help="Longer side of the network input, multiple of 32 (default 384: 640x480 -> 384x288)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default 8)."),
    lr: Optional[float] = typer.Option(None, help="Peak AdamW learning rate (default 2e-3)."),
    pretrained: Optional[bool] = typer.Option(None, "--pretrained/--no-pretrained", help="Start from ImageNet weights (default yes)."),
    criterion: Optional[str] = typer.Option(None, help="Threshold choice on val: count (lowest per-image count error) or f1."),
    threads: Optional[int] = typer.Option(None, help="Torch threads (default 1)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (default 0)."),
    limit_train: Optional[int] = typer.Option(None, help="Use only the first N train smears (smoke runs)."),
    limit_val: Optional[int] = typer.Option(None, help="Use only the first N val smears (smoke runs)."),
    time_budget_s: Optional[float] = typer.Option(None, "--time-budget", help="Stop cleanly after the epoch that passes this many seconds."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again in an existing --out (removes its run files)."),
) -> None:
    """Train the smear detector on a manifest's train split; thresholds and best epoch chosen on val."""
    from bloodcell.smear.detector_train import DetectorTrainConfig, resume_config, train_detector

    options = {"dataset": dataset, "subset": subset, "epochs": epochs, "input_size": input_size,
               "batch_size": batch_size, "lr": lr, "pretrained": pretrained, "criterion": criterion,
               "threads": threads, "seed": seed, "limit_train": limit_train, "limit_val": limit_val,
               "time_budget_s": time_budget_s, "data_root": str(data_root) if data_root else None}
    if resume:
        config = resume_config(out, {**options, "manifest": str(manifest), "out": str(out)})
    else:
        config = DetectorTrainConfig(manifest=str(manifest), out=str(out),
                                     **{k: v for k, v in options.items() if v is not None})
    result = train_detector(config, resume=resume, overwrite=overwrite, log=typer.echo)
    best = result["best"]
    typer.echo(f"best epoch {result['best_epoch']}: val relative count error {best.get('val_rel_mae', float('nan')):.3f}, "
               f"thresholds RBC {best.get('RBC_threshold')}, WBC {best.get('WBC_threshold')}, "
               f"Platelets {best.get('Platelets_threshold')} -> {result['checkpoint']}")


@app.command("split")
def split(
    out: Path = typer.Option(..., help="image_id,split CSV to write (e.g. manifests/cbc-seed0.csv)."),
    data_root: Optional[Path] = typer.Option(None, help="Folder holding the datasets (default $BLOODCELL_DATA)."),
    dataset: str = typer.Option("cbc", help="VOC smear dataset name."),
    subset: str = typer.Option("Training", help="Subset folder of the dataset whose annotated smears are split."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Freeze a seeded 70/15/15 train/val/test split of a smear dataset's annotated image ids."""
    from bloodcell.data.locate import dataset_root
    from bloodcell.data.voc import voc_folders
    from bloodcell.errors import DataError
    from bloodcell.smear.splits import make_split, write_split

    annotations, _ = voc_folders(dataset_root(dataset, data_root), subset)
    ids = [p.stem for p in sorted(annotations.glob("*.xml"))]
    if not ids:
        raise DataError(f"{annotations}: no VOC annotation files")
    result = make_split(ids, seed=seed)
    path = write_split(result, out)
    counts = {name: sum(s == name for s in result.values()) for name in ("train", "val", "test")}
    typer.echo(f"{len(ids)} smears -> train {counts['train']}, val {counts['val']}, test {counts['test']}: {path}")
