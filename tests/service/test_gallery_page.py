"""The gallery review in Debian's headless Chromium (Playwright) against a live server on a store.

A technician reclassifies white cells with the keyboard (a number key per group, arrows, z to undo) and by
dragging, reloads and finds the decisions and the selected cell kept; moves a box and adds a missed cell on the
photo; counts photos on the page into the store (and adds a photo to the open sample); and at 390x844 no element
of the page is wider than the screen.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from service_helpers import BROWSER_TESTS, LiveServer, smear_png

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_helpers import PASSWORDS, counted_doc  # noqa: E402

from bloodcell.inference.ood import UNFAMILIAR_NOTE, UNFAMILIAR_REFERRAL  # noqa: E402
from bloodcell.inference.predictor import SEVERAL_CELLS_NOTE  # noqa: E402

pytestmark = BROWSER_TESTS

#: Elements wider than the viewport (their tag, class and width), measured in the page.
OVERFLOW_JS = """() => Array.from(document.querySelectorAll('body *'))
  .filter((e) => { const r = e.getBoundingClientRect(); return r.width > 0 && (r.right > innerWidth + 0.5 || r.left < -0.5); })
  .map((e) => `${e.tagName.toLowerCase()}.${e.className} ${Math.round(e.getBoundingClientRect().width)}px`)"""


@pytest.fixture()
def gallery_server(tmp_path, tiny_classifier):
    """A live server (classical detector) on a store holding a technician, an admin and sample S-001: 4 white
    cells (3 neutrophils, 1 lymphocyte; the first one referred), one platelet and three red cells."""
    with _serve(tmp_path, tiny_classifier) as server:
        yield server


@pytest.fixture()
def keyed_server(tmp_path, tiny_classifier):
    """The gallery server with an API key, as on a lab's network."""
    with _serve(tmp_path, tiny_classifier, api_key="lab-network-key") as server:
        yield server


def _serve(tmp_path, tiny_classifier, **settings) -> LiveServer:
    from bloodcell.service.app import create_app
    from bloodcell.service.settings import ServiceSettings
    from bloodcell.store.database import open_store
    from bloodcell.store.samples import record_count
    from bloodcell.store.users import add_user

    path = tmp_path / "lab.sqlite"
    store = open_store(path)
    with store.session() as session:
        ada = add_user(session, "ada", "admin", PASSWORDS["ada"], None)
        add_user(session, "tia", "technician", PASSWORDS["tia"], ada)
        record_count(session, store.photos, counted_doc(tmp_path / "in"), "tia")
    store.close()
    settings = ServiceSettings(store=str(path), detector="classical", **settings)
    return LiveServer(create_app(settings, classifier=tiny_classifier, access_log=io.StringIO()))


def _sign_in(page, url, name="tia"):
    page.goto(url + "/")
    page.fill("#user-name", name)
    page.fill("#password", PASSWORDS[name])
    page.click("#sign-in button[type=submit]")
    page.locator("#signed-in").wait_for()


def _open(page, sample_id="S-001"):
    from playwright.sync_api import expect

    page.locator(f"tr[data-sample-id='{sample_id}'] button.open-sample").click()
    page.locator(".gallery .tile").first.wait_for()
    # The cell bank above the photos fills in when the lab's state arrives: wait, so the photos no longer move (a drag
    # aimed at a box before it did missed it on a loaded machine).
    expect(page.locator(".cell-bank .lab-model")).not_to_be_empty()


def _key_of(page, group):
    return page.locator(f".group[data-group='{group}'] h5 kbd").inner_text()


def _kept(page, url):
    return {c["id"]: c for c in page.request.get(url + "/v1/samples/S-001").json()["cells"]}


