"""The CLI's shared options (Typer ``Annotated`` style) and its one option vocabulary.

Light on purpose: command modules declare their options from this module, the enums of
:mod:`bloodcell.cli.choices` and plain constants, so that ``--help`` and usage errors import no
torch. Vocabulary: every output is ``--output/-o``; a command's main input is positional;
booleans are flags; a command that scores cells takes ``--engine``, ``--threads`` and ``--tta``.
A training command (``train``, ``detector train``) names its options as its configuration's fields, all
defaulting to "not given", and hands the ones given to the configuration (:func:`training_overrides`), whose
class alone holds the defaults; ``--config``, ``--resume`` and ``--overwrite`` are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bloodcell.cli.choices import Engine

#: Old option spellings still accepted (hidden; a note on stderr): old -> current.
DEPRECATED_OPTIONS = {"--out": "--output", "--report": "--output"}
#: Old options that named what is now a command's positional input: old option -> argument name.
DEPRECATED_INPUTS = {"--cells": "cells", "--counts": "counts"}
#: Commands that score cells: each takes --engine, --threads and --tta.
SCORING_COMMANDS = ("predict", "count", "evaluate")


def output_option(help: str) -> typer.models.OptionInfo:
    """The ``--output/-o`` option with this command's ``help``."""
    return typer.Option("--output", "-o", help=help)


ModelName = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Bundled model name (pbc8, pbc8-int8, pbc11) or a .safetensors/.onnx file; default: pbc8.")]
EngineOption = Annotated[Engine, typer.Option("--engine", help="Inference engine.")]
Threads = Annotated[int, typer.Option(
    "--threads", min=1, help="CPU threads: torch threads, or onnx batches run at once (one thread each).")]
Tta = Annotated[bool, typer.Option("--tta", help="Average over the 8 flips/rotations by 90 degrees of each cell.")]
ReferBelow = Annotated[float, typer.Option(
    "--refer-below", min=0.0, max=1.0, help="Refer cells whose confidence is below this probability (0 refers none).")]
DataRoot = Annotated[Optional[Path], typer.Option(
    "--data-root", help="Folder holding the datasets (default: $BLOODCELL_DATA, then the user cache).")]


def data_root_option(help: str) -> typer.models.OptionInfo:
    """The ``--data-root`` option with a command's own ``help`` (:data:`DataRoot` says the usual)."""
    return typer.Option("--data-root", help=help)


ConfigFile = Annotated[Optional[Path], typer.Option(
    "--config", help="JSON or TOML file of training options (the flags given override it).")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Continue the run in --output from its last.pt and saved config.json (flags may change some options).")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Start again in an existing --output (removes its run files).")]


def replace_option(help: str = "Replace an existing --output.") -> typer.models.OptionInfo:
    """The ``--overwrite`` flag of a command whose output (an export, a file a person fills in) is not replaced
    without it."""
    return typer.Option("--overwrite", help=help)


ReplaceOutput = Annotated[bool, replace_option()]

#: A training command's parameters that are not training options.
RUN_PARAMETERS = ("config", "resume", "overwrite")


def training_overrides(parameters: dict[str, Any], not_options: Iterable[str] = RUN_PARAMETERS) -> dict[str, Any]:
    """The training options the user gave among a command's ``parameters`` (named as the configuration's fields;
    ``None`` or an empty repeated option is one not given): paths as text, repeated options as lists."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value] or None
        return str(value) if isinstance(value, Path) else value

    chosen = {name: plain(value) for name, value in parameters.items() if name not in set(not_options)}
    return {name: value for name, value in chosen.items() if value is not None}
