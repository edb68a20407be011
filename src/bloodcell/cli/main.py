"""The ``bloodcell`` command: a thin Typer shell over a lazy command table.

Every command lives in its own module and is imported only when it runs (or shows its own
``--help``): ``bloodcell --help`` and ``bloodcell --version`` import neither torch nor any
command module, and a command module imports its heavy libraries only inside the function that
does the work, so every ``--help`` and usage error is answered at once. A new command is one
line in :data:`COMMANDS`; its target is a Typer sub-app (a command group) or a function (one command).
Help is plain text (no Rich renderer to import; flags shown as flags). Old option spellings
(:data:`~bloodcell.cli.options.DEPRECATED_OPTIONS`) are rewritten here, with a note on stderr.
"""

from __future__ import annotations

import errno
import importlib
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import typer
from typer import _click
from typer.core import TyperArgument, TyperCommand, TyperGroup
from typer.main import get_command_from_info, get_group
from typer.models import CommandInfo

from bloodcell._version import __version__
from bloodcell.cli.options import DEPRECATED_INPUTS, DEPRECATED_OPTIONS
from bloodcell.errors import BloodcellError

#: name -> ("module:attribute", one-line help shown by ``bloodcell --help``), in help order.
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("bloodcell.cli.data:app", "Datasets: registry, download, integrity checks, frozen splits, statistics."),
    "models": ("bloodcell.cli.models:app", "List and describe the registered models."),
    "predict": ("bloodcell.cli.predict:predict", "Classify single-cell images; bad files become rows with an error, the rest go on."),
    "export": ("bloodcell.cli.export:export", "Export a checkpoint to ONNX with class names, data config, temperature and OOD guard in its metadata."),
    "calibrate-ood": ("bloodcell.cli.calibrate:calibrate_ood", "Fit the guard that refers non-cell inputs (smears, photos, blanks) to a human; store it in the checkpoint."),
    "train": ("bloodcell.cli.train:train", "Train a model on a manifest's train split, validating on its validation split every epoch."),
    "tune": ("bloodcell.cli.tune:tune", "Search hyperparameters on the validation split; writes best_config.json for 'bloodcell train --config'."),
    "interpolate": ("bloodcell.cli.interpolate:interpolate", "Write (1 - ALPHA) * BASE + ALPHA * TUNED with a temperature fitted on the validation split."),
    "serve": ("bloodcell.cli.serve:serve", "Serve the HTTP API (/v1/classify, /v1/count, /docs, /metrics) and the web page at /."),
    "evaluate": ("bloodcell.cli.evaluate:evaluate", "Score a model and write metrics, a Markdown summary and a self-contained HTML report."),
    "benchmark": ("bloodcell.cli.benchmark:benchmark", "Train and evaluate several models with one protocol; write a comparison table and chart."),
    "reproduce": ("bloodcell.cli.reproduce:reproduce", "Run a paper's experiment under its own protocol (leaks included) and an honest one; report both figures."),
    "demo": ("bloodcell.cli.demo:demo", "Check, split and summarise PBC; evaluate the bundled model on the test split; classify a few cells."),
    "count": ("bloodcell.cli.count:count", "Count red cells, white cells and platelets on smear photos and report each sample's differential."),
    "adapt": ("bloodcell.cli.adapt:adapt", "Adapt a model to your lab from its reviewed cells, or its unlabelled ones, and say what that changed."),
    "review": ("bloodcell.cli.review:app", "Review a counted sample's referred cells; recompute its differential with the corrections."),
    "detector": ("bloodcell.cli.detector:app", "Learned smear cell detector (CenterNet on EfficientNet-Lite0)."),
    "samples": ("bloodcell.cli.samples:app", "Samples kept in a store: list, show, audit trail, sign off, reopen, export (CSV, FHIR), printable report (PDF, HTML)."),
    "users": ("bloodcell.cli.users:app", "Users of a sample store and their roles (technician, supervisor, admin)."),
}


def load_command(name: str) -> _click.Command:
    """Import the target of ``COMMANDS[name]`` and turn it into a click command named ``name``."""
    target, _ = COMMANDS[name]
    module_name, _, attribute = target.partition(":")
    obj = getattr(importlib.import_module(module_name), attribute)
    if isinstance(obj, typer.Typer):
        command: _click.Command = get_group(obj)
    else:
        command = get_command_from_info(
            CommandInfo(name=name, callback=obj),
            pretty_exceptions_short=True,
            rich_markup_mode=None,
        )
    command.name = name
    return command


