"""Progress of long loops: a Rich bar on a terminal, else a log line every few seconds.

``track(items, "classifying", unit="images", size=len)`` counts what matters to people
(images, not batches: ``size`` tells how many units each item stands for). Set
``BLOODCELL_NO_PROGRESS=1`` to switch the bar off; the periodic lines then go to the
``bloodcell.progress`` logger (shown by the CLI, silent in library use unless configured).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from bloodcell.log import get_logger

T = TypeVar("T")
#: Seconds between progress lines when there is no bar.
LINE_INTERVAL_S = 5.0
logger = get_logger(__name__)


def progress_enabled() -> bool:
    """True unless ``BLOODCELL_NO_PROGRESS`` is set to a non-empty value other than ``0``."""
    return os.environ.get("BLOODCELL_NO_PROGRESS", "") in ("", "0")


def _bar_wanted() -> bool:
    return progress_enabled() and sys.stderr.isatty()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class _Lines:
    """Periodic ``description: done/total unit (pct), rate, ETA`` log lines."""

    def __init__(self, description: str, total: int | None, unit: str, interval: float = LINE_INTERVAL_S):
        self.description, self.total, self.unit, self.interval = description, total, unit, interval
        self.done = 0
        self.start = self.last = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.emit(now)

    def emit(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        text = f"{self.description}: {self.done:,}"
        if self.total:
            text += f"/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%)"
            if rate > 0 and self.done < self.total:
                text += f", {rate:.1f} {self.unit}/s, about {_duration((self.total - self.done) / rate)} left"
        else:
            text += f" {self.unit}, {rate:.1f}/s"
        logger.info(text)


def track(iterable: Iterable[T], description: str = "", total: int | None = None, *, unit: str = "items",
          size: Callable[[T], int] | None = None) -> Iterator[T]:
    """Iterate with progress; ``total`` counts units (default: ``len(iterable)`` when ``size`` is None)."""
    if total is None and size is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    weigh = size or (lambda _item: 1)
    if not _bar_wanted():
        lines = _Lines(description, total, unit)
        for item in iterable:
            yield item
            lines.advance(weigh(item))
        if time.monotonic() - lines.start >= lines.interval:
            lines.emit()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn(unit), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in iterable:
            yield item
            bar.advance(task, weigh(item))