def test_keyboard_and_drag_reclassify_undo_and_a_reload_keeps_decisions_and_selection(gallery_server, browser_page):
    from playwright.sync_api import expect

    page, url = browser_page, gallery_server.url
    _sign_in(page, url)
    _open(page)
    assert page.locator(".group[data-group='neutrophil'] .tile").count() == 3
    assert page.locator(".group[data-group='lymphocyte'] .tile").count() == 1
    first = page.locator(".group[data-group='neutrophil'] .tile").first
    assert "referred" in first.get_attribute("class")  # flagged cells first
    assert first.locator("img.crop").bounding_box()["width"] >= 200
    assert page.locator(".progress .target").inner_text().startswith("4 of 100 white cells counted")
    flagged, second = (int(page.locator(".group[data-group='neutrophil'] .tile").nth(i).get_attribute("data-cell"))
                       for i in range(2))

    first.locator("img.crop").click()
    page.keyboard.press(_key_of(page, "eosinophil"))
    moved = page.locator(f".group[data-group='eosinophil'] .tile[data-cell='{flagged}']")
    expect(moved).to_be_visible()
    assert _kept(page, url)[flagged]["class"] == "eosinophil"
    expect(moved.locator(".call")).to_have_text(re.compile(r"^eosinophil — changed by tia; model said neutrophil \d+%$"))
    expect(page.locator(f".tile[data-cell='{second}']")).to_have_class(re.compile(r"\bselected\b"))  # and on
    page.keyboard.press(_key_of(page, "smudge / not a cell"))
    expect(page.locator(f".group[data-group='smudge / not a cell'] .tile[data-cell='{second}']")).to_be_visible()
    assert _kept(page, url)[second]["removed"]
    page.keyboard.press("z")  # the smudge call is taken back
    expect(page.locator(f".group[data-group='neutrophil'] .tile[data-cell='{second}']")).to_be_visible()
    assert not _kept(page, url)[second]["removed"]
    expect(page.locator(f".tile[data-cell='{second}'] .call")).to_have_text(re.compile(r"^neutrophil \(\d+% sure\)$"))
    audit = page.request.get(url + "/v1/samples/S-001/audit").json()
    assert [e["action"] for e in audit] == ["count", "relabel", "remove_box", "remove_box"]  # nothing deleted
    assert _kept(page, url)[second]["decision"] is None  # undecided again, as before the removal
    assert audit[-1]["after"] == {"label": "WBC", "class": "neutrophil", "removed": False, "undo": True}

    page.set_viewport_size({"width": 1280, "height": 2400})  # the cell and its new group on one screen to drag
    page.evaluate("document.querySelector('.review-gallery').scrollIntoView({block: 'start'})")
    lymphocyte = page.locator(".group[data-group='lymphocyte'] .tile").first
    lymph_id = int(lymphocyte.get_attribute("data-cell"))
    lymphocyte.drag_to(page.locator(".group[data-group='platelet (not a white cell)']"))
    expect(page.locator(f".group[data-group='platelet (not a white cell)'] .tile[data-cell='{lymph_id}']")).to_be_visible()
    assert _kept(page, url)[lymph_id]["label"] == "Platelets"

    page.locator(f".tile[data-cell='{flagged}'] img.crop").click()
    page.keyboard.press("ArrowRight")
    selected = page.locator(".tile.selected").get_attribute("data-cell")
    assert f"cell={selected}" in page.url
    page.reload()  # the decisions and the selected cell come back from the store and the address
    page.locator(".gallery .tile").first.wait_for()
    assert page.locator(f".group[data-group='eosinophil'] .tile[data-cell='{flagged}']").count() == 1
    assert page.locator(f".group[data-group='platelet (not a white cell)'] .tile[data-cell='{lymph_id}']").count() == 1
    assert page.locator(".tile.selected").get_attribute("data-cell") == selected
    assert page.locator(".progress .target").inner_text().startswith("3 of 100 white cells counted")
    page.keyboard.press("f")  # the selected cell at the photo's own resolution
    expect(page.locator("#zoom")).to_be_visible()
    page.wait_for_function("document.querySelector('#zoom-image').naturalWidth > 0")
    assert page.evaluate("document.querySelector('#zoom-image').naturalWidth") == 30  # 3 x the 10-px box, not scaled
    page.keyboard.press("Escape")
    expect(page.locator("#zoom")).to_be_hidden()
    page.keyboard.press("z")  # after the reload, z still takes back the last change (the drag to the platelet bin)
    expect(page.locator(f".group[data-group='lymphocyte'] .tile[data-cell='{lymph_id}']")).to_be_visible()
    assert _kept(page, url)[lymph_id]["label"] == "WBC"


