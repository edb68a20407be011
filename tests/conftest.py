"""Shared fixtures: synthetic cell images and the optional real-data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("BLOODCELL_NO_PROGRESS", "1")


def _shared_data_root() -> Path | None:
    root = os.environ.get("BLOODCELL_DATA")
    candidates = [Path(root)] if root else []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "datasets")
    for candidate in candidates:
        if (candidate / "pbc").is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The shared real datasets; tests using it are skipped with a reason when absent."""
    root = _shared_data_root()
    if root is None:
        pytest.skip("real datasets not found (set BLOODCELL_DATA or place ../shared/datasets)")
    return root


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say which browser tests were skipped for want of Chromium, and how to get it (pytest -q hides skip reasons)."""
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if "needs Debian's Chromium" in str(getattr(report, "longrepr", ""))]
    if not skipped:
        return
    terminalreporter.section("browser tests skipped")
    terminalreporter.write_line(
        f"{len(skipped)} browser test(s) skipped: Chromium is not at /usr/bin/chromium. Install Debian's chromium "
        "(`sudo apt-get install chromium`, as CI does) to run them; Playwright needs no browser download.")
    for report in skipped:
        terminalreporter.write_line(f"  {report.nodeid}")
