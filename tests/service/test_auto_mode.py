"""Auto mode by content over HTTP (POST /v1/kind) and on the page: a 256-px and a 360-px smear field are counted as
smear fields, a single cell is classified; the page says which was chosen and how to switch, and a typed sample
id is never ignored silently."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from service_helpers import BROWSER_TESTS, LiveServer, cell_png, classical_counter, smear_png


def _crop(data: bytes, box) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).crop(box).save(buffer, format="PNG")
    return buffer.getvalue()


FIELD_256 = _crop(smear_png(wbc=2), (0, 0, 256, 256))           # red cells only
FIELD_360 = _crop(smear_png(wbc=2), (280, 0, 640, 360))         # a white cell off the middle, red cells
ONE_CELL = _crop(smear_png(wbc=1), (560 - 128, 400 - 128, 560 + 128, 400 + 80))  # one white cell in the middle


@pytest.fixture()
def kind_client(make_client):
    return make_client(count_image=classical_counter)


def test_the_kind_of_each_photo_is_decided_by_its_cells_not_its_width(kind_client):
    files = [("files", (name, data, "image/png")) for name, data in
             (("field-256.png", FIELD_256), ("field-360.png", FIELD_360), ("cell.png", ONE_CELL),
              ("small.png", cell_png()), ("broken.png", b"not an image"))]
    response = kind_client.post("/v1/kind", files=files)
    assert response.status_code == 200, response.text
    results = {r["filename"]: r for r in response.json()["results"]}
    assert results["field-256.png"]["kind"] == "smear" and results["field-360.png"]["kind"] == "smear"
    assert "choose 'single cells'" in results["field-256.png"]["reason"]
    assert results["cell.png"]["kind"] == "cell" and results["cell.png"]["cells"]["WBC"] == 1
    assert "one white cell in the middle" in results["cell.png"]["reason"]
    assert results["small.png"]["kind"] == "cell" and "too small" in results["small.png"]["reason"]
    assert results["broken.png"]["kind"] is None and results["broken.png"]["error"]


@BROWSER_TESTS[0]
@BROWSER_TESTS[1]
def test_the_page_counts_a_256_px_field_in_auto_mode_and_says_where_the_sample_id_went(
        tiny_classifier, browser_page, tmp_path):
    from bloodcell.service.app import create_app

    (tmp_path / "field-256.png").write_bytes(FIELD_256)
    (tmp_path / "cell.png").write_bytes(ONE_CELL)
    app = create_app(classifier=tiny_classifier, count_image=classical_counter, access_log=io.StringIO())
    with LiveServer(app) as server:
        page = browser_page
        page.goto(server.url + "/")
        assert page.is_checked("input[name=mode][value=auto]")
        page.fill("#sample-id", "S-256")
        page.set_input_files("#file-input", [str(tmp_path / "field-256.png"), str(tmp_path / "cell.png")])
        sample = page.locator("article.sample[data-sample-id='S-256']")
        sample.locator("article.photo[data-filename='field-256.png']").wait_for()
        page.locator("article.card[data-filename='cell.png']").wait_for()
        notes = page.locator("#kind-notes").inner_text()
        assert "field-256.png: taken as a smear field" in notes and "choose 'single cells'" in notes
        assert "cell.png: taken as a single cell" in notes
        assert "Sample S-256 holds the 1 smear photo; the 1 single-cell image is classified on its own" in notes
