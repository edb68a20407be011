"""Redraw docs/screenshot-gallery.png (1280x800) and docs/screenshot-phone.png (390x844): the gallery review.

Counts one sample of held-out CBC smear photos (the CBC test split, frozen manifest cbc-seed0) into a fresh store
with the bundled detector and classifier (``bloodcell count --store``), has a technician reclassify one cell,
then serves the store in-process and drives the page in Debian's headless Chromium (/usr/bin/chromium) with
Playwright: the technician signs in, opens the sample and selects a cell. Needs ``$BLOODCELL_DATA``::

    .venv/bin/python docs/make_gallery_screenshot.py
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from make_samples_screenshot import PASSWORD, signed_in_page
from make_screenshot import CHROMIUM_ARGS, serve
from playwright.sync_api import sync_playwright

from bloodcell.data.smear_manifest import read_smear_manifest
from bloodcell.data.smears import smear_images
from bloodcell.service.app import create_app
from bloodcell.service.settings import ServiceSettings
from bloodcell.store.database import open_store
from bloodcell.store.samples import decide, find
from bloodcell.store.users import Person, add_user

DOCS = Path(__file__).parent
SAMPLE, PHOTOS = "S-2026-1207", 8
TECHNICIAN = Person("tia.n", "technician")
#: Every crop on the screen is loaded (they load lazily, as they scroll into view).
SHOWN_CROPS_LOADED = """() => Array.from(document.querySelectorAll('img.crop'))
  .filter((image) => image.getBoundingClientRect().top < innerHeight)
  .every((image) => image.complete && image.naturalWidth > 0)"""


def lab_store(root: Path) -> Path:
    """A store with one counted sample of ``PHOTOS`` held-out photos; one white cell already reclassified."""
    test = set(read_smear_manifest("cbc-seed0").ids("test"))
    photos = [p.path for p in smear_images("cbc", os.environ["BLOODCELL_DATA"], "Training") if p.image_id in test]
    folder = root / "photos" / SAMPLE
    folder.mkdir(parents=True)
    for path in photos[:PHOTOS]:
        shutil.copy(path, folder / Path(path).name)
    path = root / "lab.sqlite"
    store = open_store(path)
    with store.session() as session:
        admin = add_user(session, "ada", "admin", PASSWORD, None)
        add_user(session, TECHNICIAN.name, TECHNICIAN.role, PASSWORD, admin)
    store.close()
    counting = {**os.environ, "LOGNAME": TECHNICIAN.name, "USER": TECHNICIAN.name}  # the counting station's account
    subprocess.run([sys.executable, "-m", "bloodcell", "count", str(root / "photos"), "--output",
                    str(root / "out"), "--store", str(path)], check=True, env=counting, capture_output=True)
    store = open_store(path)
    with store.session() as session:
        cell = next(c for c in find(session, SAMPLE).cells if c.label == "WBC" and not c.referral_reason)
        decide(session, SAMPLE, cell.id, "confirm", TECHNICIAN)
    store.close()
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(ServiceSettings(store=str(lab_store(Path(folder)))), access_log=io.StringIO())
        server, url = serve(app)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                for output, width, height in ((DOCS / "screenshot-gallery.png", 1280, 800),
                                              (DOCS / "screenshot-phone.png", 390, 844)):
                    page = signed_in_page(browser, url, TECHNICIAN.name, (width, height))
                    page.locator(f"tr[data-sample-id='{SAMPLE}'] button.open-sample").click()
                    page.locator(".gallery .tile").first.wait_for()
                    page.locator(".gallery .tile").nth(1).locator("img.crop").click()
                    page.wait_for_load_state("networkidle")
                    page.locator(".review-gallery").evaluate("e => e.scrollIntoView({block: 'start'})")
                    page.wait_for_function(SHOWN_CROPS_LOADED)
                    page.screenshot(path=str(output))
                    print(f"{output}: {width}x{height}")
                browser.close()
        finally:
            server.should_exit = True


if __name__ == "__main__":
    main()
