"""The CLI's shared options (Typer ``Annotated`` style) and its one option vocabulary.

Light on purpose: command modules declare their options from this module, the enums of
:mod:`bloodcell.cli.choices` and plain constants, so that ``--help`` and usage errors import no
torch. Vocabulary: every output is ``--output/-o``; a command's main input is positional;
booleans are flags; a command that scores cells takes ``--engine``, ``--threads`` and ``--tta``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

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
    "--model", "-m", help="Bundled model name (pbc8, pbc11) or a .safetensors/.onnx file; default: pbc8.")]
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