def test_a_box_is_moved_on_the_photo_and_a_missed_cell_added(gallery_server, browser_page):
    from playwright.sync_api import expect

    page, url = browser_page, gallery_server.url
    _sign_in(page, url)
    _open(page)
    assert not page.locator(".kept-photo .box.rbc").first.is_visible()  # the red-cell layer starts hidden
    page.check("input.show-red-cells")
    expect(page.locator(".kept-photo .box.rbc").first).to_be_visible()

    cell = next(c for c in _kept(page, url).values() if c["label"] == "WBC")
    box = page.locator(f".kept-photo .box[data-cell='{cell['id']}']")
    frame = page.locator(".kept-photo .overlay").bounding_box()
    scale = frame["width"] / 128  # the photo is 128 px wide
    start = box.bounding_box()
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(start["x"] + start["width"] / 2 + 10 * scale, start["y"] + start["height"] / 2 + 5 * scale, steps=4)
    page.mouse.up()
    expect(page.locator(".sample.kept .badge")).to_have_text("in review")
    moved = _kept(page, url)[cell["id"]]["box"]
    assert moved == pytest.approx([50, 25, 60, 35], abs=1.0)
    expect(page.locator(f".tile[data-cell='{cell['id']}'] .state")).to_contain_text("Moved by tia")

    before = len(_kept(page, url))
    page.click("button.add-missed")
    page.select_option("select.add-as", "lymphocyte")
    page.locator(".kept-photo .overlay").scroll_into_view_if_needed()
    frame = page.locator(".kept-photo .overlay").bounding_box()  # measured again: the page scrolled
    page.mouse.move(frame["x"] + 100 * scale, frame["y"] + 20 * scale)
    page.mouse.down()
    page.mouse.move(frame["x"] + 118 * scale, frame["y"] + 40 * scale, steps=4)
    page.mouse.up()
    expect(page.locator(".group[data-group='lymphocyte'] .tile")).to_have_count(2)
    added = [c for c in _kept(page, url).values() if c["origin"] == "reviewer"]
    assert len(_kept(page, url)) == before + 1 and added[0]["class"] == "lymphocyte"
    assert added[0]["box"] == pytest.approx([100, 20, 118, 40], abs=1.0)


def test_photos_counted_on_the_page_are_kept_and_a_photo_taken_joins_the_open_sample(gallery_server, browser_page,
                                                                                   tmp_path):
    from playwright.sync_api import expect

    page, url = browser_page, gallery_server.url
    (tmp_path / "field-1.png").write_bytes(smear_png(wbc=2))
    (tmp_path / "field-2.png").write_bytes(smear_png(wbc=1, shade=9))
    _sign_in(page, url)
    page.check("input[name=mode][value=smear]")
    page.set_input_files("#file-input", str(tmp_path / "field-1.png"))
    expect(page.locator("#errors .error")).to_have_text(
        "Type the sample id first: photos you count while signed in are kept in the lab's samples under it.")
    page.fill("#sample-id", "S-2026-0117")
    page.set_input_files("#file-input", str(tmp_path / "field-1.png"))
    expect(page.locator("article.sample.kept h3")).to_contain_text("Sample S-2026-0117")  # opened in the gallery
    kept = page.request.get(url + "/v1/samples/S-2026-0117").json()
    assert kept["counted_by"] == "tia" and len(kept["photos"]) == 1
    page.fill("#sample-id", "")
    page.set_input_files("#camera-input", str(tmp_path / "field-2.png"))  # "take a photo"
    expect(page.locator(".kept-photo")).to_have_count(2)
    kept = page.request.get(url + "/v1/samples/S-2026-0117").json()
    assert [p["name"] for p in kept["photos"]] == ["field-1.png", "field-2.png"]
    assert page.request.get(url + "/v1/samples/S-2026-0117/audit").json()[-1]["action"] == "add_photos"


def test_nothing_is_wider_than_a_390_px_phone_and_the_page_names_no_commands(gallery_server, browser_page, tmp_path):
    page, url = browser_page, gallery_server.url
    page.set_viewport_size({"width": 390, "height": 844})
    (tmp_path / "field.png").write_bytes(smear_png(wbc=2))
    page.goto(url + "/")  # not signed in: the count's differential is shown on the page
    page.check("input[name=mode][value=smear]")
    page.set_input_files("#file-input", str(tmp_path / "field.png"))
    page.locator("#smear-results .report table").first.wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.evaluate(OVERFLOW_JS) == [], page.evaluate(OVERFLOW_JS)
    assert not re.search(r"bloodcell [a-z]", page.locator("main").inner_text())  # no command lines on the page
    for server_words in (UNFAMILIAR_REFERRAL.format(stats=8.2, features=1.4), UNFAMILIAR_NOTE, SEVERAL_CELLS_NOTE.format(3)):
        assert "bloodcell" not in page.evaluate("pageWords", server_words)
    top = page.locator("#smear-results article.sample").bounding_box()["y"]
    assert -2 <= top < 844  # the results were scrolled into view
    _sign_in(page, url)
    _open(page)
    page.locator(".kept-photo img").first.wait_for()
    assert page.locator(".tile img.crop").first.bounding_box()["width"] >= 200
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.evaluate(OVERFLOW_JS) == [], page.evaluate(OVERFLOW_JS)


