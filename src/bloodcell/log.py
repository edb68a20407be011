"""bloodcell's loggers: library modules log to ``bloodcell.<module>``; only the CLI attaches a handler."""

from __future__ import annotations

import logging
import sys

ROOT = "bloodcell"


def get_logger(name: str) -> logging.Logger:
    """The logger of module ``name`` (``__name__``), under the ``bloodcell`` logger."""
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


def configure(verbose: bool = False) -> None:
    """Send bloodcell's messages to stderr (Rich formatting on a terminal); called once by the CLI."""
    logger = logging.getLogger(ROOT)
    if any(getattr(h, "_bloodcell", False) for h in logger.handlers):
        return
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_time=False, show_path=False, markup=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler._bloodcell = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
