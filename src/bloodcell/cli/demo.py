"""``bloodcell demo``: the main job, end to end on PBC (wiring only)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from bloodcell.cli.options import DataRoot
from bloodcell.outputs import check_output_folder

console = Console()


def demo(
    output: Path = typer.Option(Path("outputs/demo"), "--output", "-o", help="Folder for every output of the demo."),
    data_root: DataRoot = None,
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate on a stratified subset of the test split."),
) -> None:
    """Check, split and summarise PBC; evaluate the bundled model on the test split; classify a few cells."""
    from bloodcell.workflows.demo import run_demo

    check_output_folder(output, "demo outputs")
    result = run_demo(output, data_root=data_root, limit=limit)
    for finding in result.findings:
        console.print(f"- {finding}", highlight=False)
    console.print(f"\nOutputs in [bold]{result.out.resolve()}[/]:")
    for name, path in result.outputs.items():
        console.print(f"  {name}: {Path(path).resolve()}", highlight=False)