def test_on_a_server_with_an_api_key_a_signed_in_technician_counts_into_the_store_and_a_refusal_is_never_done(
        keyed_server, browser_page, tmp_path):
    from playwright.sync_api import expect

    page, url = browser_page, keyed_server.url
    (tmp_path / "field-1.png").write_bytes(smear_png(wbc=2))
    (tmp_path / "field-2.png").write_bytes(smear_png(wbc=1, shade=9))
    fields = [str(tmp_path / "field-1.png"), str(tmp_path / "field-2.png")]
    page.goto(url + "/")  # not signed in, no key: refused, and the page says nothing was done
    page.set_input_files("#file-input", fields)
    expect(page.locator("#errors .error").first).to_contain_text("needs the API key")
    expect(page.locator("#status")).to_have_text("Nothing was done: the server refused the 2 files.")
    assert "single cells" not in page.locator("#kind-notes").inner_text()  # not sent on as single cells
    _sign_in(page, url)
    page.fill("#sample-id", "S-2026-0118")
    page.set_input_files("#file-input", fields)  # auto mode, as a new user leaves it
    expect(page.locator("article.sample.kept h3")).to_contain_text("Sample S-2026-0118")
    expect(page.locator("#status")).to_have_text("Done: 2 files.")
    assert page.locator("#errors .error").count() == 0
    kept = page.request.get(url + "/v1/samples/S-2026-0118").json()
    assert kept["counted_by"] == "tia" and [p["name"] for p in kept["photos"]] == ["field-1.png", "field-2.png"]


@pytest.mark.parametrize("size", [(1280, 800), (390, 844)])
def test_a_refusal_during_review_is_shown_where_the_reviewer_looks(gallery_server, browser_page, size):
    from playwright.sync_api import expect

    page, url = browser_page, gallery_server.url
    page.set_viewport_size({"width": size[0], "height": size[1]})
    _sign_in(page, url)
    _open(page)
    message = page.locator("#store-message")
    expect(message).to_be_hidden()
    tiles = page.locator(".group[data-group='neutrophil'] .tile")
    tiles.nth(1).locator("img.crop").click()  # the gallery is in view, the top of the page is not
    assert page.evaluate("document.querySelector('#store-title').getBoundingClientRect().bottom") < 0
    page.keyboard.press("z")
    expect(message.locator(".error")).to_have_text("There is nothing of yours to take back on this page.")
    expect(message).to_be_in_viewport(ratio=1)
    assert message.get_attribute("role") == "alert"

    sample = page.request.get(url + "/v1/samples/S-001").json()  # someone else decides meanwhile
    other = int(tiles.nth(2).get_attribute("data-cell"))
    answer = page.request.post(url + "/v1/samples/S-001/decisions", headers={"X-CSRF-Token": page.evaluate("store.csrf")},
                               data={"cell_id": other, "action": "confirm", "version": sample["version"]})
    assert answer.ok
    page.locator(".tile.selected img.crop").click()
    page.keyboard.press(_key_of(page, "eosinophil"))
    expect(message.locator(".error")).to_contain_text("Someone else changed this sample")
    expect(message).to_be_in_viewport(ratio=1)
    message.locator("button.dismiss").click()
    expect(message).to_be_hidden()


#: The right edge of the text in each cell of the first table row of a header and its numbers: (header, [numbers]).
TEXT_RIGHTS_JS = """(table) => {
  const right = (cell) => { const r = document.createRange(); r.selectNodeContents(cell); return r.getBoundingClientRect().right; };
  const rows = Array.from(table.querySelectorAll('tr'));
  const at = Array.from(rows[0].children).findIndex((th) => th.textContent === 'Count');
  return [right(rows[0].children[at]), rows.slice(1).map((row) => right(row.children[at]))];
}"""


