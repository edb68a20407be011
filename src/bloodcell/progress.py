"""Progress bars for long loops; set ``BLOODCELL_NO_PROGRESS=1`` to switch them off for logs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def progress_enabled() -> bool:
    """True unless ``BLOODCELL_NO_PROGRESS`` is set to a non-empty value other than ``0``."""
    return os.environ.get("BLOODCELL_NO_PROGRESS", "") in ("", "0")


def track(iterable: Iterable[T], description: str = "", total: int | None = None) -> Iterator[T]:
    """Iterate with a Rich progress bar (transient), or plainly when progress is disabled."""
    if not progress_enabled():
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task)
