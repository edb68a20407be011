"""Regenerate docs/screenshot-report.png: the first page of a sample's printed report (PDF rendered to PNG).

Counts twelve held-out CBC smear photos (the CBC test split, frozen manifest cbc-seed0) as one sample into a fresh
store with the bundled detector and classifier (``bloodcell count --store``); a technician confirms the cells
referred for review and finishes the review, a supervisor signs it off; then ``bloodcell samples report ... --wbc
7.2 --output report.pdf`` prints it (WeasyPrint) and Debian's pdftoppm renders its first page at 110 dpi. Needs
``$BLOODCELL_DATA``::

    .venv/bin/python docs/make_report_screenshot.py [--keep DIR]   # --keep: also copy the PDF and all pages there
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from make_samples_screenshot import SUPERVISOR, TECHNICIAN, count_into_store, held_out_sample

from bloodcell.store.database import open_store
from bloodcell.store.samples import decide, find, finish_review, sign

OUTPUT = Path(__file__).with_name("screenshot-report.png")
SAMPLE, PHOTOS = "S-2026-1207", 12


def signed_sample(root: Path) -> Path:
    """A store holding one counted, reviewed and signed sample."""
    held_out_sample(root, SAMPLE, PHOTOS)
    path = count_into_store(root)
    store = open_store(path)
    with store.session() as session:
        for cell in [c for c in find(session, SAMPLE).cells if c.referral_reason]:
            decide(session, SAMPLE, cell.id, "confirm", TECHNICIAN)
            session.flush()
        finish_review(session, SAMPLE, TECHNICIAN)
        session.flush()
        sign(session, SAMPLE, SUPERVISOR)
    store.close()
    return path


def main() -> None:
    keep = Path(sys.argv[sys.argv.index("--keep") + 1]) if "--keep" in sys.argv else None
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        store = signed_sample(root)
        pdf = root / "report.pdf"
        subprocess.run([sys.executable, "-m", "bloodcell", "samples", "report", SAMPLE, "--store", str(store),
                        "--wbc", "7.2", "--output", str(pdf)], check=True)
        subprocess.run(["pdftoppm", "-png", "-r", "110", "-f", "1", "-l", "1", "-singlefile", str(pdf),
                        str(OUTPUT.with_suffix(""))], check=True)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(pdf, keep / "report.pdf")
            subprocess.run(["pdftoppm", "-png", "-r", "80", str(pdf), str(keep / "page")], check=True)
    print(OUTPUT)


if __name__ == "__main__":
    main()
