"""Redraw docs/screenshot-gallery.png (1280x800) and docs/screenshot-phone.png (390x844): the gallery review.

Counts one sample of held-out CBC smear photos (the CBC test split, frozen manifest cbc-seed0) into a fresh store
with the bundled detector and classifier (``bloodcell count --store``), has a technician reclassify one cell,
then serves the store in-process and drives the page in Debian's headless Chromium (/usr/bin/chromium) with
Playwright: the technician signs in, opens the sample and selects a cell. Needs ``$BLOODCELL_DATA``::

    .venv/bin/python docs/make_gallery_screenshot.py
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from make_samples_screenshot import TECHNICIAN, count_into_store, held_out_sample, signed_in_page
from make_screenshot import CHROMIUM_ARGS, serve
from playwright.sync_api import sync_playwright

from bloodcell.service.app import create_app
from bloodcell.service.settings import ServiceSettings
from bloodcell.store.database import open_store
from bloodcell.store.samples import decide, find

DOCS = Path(__file__).parent
SAMPLE, PHOTOS = "S-2026-1207", 8
#: Every crop on the screen is loaded (they load lazily, as they scroll into view).
SHOWN_CROPS_LOADED = """() => Array.from(document.querySelectorAll('img.crop'))
  .filter((image) => image.getBoundingClientRect().top < innerHeight)
  .every((image) => image.complete && image.naturalWidth > 0)"""


def lab_store(root: Path) -> Path:
    """A store with one counted sample of ``PHOTOS`` held-out photos; one white cell already reclassified."""
    held_out_sample(root, SAMPLE, PHOTOS)
    path = count_into_store(root)
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
