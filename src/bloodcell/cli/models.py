"""``bloodcell models``: list the model registry and describe one entry.

``list`` reads the registry's plain-data catalog (no torch); ``info`` and ``list --num-classes N``
(N other than 8) build models on the meta device.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bloodcell.errors import CheckpointError
from bloodcell.models.catalog import CATALOG, CATALOG_CLASSES
from bloodcell.weights import BUNDLED

if TYPE_CHECKING:
    from bloodcell.models.registry import ModelEntry

app = typer.Typer(help="List and describe the registered models.", no_args_is_help=True, rich_markup_mode=None)
console = Console()


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}M"


def _params(name: str, num_classes: int = CATALOG_CLASSES) -> str:
    """Parameter count of ``name``, built on the meta device (no memory, no weights, fast)."""
    from bloodcell.models import get_model_entry

    model = _build_on_meta(get_model_entry(name), num_classes)
    return _millions(sum(p.numel() for p in model.parameters()))


def _build_on_meta(entry: ModelEntry, num_classes: int):
    import torch

    with torch.device("meta"):
        return entry.builder(num_classes=num_classes, pretrained=False, input_size=entry.data_config.input_size)


def _paper_lines(entry: ModelEntry) -> list[str]:
    """The paper block of ``models info``: citation, claims, printed vs built parameters, choices."""
    from bloodcell.models.papers import keras_param_counts

    paper = entry.paper
    size = entry.data_config.input_size
    lines = ["[bold]paper[/]", f"citation: {escape(paper.citation)}"]
    if paper.claims:
        lines.append("claimed by the paper (its figures, not ours):")
        lines += [f"  - {escape(what)}: {escape(value)}" for what, value in paper.claims.items()]
    else:
        lines.append("claimed by the paper: none recorded here")
    classes = paper.printed_num_classes or 8
    model = _build_on_meta(entry, classes)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if paper.printed_params is not None:
        printed = f"printed parameters ({classes} classes): {paper.printed_params:,}"
        if paper.printed_trainable_params is not None:
            printed += f" ({paper.printed_trainable_params:,} trainable)"
        lines.append(printed)
        keras_total, keras_trainable = keras_param_counts(model)
        lines.append(
            f"this build ({classes} classes, {size}x{size}), counted as Keras does: {keras_total:,} "
            f"({keras_trainable:,} trainable); PyTorch parameters {params:,} "
            f"(batch-norm running statistics are buffers in PyTorch, parameters in Keras)"
        )
    else:
        lines.append("printed parameters: none printed in the paper as we read it")
        lines.append(f"this build ({classes} classes, {size}x{size}): {params:,} parameters ({trainable:,} trainable)")
    if paper.input_note:
        lines.append(f"input: {escape(paper.input_note)}")
    if paper.choices:
        lines.append("choices where the paper is silent or contradicts itself:")
        lines += [f"  - {escape(choice)}" for choice in paper.choices]
    if paper.recipe:
        lines.append(f"training recipe: {escape(paper.recipe)} (bloodcell train --config {escape(entry.name)}; "
                     "notes in the README.md beside it)")
    return lines


@app.command("list")
def list_command(
    all_timm: str = typer.Option(
        None, "--all-timm", metavar="PATTERN", help="Also list timm model names matching PATTERN (e.g. 'efficientnet*')."
    ),
    num_classes: int = typer.Option(CATALOG_CLASSES, min=2, help="Classes used to count head parameters."),
) -> None:
    """Registered models with parameter counts, input sizes and normalisation."""
    table = Table(title="bloodcell models")
    table.add_column("name", no_wrap=True)
    for column in ("kind", "params", "input", "normalisation", "description"):
        table.add_column(column, overflow="fold")
    for entry in CATALOG:
        torch_model = entry.kind == "torch"
        if not torch_model:
            params = "-"
        elif num_classes == CATALOG_CLASSES:
            params = _millions(entry.params)
        else:
            params = _params(entry.name, num_classes)
        table.add_row(
            entry.name,
            entry.kind,
            params,
            f"{entry.input_size}" if torch_model else "-",
            entry.normalisation if torch_model else "-",
            entry.description,
        )
    console.print(table)
    bundled = Table(title="bundled models (use their names with --model)")
    for column in ("name", "kind", "installed", "description"):
        bundled.add_column(column, overflow="fold")
    for model in BUNDLED.values():
        bundled.add_row(model.name, model.kind, "yes" if model.path.is_file() else "no", model.description)
    console.print(bundled)
    if all_timm:
        import timm

        names = timm.list_models(all_timm)
        console.print(f"{len(names)} timm models match {all_timm!r} (usable by name):")
        console.print(", ".join(names) or "none")


def _bundled_info(name: str) -> None:
    """A bundled model's card (or, without one, what its checkpoint says of itself)."""
    from rich.markdown import Markdown

    from bloodcell.checkpoint import read_checkpoint_meta

    model = BUNDLED[name]
    console.print(f"[bold]{name}[/] (bundled {model.kind}: {model.description})")
    if model.card.is_file():
        console.print(Markdown(model.card.read_text(encoding="utf-8")))
        return
    meta = read_checkpoint_meta(name)
    console.print(f"architecture {meta['model_name']}, classes {', '.join(meta['class_names'])}, "
                  f"input {meta['data_config']['input_size']} px; no model card is installed", highlight=False)