def undeprecate(ctx: _click.Context, command: _click.Command, args: list[str]) -> list[str]:
    """``args`` of ``command`` with the old spellings of its options replaced (a note on stderr for each):
    ``--out``/``--report`` become ``--output``; ``--cells DIR``/``--counts DIR`` become the positional DIR."""
    if isinstance(command, TyperGroup) and args and not args[0].startswith("-"):
        command = command.get_command(ctx, args[0]) or command
    options = {name for param in command.params for name in param.opts}
    arguments = {param.name for param in command.params if isinstance(param, TyperArgument)}
    rewritten: list[str] = []
    for index, arg in enumerate(args):
        if arg == "--":
            return rewritten + args[index:]
        old, equals, value = arg.partition("=")
        if old in options:  # the command's own option (reproduce's --report is its HTML page)
            rewritten.append(arg)
        elif DEPRECATED_OPTIONS.get(old) in options:
            new = DEPRECATED_OPTIONS[old]
            typer.echo(f"note: {old} is deprecated; use {new} (or -o)", err=True)
            rewritten.append(new + equals + value)
        elif DEPRECATED_INPUTS.get(old) in arguments:
            typer.echo(f"note: {old} is deprecated; give {DEPRECATED_INPUTS[old].upper()} without it", err=True)
            if equals:
                rewritten.append(value)
        else:
            rewritten.append(arg)
    return rewritten


class _Placeholder(TyperCommand):
    """Stands for a command in the top-level help without importing it."""

    def __init__(self, name: str, help: str) -> None:
        super().__init__(name=name, help=help, short_help=help, add_help_option=False)


class LazyCommands(MutableMapping[str, _click.Command]):
    """The group's command mapping: names from :data:`COMMANDS`, commands imported on first use."""

    def __init__(self, eager: dict[str, _click.Command]) -> None:
        self._loaded = dict(eager)

    def __getitem__(self, name: str) -> _click.Command:
        if name not in self._loaded:
            if name not in COMMANDS:
                raise KeyError(name)
            self._loaded[name] = load_command(name)
        return self._loaded[name]

    def __setitem__(self, name: str, command: _click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self._loaded if name not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS) + sum(name not in COMMANDS for name in self._loaded)

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or name in self._loaded

    def placeholder(self, name: str) -> _click.Command:
        """The loaded command, or a stand-in carrying the table's help (no import)."""
        if name in self._loaded:
            return self._loaded[name]
        return _Placeholder(name, COMMANDS[name][1])


class LazyGroup(TyperGroup):
    """A Typer group whose commands come from :data:`COMMANDS` and are imported on demand.

    ``list_commands``/``get_command`` (and typo suggestions) go through :class:`LazyCommands`;
    the group's own help lists the commands with the table's one-line help, importing none.
    The commands themselves keep Typer's Rich help.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = LazyCommands(dict(self.commands))
        self._listing = False

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return list(self.commands)  # names only: TyperGroup's own version would import every command

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        if cmd_name not in self.commands:
            return None
        if self._listing:
            return self.commands.placeholder(cmd_name)
        return self.commands[cmd_name]

    def resolve_command(
        self, ctx: _click.Context, args: list[str]
    ) -> tuple[str | None, _click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            rest = undeprecate(ctx, command, rest)
        return name, command, rest

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="bloodcell",
    cls=LazyGroup,
    rich_markup_mode=None,  # plain top-level help: Rich's help renderer alone costs ~0.2 s to import
    help="Blood-smear image analysis: classify cells, count smears, evaluate honestly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bloodcell {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """bloodcell command-line interface."""


def main() -> None:
    """Entry point: run the app; user errors become one red sentence and exit code 1."""
    from bloodcell.log import configure

    configure()
    try:
        app()
    except BloodcellError as exc:
        _fail(str(exc))
    except OSError as exc:  # a full disk where no output of ours was being written (a checkpoint, a cache)
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        _fail(f"{exc.filename or 'an output'}: cannot write it (the disk is full); outputs already finished are kept")


def _fail(sentence: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]Error:[/] {sentence}", highlight=False, soft_wrap=True)
    sys.exit(1)
