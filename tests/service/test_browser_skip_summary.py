"""Without Chromium, `make test` says which browser tests it skipped and how to get the browser."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from service_helpers import CHROMIUM_MISSING

ROOT_CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def test_skipped_browser_tests_are_listed_with_the_way_to_get_chromium(tmp_path):
    shutil.copy(ROOT_CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_page.py").write_text(
        "import pytest\n"
        f"pytestmark = pytest.mark.skipif(True, reason={CHROMIUM_MISSING!r})\n"
        "def test_review_page():\n    pass\n")
    (tmp_path / "test_other.py").write_text(
        "import pytest\n"
        "def test_ok():\n    pass\n"
        "@pytest.mark.skip(reason='not a browser test')\n"
        "def test_skipped():\n    pass\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout[done.stdout.index("browser tests skipped"):]
    assert "1 browser test(s) skipped: Chromium is not at /usr/bin/chromium" in summary
    assert "sudo apt-get install chromium" in summary and "test_page.py::test_review_page" in summary
    assert "test_skipped" not in summary
