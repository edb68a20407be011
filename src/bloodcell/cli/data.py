"""``bloodcell data``: list, fetch, check, split, describe datasets and export smear crops (wiring only)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from bloodcell.cli.choices import CropSet, Taxonomy
from bloodcell.cli.options import DataRoot
from bloodcell.outputs import check_output_file, check_output_folder

app = typer.Typer(help="Datasets: registry, download, integrity checks, frozen splits, statistics.", no_args_is_help=True,
                  rich_markup_mode=None)
console = Console()

def _warn(messages: list[str]) -> None:
    for message in messages:
        console.print(f"[yellow]Warning:[/] {message}", highlight=False)


@app.command("list")
def list_command(data_root: DataRoot = None) -> None:
    """Show the registry: classes, expected images, whether found locally, license."""
    from bloodcell.data.stats import registry_status

    table = Table(title="bloodcell datasets")
    for column in ("name", "classes", "expected images", "local copy", "license"):
        table.add_column(column)
    for row in registry_status(data_root):
        local = "(pass --data-root)" if row["name"] == "folder" else (str(row["local"]) if row["local"] else "[red]not found[/]")
        table.add_row(row["name"], str(row["classes"] or "-"), str(row["expected_images"] or "-"), local, row["license"])
    console.print(table)


@app.command("fetch")
def fetch_command(
    name: str = typer.Argument(..., help="Dataset name (see `bloodcell data list`)."),
    size: list[str] = typer.Option([], "--size", help="BloodMNIST sizes to fetch (28, 64, 128, 224); default 28."),
    data_root: DataRoot = None,
) -> None:
    """Download, verify (checksum) and extract a dataset; resumes partial downloads."""
    from bloodcell.data.fetch import fetch_dataset

    root = fetch_dataset(name, data_root, variants=size or None)
    console.print(f"{name} is ready in {root}")


@app.command("check")
def check_command(
    name: str = typer.Argument(..., help="Dataset name."),
    report: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the full JSON report to this .json file (checked before the scan)."),
    near_distance: int = typer.Option(4, "--near-distance", help="pHash Hamming distance for near-duplicates (-1: exact only)."),
    blur_z: float = typer.Option(-3.5, "--blur-z", help="Robust z-score of log focus (per class) below which images are blurry."),
    data_root: DataRoot = None,
) -> None:
    """Report unreadable, truncated, unusual, duplicate and blurry images (changes nothing)."""
    from bloodcell.data.check import check_dataset
    from bloodcell.writing import write_json

    if report is not None:  # before the scan, which may take minutes: a bad --output fails at once
        check_output_file(report, (".json",), "check report")
    result = check_dataset(name, data_root, near_distance=near_distance, blur_z=blur_z)
    _warn(result["warnings"])
    table = Table(title=f"{result['dataset']}: {result['files']} files in {result['root']} ({result['seconds']} s)")
    table.add_column("finding")
    table.add_column("count", justify="right")
    table.add_column("examples")
    for key in ("unreadable", "truncated", "unusual_mode", "unusual_size", "duplicate_groups", "blurry"):
        items = result[key]
        examples = ", ".join((" = ".join(i["paths"]) if "paths" in i else i["path"]) for i in items[:3])
        table.add_row(key.replace("_", " "), str(len(items)), examples)
    console.print(table)
    if report is not None:
        write_json(report, result, indent=1)
        console.print(f"report written to {report}")


@app.command("split")
def split_command(
    name: str = typer.Argument(..., help="Dataset name (class-folder datasets: pbc, pbc-originals-sample, folder)."),
    output: Path = typer.Option(..., "--output", "-o", help="Manifest CSV to write."),
    ratios: str = typer.Option("0.7,0.15,0.15", "--ratios", help="train,val,test fractions."),
    seed: int = typer.Option(0, "--seed", help="Seed of the stratified split (the same seed and data give the same split)."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="Keep rows sharing this column's value in one split."),
    metadata: Optional[Path] = typer.Option(None, "--metadata", help="CSV with a 'path' column and group columns."),
    taxonomy: Optional[Taxonomy] = typer.Option(None, "--taxonomy", help="Class taxonomy (stratification labels)."),
    near_distance: int = typer.Option(4, "--near-distance", help="pHash distance merged as near-duplicates (-1: exact only)."),
    data_root: DataRoot = None,
) -> None:
    """Write a stratified, duplicate-aware, reproducible train/val/test manifest."""
    from bloodcell.data.split import make_split

    result = make_split(
        name, output, ratios, seed, group_by=group_by, taxonomy=taxonomy.value if taxonomy else None, data_root=data_root,
        metadata=metadata, near_distance=near_distance,
    )
    _warn(result.warnings)
    table = Table(title=f"{output} (sha256 {result.manifest.sha256[:16]}..., taxonomy {result.taxonomy})")
    for column in ("class", "train", "val", "test", "total"):
        table.add_column(column, justify="right" if column != "class" else "left")
    for cls, per in result.counts.items():
        table.add_row(cls, *(str(per[s]) for s in ("train", "val", "test")), str(sum(per.values())))
    console.print(table)
    console.print(
        f"{len(result.manifest.rows)} images; {len(result.excluded)} unreadable excluded; "
        f"{result.merged_groups} duplicate groups kept within one split ({result.cross_class_groups} span classes)",
        highlight=False,
    )
    for _path, reason in result.excluded:
        console.print(f"  excluded: {reason}", highlight=False)


@app.command("stats")
def stats_command(
    name: str = typer.Argument(..., help="Dataset name."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for counts.json and stats.png."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Count per split of this manifest."),
    data_root: DataRoot = None,
) -> None:
    """Class counts (per split with --manifest) and a PNG with class balance and sample images."""
    from bloodcell.data.stats import class_counts, write_stats_png
    from bloodcell.writing import write_json

    check_output_folder(output, "dataset statistics")
    root, counts, samples = class_counts(name, data_root, manifest)
    columns = list(next(iter(counts.values())).keys())
    table = Table(title=f"{name} class counts")
    table.add_column("class")
    for column in columns:
        table.add_column(column, justify="right")
    for cls, per in counts.items():
        table.add_row(cls, *(str(per[c]) for c in columns))
    console.print(table)
    write_json(output / "counts.json", counts, indent=1)
    png = write_stats_png(root, counts, samples, output / "stats.png", f"{name}: class balance")
    console.print(f"wrote {output / 'counts.json'} and {png}")


@app.command("crops")
def crops(
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the crops (outside the repository)."),
    dataset: CropSet = typer.Option(CropSet.bccd, help="bccd: typed white cells as <type>/<id>_<k>.png with a train/test manifest.csv; txl: untyped white cells as <source>/<field>_<k>.png."),
    sources: str = typer.Option("raabin", help="For txl: comma-separated sources (bccd, pbc, raabin, kaggle-bcd)."),
    detector_manifest: Path = typer.Option(Path("txl-detector"), help="For txl: the manifest whose groups name the BCCD photo each field shows."),
    data_root: DataRoot = None,
    seed: int = typer.Option(0, help="Seed of the train/held-out split of the smears (as in the BCCD typing benchmark)."),
) -> None:
    """White-cell crops of another lab: BCCD's typed cells (for fine-tuning) or TXL-PBC's untyped ones (for the guard)."""
    from bloodcell.data.manifest import read_manifest
    from bloodcell.workflows.cells import export_bccd_crops, export_txl_crops

    if dataset == "txl":
        counts = export_txl_crops(output, [s.strip() for s in sources.split(",") if s.strip()], detector_manifest,
                                  data_root)
        console.print(f"white-cell crops: {', '.join(f'{k} {v}' for k, v in counts.items())} -> {output}")
        return
    manifest = read_manifest(export_bccd_crops(output, data_root, seed))
    counts = {split: sum(r.split == split for r in manifest.rows) for split in ("train", "test")}
    console.print(f"{len(manifest.rows)} white-cell crops: train {counts['train']}, held-out test {counts['test']} "
                  f"-> {manifest.path} (sha256 {manifest.sha256[:12]}...)")


@app.command("style-bank")
def style_bank(
    sources: str = typer.Option(..., "--sources", help="Comma-separated TXL-PBC sources whose white cells give the colours (bccd, pbc, raabin, kaggle-bcd)."),
    output: Path = typer.Option(..., "--output", "-o", help="Style bank JSON to write (for a training config's style_bank)."),
    detector_manifest: Path = typer.Option(Path("txl-detector"), "--detector-manifest", help="The TXL manifest whose groups name the BCCD photo each field shows."),
    data_root: DataRoot = None,
) -> None:
    """Colour statistics of other labs' white cells, for the multilab augmentation's style transfer."""
    import shlex
    import sys

    from bloodcell.workflows.style_bank import build_style_bank

    check_output_file(output, (".json",), "style bank")
    command = shlex.join(["bloodcell", *sys.argv[1:]])
    bank = build_style_bank([s.strip() for s in sources.split(",") if s.strip()], output, detector_manifest,
                            data_root, command=command)
    console.print(f"{bank['cells']} white cells of {', '.join(bank['sources'])} -> {output}")
