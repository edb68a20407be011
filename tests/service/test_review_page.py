"""The review flow of the web page in Debian's headless Chromium (Playwright) against a live server.

Two photos counted under one sample id make one differential; the reviewer decides the referred cells,
marks a box wrong on the photo, draws a missed cell, finishes the review, and downloads the corrections
(CSV, Label Studio JSON) and the reviewed cells (ZIP of cells/<class>/*.png for `bloodcell adapt`).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
from service_helpers import (
    BROWSER_TESTS,
    SERVICE_CLASSES,
    LiveServer,
    classical_counter,
    smear_png,
)

pytestmark = BROWSER_TESTS


@pytest.fixture()
def review_server(tiny_classifier):
    from bloodcell.service.app import create_app

    app = create_app(classifier=tiny_classifier, count_image=classical_counter, access_log=io.StringIO())
    with LiveServer(app) as server:
        yield server


def _count_photos(page, tmp_path, sample_id):
    page.fill("#sample-id", sample_id)
    for name, photo in (("a.png", smear_png(wbc=2)), ("b.png", smear_png(wbc=1, shade=3))):
        path = tmp_path / name
        path.write_bytes(photo)
        page.set_input_files("#file-input", [str(path)])
        page.locator(f"article.photo[data-filename='{name}']").wait_for()
    sample = page.locator(f"article.sample[data-sample-id='{sample_id}']")
    page.wait_for_function("document.querySelector('article.sample .summary').textContent.startsWith('2 photos')")
    return sample


def _download(page, button):
    with page.expect_download() as info:
        button.click()
    return Path(info.value.path())


def test_a_sample_of_two_photos_is_reviewed_and_its_corrections_saved(review_server, browser_page, tmp_path):
    page = browser_page
    page.goto(review_server.url + "/")
    sample = _count_photos(page, tmp_path, "S-17")
    report = sample.locator(".report")
    assert report.locator(".summary").inner_text() == ("2 photos counted; 3 white cells typed; 3 cells wait for "
                                                       "review.")
    assert "Reference interval" in report.inner_text() and "How much to trust this differential" in report.inner_text()
    assert sample.locator(".badge").inner_text() == "not reviewed"
    assert "wbc_" not in sample.inner_text() and "/tmp" not in sample.inner_text()

    cards = sample.locator("article.review-item")
    assert cards.count() == 3
    first, second, third = (cards.nth(i) for i in range(3))
    assert first.locator(".topk li").count() == 3 and "low confidence" in first.locator(".reason").inner_text()
    assert first.locator("img").evaluate("e => e.naturalWidth") > 50
    first.locator("select.decision").select_option("relabel:lymphocyte")
    second.locator("select.decision").select_option("accept")
    third_id = third.get_attribute("data-item")
    sample.locator(f".overlay .box[data-item='{third_id}']").click()  # box wrong, on the photo
    assert third.locator("select.decision").input_value() == "wrong" and "wrong" in third.get_attribute("class")

    photo_b = sample.locator("article.photo[data-filename='b.png']")
    photo_b.locator("button.mark-missing").click()
    frame = photo_b.locator(".overlay").bounding_box()
    page.mouse.move(frame["x"] + 0.03 * frame["width"], frame["y"] + 0.80 * frame["height"])
    page.mouse.down()
    page.mouse.move(frame["x"] + 0.10 * frame["width"], frame["y"] + 0.92 * frame["height"], steps=4)
    page.mouse.up()
    photo_b.locator("select.missing-label").select_option("eosinophil")

    sample.locator("button.finish-review").click()
    sample.locator(".badge.reviewed").wait_for()
    summary = sample.locator(".review-summary").inner_text()
    assert summary.startswith("Reviewed by a person: 3 boxes decided (1 accepted, 1 given another class, "
                              "1 marked wrong); 1 missed cell added.")
    assert sample.locator(".report .summary").inner_text().startswith("2 photos counted; 3 white cells typed.")

    exports = sample.locator(".exports")
    rows = list(csv.DictReader(io.StringIO(_download(page, exports.get_by_text("Corrections (CSV)")).read_text())))
    assert [r["decision"] for r in rows] == ["relabel", "accept", "wrong", "missing"]
    assert rows[0]["sample_id"] == "S-17" and rows[0]["label"] == "lymphocyte" and rows[3]["image"] == "b.png"
    tasks = json.loads(_download(page, exports.get_by_text("Label Studio tasks (JSON)")).read_text())
    assert [t["data"]["image"] for t in tasks] == ["a.png", "b.png"]
    archive = zipfile.ZipFile(_download(page, exports.get_by_text("Reviewed cells (ZIP)")))
    classes = sorted(name.split("/")[1] for name in archive.namelist())
    assert len(classes) == 3 and "eosinophil" in classes and "lymphocyte" in classes
    assert all(name.startswith("cells/") and name.split("/")[1] in SERVICE_CLASSES for name in archive.namelist())
