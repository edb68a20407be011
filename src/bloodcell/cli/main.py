"""The ``bloodcell`` command: a thin Typer app; every command calls one library function."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from bloodcell import __version__
from bloodcell.errors import BloodcellError

app = typer.Typer(
    name="bloodcell",
    help="Blood-smear image analysis: classify cells, count smears, evaluate honestly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bloodcell {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """bloodcell command-line interface."""


def _register() -> None:
    from bloodcell.cli import data, models

    app.add_typer(data.app, name="data")
    app.add_typer(models.app, name="models")
    from bloodcell.cli import export, predict

    app.command("predict")(predict.predict)
    app.command("export")(export.export)
    from bloodcell.cli import calibrate

    app.command("calibrate-ood")(calibrate.calibrate_ood)
    from bloodcell.cli import train, tune

    app.command("train")(train.train)
    app.command("tune")(tune.tune)
    from bloodcell.cli import interpolate

    app.command("interpolate")(interpolate.interpolate)
    from bloodcell.cli import serve

    app.command("serve")(serve.serve)
    from bloodcell.cli import benchmark, evaluate

    app.command("evaluate")(evaluate.evaluate)
    app.command("benchmark")(benchmark.benchmark)
    from bloodcell.cli import demo

    app.command("demo")(demo.demo)
    from bloodcell.cli import count

    app.command("count")(count.count)
    from bloodcell.cli import detector

    app.add_typer(detector.app, name="detector")


def main() -> None:
    """Entry point: run the app; user errors become one red sentence and exit code 1."""
    _register()
    try:
        app()
    except BloodcellError as exc:
        err_console.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
