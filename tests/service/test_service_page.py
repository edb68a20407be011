"""The web page in a real headless Chromium (Playwright) against a live uvicorn server.

Needs Debian's /usr/bin/chromium (CI installs it: ``apt-get install -y chromium``); the test
is skipped with that reason when it is missing. Playwright never downloads a browser here.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from PIL import Image
from service_helpers import SERVICE_CLASSES, LiveServer, cell_png

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"),
]


def _fake_counter(images, names):
    return {
        "images": [
            {"path": name, "counts": {"RBC": 120, "WBC": 2, "Platelets": 9},
             "wbc_types": {"neutrophil": {"count": 2, "percent": 100.0, "flag": "high"}},
             "boxes": [], "annotated": Image.new("RGB", (image.width // 4, image.height // 4), (200, 30, 30))}
            for image, name in zip(images, names)
        ],
        "sample": {},
    }


@pytest.fixture()
def page_server(tiny_classifier):
    from bloodcell.service.app import create_app

    app = create_app(classifier=tiny_classifier, count_smears=_fake_counter, access_log=io.StringIO())
    with LiveServer(app) as server:
        yield server


@pytest.fixture()
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(accept_downloads=True)
            page.set_default_timeout(20_000)
            yield page
        finally:
            browser.close()


def test_page_classifies_an_uploaded_cell_and_reports_bad_files(page_server, browser_page, tmp_path):
    page = browser_page
    requests_outside = []
    page.on("request", lambda r: requests_outside.append(r.url) if not r.url.startswith((page_server.url, "data:", "blob:")) else None)
    cell = tmp_path / "my_cell.png"
    cell.write_bytes(cell_png(seed=3))
    fake = tmp_path / "fake.jpg"
    fake.write_text("this is not a JPEG")

    page.goto(page_server.url + "/")
    page.set_input_files("#file-input", [str(cell)])
    card = page.locator("article.card[data-filename='my_cell.png']")
    label = card.locator(".label")
    label.wait_for()
    assert label.inner_text() in SERVICE_CLASSES
    assert card.locator(".topk li").count() == 3
    assert card.locator("img[alt='Grad-CAM']").count() == 1
    width = card.locator(".bar span").evaluate("e => parseFloat(e.style.width)")
    assert 0 < width <= 100
    assert "Refer to a person" in card.locator(".flag").inner_text()  # untrained model: low confidence

    page.set_input_files("#file-input", [str(fake)])
    error = page.locator("#errors .error")
    error.wait_for()
    assert "fake.jpg" in error.inner_text() and "not a supported image" in error.inner_text()

    with page.expect_download() as download_info:
        page.click("#download-csv")
    rows = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text())))
    assert [r["filename"] for r in rows] == ["my_cell.png", "fake.jpg"]
    assert rows[0]["label"] == label.inner_text() and rows[1]["error"]
    assert requests_outside == []


def test_page_counts_a_smear_photo_in_auto_mode(page_server, browser_page, tmp_path):
    page = browser_page
    smear = tmp_path / "smear.png"
    Image.new("RGB", (640, 480), (230, 200, 210)).save(smear)  # >= 500 px wide: auto picks "smear"
    page.goto(page_server.url + "/")
    page.set_input_files("#file-input", [str(smear)])
    box = page.locator("article.smear[data-filename='smear.png']")
    box.locator("table").first.wait_for()
    text = box.inner_text()
    assert "RBC" in text and "120" in text and "neutrophil" in text
    assert box.locator("tr.flagged").count() == 1
    assert box.locator("img").evaluate("e => e.naturalWidth") == 160
