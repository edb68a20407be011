"""The lab's samples on the web page, in Debian's headless Chromium (Playwright) against a live server on a store.

A technician signs in (after a wrong password), opens a counted sample, decides a cell, reloads and finds the
decision kept, is told in one sentence when someone else changed the sample meanwhile, finishes the review and
is asked to sign in again when the session ends; a supervisor signs it off, downloads the FHIR report (final)
and reopens it with a reason. The sample list fits a phone's 390-px screen.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from service_helpers import BROWSER_TESTS, LiveServer, smear_png
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_helpers import PASSWORDS  # noqa: E402

pytestmark = BROWSER_TESTS


@pytest.fixture()
def store_server(tmp_path, tiny_checkpoint, tiny_classifier):
    """A live server on a store holding a technician, a supervisor and two samples counted by `count --store`."""
    from bloodcell.cli.main import app as cli
    from bloodcell.service.app import create_app
    from bloodcell.service.settings import ServiceSettings
    from bloodcell.store.database import open_store
    from bloodcell.store.users import add_user

    path = tmp_path / "lab.sqlite"
    store = open_store(path)
    with store.session() as session:
        ada = add_user(session, "ada", "admin", PASSWORDS["ada"], None)
        add_user(session, "sam", "supervisor", PASSWORDS["sam"], ada)
        add_user(session, "tia", "technician", PASSWORDS["tia"], ada)
    store.close()
    for sample, shade in (("S-17", 0), ("S-18", 5)):
        (tmp_path / "photos" / sample).mkdir(parents=True)
        (tmp_path / "photos" / sample / "field-1.png").write_bytes(smear_png(wbc=2, shade=shade))
    result = CliRunner().invoke(cli, ["count", str(tmp_path / "photos"), "--output", str(tmp_path / "out"),
                                      "--detector", "classical", "--model", str(tiny_checkpoint), "--store", str(path)])
    assert result.exit_code == 0, result.output
    settings = ServiceSettings(store=str(path), api_key="a-machine-key-nobody-types")
    with LiveServer(create_app(settings, classifier=tiny_classifier, access_log=io.StringIO())) as server:
        yield server


def _sign_in(page, name, password):
    page.fill("#user-name", name)
    page.fill("#password", password)
    page.click("#sign-in button[type=submit]")


def test_a_sample_is_reviewed_across_a_reload_signed_off_and_exported(store_server, browser_page):
    from playwright.sync_api import expect

    page = browser_page
    page.goto(store_server.url + "/")
    _sign_in(page, "tia", "not-her-password")
    message = page.locator("#store-message .error")
    message.wait_for()
    assert message.inner_text() == "Wrong user name or password."
    _sign_in(page, "tia", PASSWORDS["tia"])
    rows = page.locator("table.sample-list tbody tr")
    rows.first.wait_for()
    assert sorted(rows.nth(i).get_attribute("data-sample-id") for i in range(rows.count())) == ["S-17", "S-18"]
    row = page.locator("tr[data-sample-id='S-17']")
    assert "not reviewed" in row.inner_text() and "counted by" in row.inner_text()

    row.locator("button.open-sample").click()
    cards = page.locator("article.cell-card")
    cards.first.wait_for()
    assert cards.count() == 2 and page.locator("article.sample.kept .badge").inner_text() == "not reviewed"
    assert cards.first.locator("img.crop").bounding_box()["width"] >= 200
    cell = cards.first.get_attribute("data-cell")
    other = cards.nth(1).get_attribute("data-cell")
    cards.first.locator("select.relabel").select_option("eosinophil")
    decided = page.locator(f"article.cell-card[data-cell='{cell}']")
    expect(decided.locator(".state")).to_contain_text("Changed by tia")

    page.reload()  # nothing is held only in the page: the open sample and its decision come back from the store
    decided.locator(".state").wait_for()
    assert decided.locator(".call").inner_text().startswith("eosinophil")
    assert decided.locator(".state").inner_text().startswith("Changed by tia")
    assert "by tia" not in page.locator(f"article.cell-card[data-cell='{other}'] .state").inner_text()
    assert "eosinophil" in page.locator(".sample-tables").inner_text()

    # someone else (the same account at another workstation) changes the sample: the page's next write is refused
    behind = page.request.get(store_server.url + "/v1/samples/S-17").json()
    changed = page.request.post(store_server.url + "/v1/samples/S-17/decisions", data={
        "cell_id": int(cell), "action": "relabel", "cell_class": "basophil", "version": behind["version"]},
        headers={"X-CSRF-Token": page.request.get(store_server.url + "/v1/session").json()["csrf_token"]})
    assert changed.ok
    page.locator(f"article.cell-card[data-cell='{other}'] button.confirm").click()
    expect(page.locator("#store-message .error")).to_have_text(
        "Someone else changed this sample since you opened it, so it was reloaded with their changes: please check "
        "the cell and decide again.")
    assert decided.locator(".call").inner_text().startswith("basophil")  # reloaded with the other change
    assert "by tia" not in page.locator(f"article.cell-card[data-cell='{other}'] .state").inner_text()
    assert page.locator("article.sample.kept .badge").inner_text() == "in review"
    page.locator(f"article.cell-card[data-cell='{other}'] button.confirm").click()  # its referral needs a decision
    expect(page.locator(f"article.cell-card[data-cell='{other}'] .state")).to_contain_text("by tia")
    page.click("button.finish")
    expect(page.locator("article.sample.kept .badge")).to_have_text("awaiting sign-off")
    assert page.locator("button.sign").count() == 0  # a technician does not sign off

    csrf = page.request.get(store_server.url + "/v1/session").json()["csrf_token"]
    assert page.request.delete(store_server.url + "/v1/session", headers={"X-CSRF-Token": csrf}).ok  # session over
    page.get_by_role("button", name="← All samples").click()
    expect(page.locator("#store-message .error")).to_have_text("Your session has ended: please sign in again.")
    _sign_in(page, "sam", PASSWORDS["sam"])
    page.locator("tr[data-sample-id='S-17'] button.open-sample").click()
    page.click("button.sign")
    expect(page.locator("article.sample.kept .badge")).to_have_text("signed")
    assert page.locator("article.cell-card select.relabel").count() == 0  # signed: read-only
    with page.expect_download() as info:
        page.get_by_role("link", name="Download FHIR").click()
    bundle = json.loads(Path(info.value.path()).read_text())
    assert bundle["resourceType"] == "Bundle"
    report = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    assert report["status"] == "final"
    page.click("button.reopen")  # without a reason
    expect(page.locator("#store-message .error")).to_have_text(
        "Write why the sample is reopened first: the reason is kept with the sample.")
    page.fill("input.reopen-reason", "recount the eosinophils")
    page.click("button.reopen")
    expect(page.locator("article.sample.kept .badge")).to_have_text("in review")

    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_role("button", name="← All samples").click()
    page.locator("tr[data-sample-id='S-17']").wait_for()
    assert "in review" in page.locator("tr[data-sample-id='S-17']").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.click("#sign-out")
    expect(page.locator("#sign-in")).to_be_visible()
    assert page.request.get(store_server.url + "/v1/session").status == 401