def test_a_long_sample_id_wraps_and_letters_of_any_script_are_kept_at_both_sizes(gallery_server, browser_page, tmp_path):
    from playwright.sync_api import expect

    page, url = browser_page, gallery_server.url
    long_id = ("S-2026-" + "0123456789" * 15)[:150]  # as `count --samples` accepts it
    (tmp_path / "field-1.png").write_bytes(smear_png(wbc=1))
    (tmp_path / "field-2.png").write_bytes(smear_png(wbc=1, shade=5))
    _sign_in(page, url)
    page.check("input[name=mode][value=smear]")
    for sample_id, photo in ((long_id, "field-1.png"), ("Ünïcödé-血液", "field-2.png")):
        page.fill("#sample-id", sample_id)
        page.set_input_files("#file-input", str(tmp_path / photo))
        expect(page.locator("article.sample.kept h3")).to_contain_text(f"Sample {sample_id}")
        expect(page.locator("#status")).to_have_text("Done: 1 file.")
    for width, height in ((390, 844), (1280, 800)):
        page.set_viewport_size({"width": width, "height": height})
        page.goto(f"{url}/#sample={long_id}")
        page.reload()  # a new address that differs by its # only is not a new page
        page.locator(".gallery .tile").first.wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert page.evaluate(OVERFLOW_JS) == [], page.evaluate(OVERFLOW_JS)
        page.locator("button.link", has_text="All samples").click()
        opener = page.locator(f"tr[data-sample-id='{long_id}'] button.open-sample")
        expect(opener).to_have_attribute("title", long_id)  # the whole id, where the list shortens it
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert page.evaluate(OVERFLOW_JS) == [], page.evaluate(OVERFLOW_JS)
        assert opener.bounding_box()["height"] < 60  # at most two lines in the list
    page.goto(f"{url}/v1/samples/{quote(long_id)}/report")  # the printable report (1280 px: an A4 page's width fits)
    expect(page.locator("#sample-id")).to_have_text(long_id)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280


def test_on_a_phone_the_zoom_fits_the_cell_to_the_screen_and_the_headers_stand_over_their_numbers(
        gallery_server, browser_page):
    from playwright.sync_api import expect

    page, url = browser_page, gallery_server.url
    page.set_viewport_size({"width": 390, "height": 844})
    _sign_in(page, url)
    _open(page)
    for table in page.locator(".sample-tables table").element_handles():
        header, numbers = table.evaluate(TEXT_RIGHTS_JS)
        assert all(abs(header - n) <= 1 for n in numbers), (header, numbers)
    page.locator(".tile img.crop").first.dblclick()
    image = page.locator("#zoom-image")
    expect(page.locator("#zoom")).to_be_visible()
    expect(image).to_have_js_property("complete", True)  # polled by Playwright: the page's CSP forbids eval
    assert image.evaluate("(img) => img.naturalWidth") == 30
    box = image.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["y"] + box["height"] <= 844  # all on the screen
    assert box["width"] >= 300  # fitted to the phone's width, not the crop's own 30 px in a corner
    assert abs(box["x"] + box["width"] / 2 - 195) <= 2  # the cell (the crop's centre) in the middle
    image.click()  # the photo's own pixels
    assert image.bounding_box()["width"] == pytest.approx(30, abs=1)
    image.click()
    assert image.bounding_box()["width"] >= 300


def test_a_kept_sample_from_an_unfamiliar_lab_warns_above_its_numbers_and_a_familiar_one_does_not(
        gallery_server, browser_page, tmp_path):
    from playwright.sync_api import expect

    from bloodcell.store.database import open_store
    from bloodcell.store.samples import record_count

    result = counted_doc(tmp_path / "odd", "S-odd", unfamiliar=True)
    store = open_store(tmp_path / "lab.sqlite")
    with store.session() as session:
        record_count(session, store.photos, result, "tia")
    store.close()
    page, url = browser_page, gallery_server.url
    _sign_in(page, url)
    _open(page, "S-odd")
    warning = page.locator(".lab-check")
    expect(warning).to_contain_text("Lab check: 4 of 4 white cells look unlike the cells of every lab")
    assert "bloodcell" not in warning.inner_text()  # the page names no commands
    assert warning.bounding_box()["y"] < page.locator(".sample-tables").bounding_box()["y"]
    page.screenshot(path=str(tmp_path / "lab-check.png"))
    page.locator("button.link", has_text="All samples").click()
    _open(page)
    expect(page.locator(".sample-tables")).to_be_visible()
    assert page.locator(".lab-check").count() == 0
