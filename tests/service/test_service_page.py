"""The web page in a real headless Chromium (Playwright) against a live uvicorn server.

Needs Debian's /usr/bin/chromium (CI installs it: ``apt-get install -y chromium``); the tests are
skipped with that reason when it is missing. Playwright never downloads a browser here.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from PIL import Image
from service_helpers import BROWSER_TESTS, SERVICE_CLASSES, LiveServer, cell_png

from bloodcell.inference.predictor import DEFAULT_REFER_BELOW

pytestmark = BROWSER_TESTS


def _fake_counter(image, classifier=None, **options):
    return {"counts": {"RBC": 120, "WBC": 2, "Platelets": 9}, "wbc_types": {"neutrophil": 2},
            "boxes": [], "annotated": Image.new("RGB", (image.width // 4, image.height // 4), (200, 30, 30))}


@pytest.fixture()
def page_server(tiny_classifier):
    from bloodcell.service.app import create_app

    app = create_app(classifier=tiny_classifier, count_image=_fake_counter, access_log=io.StringIO())
    with LiveServer(app) as server:
        yield server


def test_page_classifies_an_uploaded_cell_and_reports_bad_files(page_server, browser_page, tmp_path):
    page = browser_page
    requests_outside = []
    page.on("request", lambda r: requests_outside.append(r.url) if not r.url.startswith((page_server.url, "data:", "blob:")) else None)
    cell = tmp_path / "my_cell.png"
    cell.write_bytes(cell_png(seed=3))
    fake = tmp_path / "fake.jpg"
    fake.write_text("this is not a JPEG")

    page.goto(page_server.url + "/")
    assert not page.is_checked("#explain")  # heat maps are off unless asked for
    page.check("#explain")
    page.set_input_files("#file-input", [str(cell)])
    card = page.locator("article.card[data-filename='my_cell.png']")
    label = card.locator(".label")
    label.wait_for()
    assert label.inner_text() in SERVICE_CLASSES
    assert card.locator(".topk li").count() == 3
    heat = card.locator("figure:has(img[alt='heat map']) figcaption")
    assert heat.inner_text() == "LayerCAM: where the model's score is most sensitive; not the reason for the class"
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


def test_page_counts_a_smear_photo_in_auto_mode_and_says_the_servers_threshold(page_server, browser_page, tmp_path):
    page = browser_page
    smear = tmp_path / "smear.png"
    Image.new("RGB", (640, 480), (230, 200, 210)).save(smear)  # the fake detector finds 2 white cells: a smear field
    page.goto(page_server.url + "/")
    threshold = page.locator("#threshold")
    threshold.wait_for()
    page.wait_for_function("document.getElementById('threshold').textContent.length > 0")
    assert f"less than {round(100 * DEFAULT_REFER_BELOW)}% confidence" in threshold.inner_text()
    assert page.get_attribute("#camera-input", "capture") == "environment"
    page.set_input_files("#file-input", [str(smear)])
    sample = page.locator("article.sample[data-sample-id='sample']")
    sample.locator(".report table").first.wait_for()
    photo = sample.locator("article.photo[data-filename='smear.png']")
    assert "red cells" in photo.inner_text() and "120" in photo.inner_text()
    assert photo.locator("img").evaluate("e => e.naturalWidth") == 160
    neutrophil = sample.locator(".report tr", has_text="neutrophil")
    # 2 of 2 neutrophils: 95% interval 15.8-100%, which reaches 50-70%: no flag, and the page says how many are needed
    assert "100.0%" in neutrophil.inner_text() and "above the reference interval" not in neutrophil.inner_text()
    assert neutrophil.get_attribute("class") != "flagged"
    assert "Not flagged: neutrophil is above its reference interval, but with 2 white cells" in sample.inner_text()
    text = sample.inner_text()
    assert "How much to trust this differential" in text and "wbc_" not in text and "{" not in text
    assert "Counted by the detector smear-detector." in text  # which detector counted, on the sample
    assert "detector: smear-detector" in page.locator("#model-name").inner_text()