def _file_info(path: Path) -> None:
    """What a classifier file says of itself: architecture, classes, input, temperature, what it learned from, its
    adaptation to a lab (with the trust line `bloodcell count` gives it) and its guard's labs; every value read from
    the file is checked or escaped before it is shown."""
    from bloodcell.checkpoint import read_checkpoint_meta
    from bloodcell.provenance import file_sha256
    from bloodcell.smear.differential import trust_note
    from bloodcell.smear.typing import recorded_typing

    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a model file")
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    if path.suffix == ".onnx":
        from bloodcell.inference.onnx import OnnxBackend, read_document

        meta, kind = read_document(OnnxBackend(path), path), "exported ONNX model"
    else:
        meta, kind = read_checkpoint_meta(path), "checkpoint"
    config = meta["data_config"]
    console.print(f"[bold]{escape(path.name)}[/] ({kind}; sha256 {file_sha256(path)})", highlight=False)
    console.print(f"architecture {escape(meta['model_name'])}; {len(meta['class_names'])} classes: "
                  f"{escape(', '.join(meta['class_names']))}; input {config['input_size']} px, framing "
                  f"{escape(str(config.get('framing', 'none')))}; temperature {float(meta['temperature']):.3g}",
                  highlight=False)
    quantization, source = meta.get("quantization"), meta.get("source_checkpoint_sha256")
    if isinstance(quantization, str):
        console.print(f"quantized to int8 ({escape(quantization[:40])})", highlight=False)
    if isinstance(source, str):
        console.print(f"exported from the checkpoint with sha256 {escape(source[:64])}", highlight=False)
    taxonomy = meta.get("taxonomy") or (meta.get("train_config") or {}).get("taxonomy")
    if isinstance(taxonomy, str):
        console.print(f"taxonomy {escape(taxonomy[:80])}", highlight=False)
    for line in _adaptation_lines(meta):
        console.print(line, highlight=False)
    guard = meta.get("ood")
    sources = guard.get("sources") if isinstance(guard, dict) else None
    if isinstance(sources, list) and all(isinstance(source, str) for source in sources):
        console.print(f"out-of-distribution guard calibrated on: {escape(', '.join(source[:80] for source in sources))}",
                      highlight=False)
    elif guard is None:
        console.print("no out-of-distribution guard: nothing is referred as not a cell or as from an unfamiliar lab")
    console.print(escape(trust_note(recorded_typing(path.name, meta))), highlight=False)


def _adaptation_lines(meta: dict) -> list[str]:
    """What a checkpoint records of its adaptation to a lab, from labelled cells or unlabelled ones."""
    lines = []
    adaptation = meta.get("adaptation")
    if isinstance(adaptation, dict):
        cells = adaptation.get("cells")
        counted = ", ".join(f"{name} {n}" for name, n in cells.items() if isinstance(n, int)) \
            if isinstance(cells, dict) else "unknown"
        lines.append(f"adapted to {escape(str(adaptation.get('lab', 'a lab'))[:120])} from "
                     f"{escape(str(adaptation.get('base', 'another model'))[:120])}, on reviewed cells: {escape(counted)}")
        after, before = adaptation.get("cv_accuracy"), adaptation.get("cv_accuracy_before")
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in (after, before)):
            lines.append(f"cross-validated accuracy on those cells: {after:.1%} adapted, {before:.1%} before adapting")
        recipe = adaptation.get("recipe") if isinstance(adaptation.get("recipe"), dict) else {}
        kept = recipe.get("kept") if isinstance(recipe.get("kept"), dict) else {}
        kept = {name: floor for name, floor in kept.items() if floor is None or (isinstance(floor, (int, float))
                and not isinstance(floor, bool) and math.isfinite(floor))}
        gated = recipe.get("gated")
        if isinstance(gated, list) and all(isinstance(name, str) for name in gated):
            gated = [name for name in gated if name not in kept]
            if gated:
                lines.append(f"a cell the original model calls {escape(' or '.join(gated))} keeps that type")
        for name, floor in kept.items():
            above = "" if floor is None else " more confidently than any of the lab's given cells it mistook for it"
            lines.append(f"kept on the lab's word: a cell the original model calls {escape(name[:40])}{above} keeps "
                         "that type")
    unlabelled = meta.get("unlabelled_adaptation")
    if isinstance(unlabelled, dict):
        adapted = unlabelled.get("weight") is not None
        lines.append(f"{'adapted' if adapted else 'checked, and kept unadapted,'} without labels on "
                     f"{escape(str(unlabelled.get('cells', '?'))[:20])} cells of "
                     f"{escape(str(unlabelled.get('lab', 'a lab'))[:120])}; its accuracy there is not measured")
    return lines


@app.command("info")
def info_command(name: str = typer.Argument(..., help="A bundled model (pbc8, pbc8-int8, pbc11, smear-detector), a registered or a timm model name, or a model file (.safetensors or .onnx).")) -> None:
    """A bundled model's card, what a model file says of itself, or the data config, parameter count and
    documentation of an architecture."""
    import inspect
    from functools import partial

    from bloodcell.models import get_model_entry

    if name in BUNDLED:
        _bundled_info(name)
        return
    if name.endswith((".safetensors", ".onnx")):
        _file_info(Path(name))
        return
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
    if entry.paper is not None:
        console.print()
        for line in _paper_lines(entry):
            console.print(line, highlight=False)
