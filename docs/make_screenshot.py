"""Regenerate docs/screenshot-review.png: the web page after reviewing one sample of two CBC smear photos.

Serves the app in-process with the bundled models, drives the page in Debian's headless Chromium
(/usr/bin/chromium) with Playwright, accepts the model's call for every cell in the review list,
finishes the review and saves a full-page screenshot. Needs the CBC dataset (``$BLOODCELL_DATA``)::

    .venv/bin/python docs/make_screenshot.py
"""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from bloodcell.data.smears import smear_images
from bloodcell.service.app import create_app

#: Held-out photos, one white cell each: CBC test split (frozen manifest cbc-seed0), not in the detector's
#: training or validation fields either (frozen manifest txl-detector).
PHOTOS = ("BloodImage_00218", "BloodImage_00269")
SAMPLE_ID = "S-2026-0117"
OUTPUT = Path(__file__).with_name("screenshot-review.png")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def serve(app) -> tuple[uvicorn.Server, str]:
    """Start uvicorn on a free loopback port in a daemon thread; the server and its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def main() -> None:
    paths = [photo.path for photo in smear_images("cbc", ids=set(PHOTOS))]
    server, url = serve(create_app(access_log=io.StringIO()))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(url + "/")
            page.check("input[name=mode][value=smear]")
            page.fill("#sample-id", SAMPLE_ID)
            for path in paths:
                page.set_input_files("#file-input", [str(path)])
                page.locator(f"article.photo[data-filename='{path.name}']").wait_for()
            sample = page.locator(f"article.sample[data-sample-id='{SAMPLE_ID}']")
            page.wait_for_function(f"document.querySelector('article.sample .summary').textContent"
                                   f".startsWith('{len(paths)} photos')")
            for select in sample.locator("article.review-item select.decision").all():
                select.select_option("accept")
            sample.locator("button.finish-review").click()
            sample.locator(".badge.reviewed").wait_for()
            page.wait_for_function("[...document.images].every((img) => img.complete)")
            page.screenshot(path=str(OUTPUT), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
