"""Regenerate docs/screenshot-samples.png: the lab's sample list, as a supervisor sees it after signing in.

Counts five samples of held-out CBC smear photos (the CBC test split, frozen manifest cbc-seed0) into a fresh
store with the bundled detector and classifier (``bloodcell count --store``), has a technician decide a cell
in three of them, finish two and a supervisor sign one, then serves the store in-process and drives the page
in Debian's headless Chromium (/usr/bin/chromium) with Playwright at 1280x800 (and 390x844 with ``--phone``,
saved beside it as screenshot-samples-phone.png, for looking at, not committed). Needs ``$BLOODCELL_DATA``::

    .venv/bin/python docs/make_samples_screenshot.py [--phone]
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from make_screenshot import CHROMIUM_ARGS, serve
from playwright.sync_api import sync_playwright

from bloodcell.data.smear_manifest import read_smear_manifest
from bloodcell.data.smears import smear_images
from bloodcell.service.app import create_app
from bloodcell.service.settings import ServiceSettings
from bloodcell.store.database import open_store
from bloodcell.store.samples import decide, find, finish_review, sign
from bloodcell.store.users import Person, add_user

OUTPUT = Path(__file__).with_name("screenshot-samples.png")
PHOTOS_PER_SAMPLE = (2, 1, 2, 1, 2)
TECHNICIAN, SUPERVISOR = Person("tia.n", "technician"), Person("dr.marsh", "supervisor")
PASSWORD = "a-screenshot-password"  # a throwaway store in a temporary folder


def held_out_sample(root: Path, sample: str, photos: int) -> Path:
    """The folder ``root/photos/sample`` holding the first ``photos`` of CBC's held-out test photos."""
    test = set(read_smear_manifest("cbc-seed0").ids("test"))
    paths = [p.path for p in smear_images("cbc", os.environ["BLOODCELL_DATA"], "Training") if p.image_id in test]
    folder = root / "photos" / sample
    folder.mkdir(parents=True)
    for path in paths[:photos]:
        shutil.copy(path, folder / Path(path).name)
    return folder


def count_into_store(root: Path) -> Path:
    """A new store ``root/lab.sqlite`` with an admin, the technician and the supervisor, and the sample folders under
    ``root/photos`` counted into it by the technician's account (``bloodcell count --store``)."""
    path = root / "lab.sqlite"
    store = open_store(path)
    with store.session() as session:
        admin = add_user(session, "ada", "admin", PASSWORD, None)
        for person in (TECHNICIAN, SUPERVISOR):
            add_user(session, person.name, person.role, PASSWORD, admin)
    store.close()
    counting = {**os.environ, "LOGNAME": TECHNICIAN.name, "USER": TECHNICIAN.name}  # the counting station's account
    subprocess.run([sys.executable, "-m", "bloodcell", "count", str(root / "photos"), "--output",
                    str(root / "out"), "--store", str(path)], check=True, env=counting, capture_output=True)
    return path


def lab_store(root: Path) -> Path:
    """A store with five counted samples in every state of review."""
    test = set(read_smear_manifest("cbc-seed0").ids("test"))
    photos = [p.path for p in smear_images("cbc", os.environ["BLOODCELL_DATA"], "Training") if p.image_id in test]
    for number, n in enumerate(PHOTOS_PER_SAMPLE, start=1201):
        folder = root / "photos" / f"S-2026-{number}"
        folder.mkdir(parents=True)
        for path in (photos.pop(0) for _ in range(n)):
            shutil.copy(path, folder / Path(path).name)
    path = count_into_store(root)
    store = open_store(path)
    with store.session() as session:
        for sample_id in ("S-2026-1201", "S-2026-1202", "S-2026-1203"):
            cell = next(c for c in find(session, sample_id).cells if c.label == "WBC")
            decide(session, sample_id, cell.id, "confirm", TECHNICIAN)
            session.flush()
        for sample_id in ("S-2026-1201", "S-2026-1202"):
            finish_review(session, sample_id, TECHNICIAN)
            session.flush()
        sign(session, "S-2026-1201", SUPERVISOR)
    store.close()
    return path


def signed_in_page(browser, url: str, name: str, size: tuple[int, int]):
    """A page of ``size`` (width, height) on which ``name`` signed in and the sample list is shown."""
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    page.goto(url + "/")
    page.fill("#user-name", name)
    page.fill("#password", PASSWORD)
    page.click("#sign-in button[type=submit]")
    page.locator("table.sample-list tbody tr").first.wait_for()
    return page


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(ServiceSettings(store=str(lab_store(Path(folder)))), access_log=io.StringIO())
        server, url = serve(app)
        sizes = [(OUTPUT, 1280, 800)] + ([(OUTPUT.with_name("screenshot-samples-phone.png"), 390, 844)]
                                         if "--phone" in sys.argv else [])
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                for output, width, height in sizes:
                    page = signed_in_page(browser, url, SUPERVISOR.name, (width, height))
                    page.locator("#store").scroll_into_view_if_needed()
                    page.screenshot(path=str(output))
                    print(f"{output}: {width}x{height}")
                browser.close()
        finally:
            server.should_exit = True


if __name__ == "__main__":
    main()
