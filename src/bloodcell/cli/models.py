"""``bloodcell models``: list the model registry and describe one entry."""

from __future__ import annotations

import inspect
from functools import partial

import torch
import typer
from rich.console import Console
from rich.table import Table

from bloodcell.models.registry import IMAGENET_MEAN, IMAGENET_STD, DataConfig, get_model_entry, list_models

app = typer.Typer(help="List and describe the registered models.", no_args_is_help=True)
console = Console()


def _normalisation(config: DataConfig) -> str:
    if (config.mean, config.std) == (IMAGENET_MEAN, IMAGENET_STD):
        return "ImageNet"
    if config.mean == (0.0, 0.0, 0.0) and config.std == (1.0, 1.0, 1.0):
        return "1/255"
    return f"mean {config.mean[0]:g} std {config.std[0]:g}"


def _params(name: str, num_classes: int = 8) -> str:
    """Parameter count of ``name``, built on the meta device (no memory, no weights, fast)."""
    entry = get_model_entry(name)
    with torch.device("meta"):
        model = entry.builder(num_classes=num_classes, pretrained=False, input_size=entry.data_config.input_size)
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"


@app.command("list")
def list_command(
    all_timm: str = typer.Option(
        None, "--all-timm", metavar="PATTERN", help="Also list timm model names matching PATTERN (e.g. 'efficientnet*')."
    ),
    num_classes: int = typer.Option(8, help="Classes used to count head parameters."),
) -> None:
    """Registered models with parameter counts, input sizes and normalisation."""
    table = Table(title="bloodcell models")
    table.add_column("name", no_wrap=True)
    for column in ("kind", "params", "input", "normalisation", "description"):
        table.add_column(column, overflow="fold")
    for entry in list_models():
        config = entry.data_config
        params = _params(entry.name, num_classes) if entry.kind == "torch" else "-"
        table.add_row(
            entry.name,
            entry.kind,
            params,
            f"{config.input_size}" if entry.kind == "torch" else "-",
            _normalisation(config) if entry.kind == "torch" else "-",
            entry.description,
        )
    console.print(table)
    if all_timm:
        import timm

        names = timm.list_models(all_timm)
        console.print(f"{len(names)} timm models match {all_timm!r} (usable by name):")
        console.print(", ".join(names) or "none")


@app.command("info")
def info_command(name: str = typer.Argument(..., help="A registered or timm model name.")) -> None:
    """The data config, parameter count and documentation of one model."""
    entry = get_model_entry(name)
    config = entry.data_config
    console.print(f"[bold]{entry.name}[/] ({entry.kind})")
    if entry.kind == "torch":
        console.print(f"parameters (8 classes): {_params(name)}")
        console.print(
            f"input: {config.input_size}x{config.input_size}, {config.interpolation} resize; "
            f"mean {config.mean}, std {config.std}"
        )
    doc = entry.description if isinstance(entry.builder, partial) else inspect.getdoc(entry.builder)
    console.print(doc or entry.description, highlight=False)
