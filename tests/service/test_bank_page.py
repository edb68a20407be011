"""The lab's cell bank on the sample page, in Debian's headless Chromium (Playwright) against a live server: everyone
signed in sees how many more reviewed cells of each type are needed; a supervisor clicks the button that adapts the
lab's classifier, the page polls the job and shows its figures, and the model is in the models folder; a
technician has no button; at 390x844 nothing is wider than the screen."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
from service_helpers import BROWSER_TESTS, LiveServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_helpers import PASSWORDS, bank_doc, store_location  # noqa: E402

pytestmark = BROWSER_TESTS

COLOURS = {"basophil": (120, 60, 160), "eosinophil": (220, 120, 90)}
OVERFLOW_JS = """() => Array.from(document.querySelectorAll('body *'))
  .filter((e) => { const r = e.getBoundingClientRect(); return r.width > 0 && (r.right > innerWidth + 0.5 || r.left < -0.5); })
  .map((e) => `${e.tagName.toLowerCase()}.${e.className} ${Math.round(e.getBoundingClientRect().width)}px`)"""


@pytest.fixture(params=["sqlite", "postgresql"])
def bank_server(request, tmp_path, tiny_classifier, monkeypatch):
    """A live server on a store (an SQLite file, or the test PostgreSQL when configured) whose two samples (no lab
    name, as the page keeps them) are reviewed: 5 basophils and 6 eosinophils confirmed; the models folder is
    tmp_path/models."""
    from bloodcell.service.app import create_app
    from bloodcell.service.bank_api import BankAdapter
    from bloodcell.service.settings import ServiceSettings
    from bloodcell.store.database import open_store
    from bloodcell.store.samples import decide, find, finish_review, record_count
    from bloodcell.store.users import add_user
    from bloodcell.workflows.bank_adapt import adapt_from_bank, too_few

    path = store_location(request.param, tmp_path, monkeypatch)
    store = open_store(path)
    with store.session() as session:
        ada = add_user(session, "ada", "admin", PASSWORDS["ada"], None)
        add_user(session, "sam", "supervisor", PASSWORDS["sam"], ada)
        tia = add_user(session, "tia", "technician", PASSWORDS["tia"], ada)
        for k, types in enumerate([{"basophil": 3, "eosinophil": 3}, {"basophil": 2, "eosinophil": 3}]):
            cells = [(name, COLOURS[name]) for name, n in types.items() for _ in range(n)]
            record_count(session, store.photos, bank_doc(tmp_path / "in", f"B-{k + 1}", cells, seed=k), "tia")
    with store.session() as session:
        for sample_id in ("B-1", "B-2"):
            for cell in find(session, sample_id).cells:
                decide(session, sample_id, cell.id, "confirm", tia)
            finish_review(session, sample_id, tia)
    store.close()
    settings = ServiceSettings(store=str(path), detector="classical", models_dir=str(tmp_path / "models"))
    app = create_app(settings, classifier=tiny_classifier, access_log=io.StringIO(),
                     bank_adapter=BankAdapter(too_few=too_few, adapt=adapt_from_bank))
    with LiveServer(app) as server:
        yield server


def _open_as(page, url, name, sample_id="B-1"):
    page.goto(url + "/")
    page.fill("#user-name", name)
    page.fill("#password", PASSWORDS[name])
    page.click("#sign-in button[type=submit]")
    page.locator(f"tr[data-sample-id='{sample_id}'] button.open-sample").click()
    page.locator(".cell-bank").wait_for()


def test_a_supervisor_adapts_the_labs_classifier_with_the_button(bank_server, browser_page, tmp_path):
    from playwright.sync_api import expect

    page, url = browser_page, bank_server.url
    _open_as(page, url, "tia")
    bank = page.locator(".cell-bank")
    expect(bank.locator("h4")).to_have_text("Cell bank of this lab")
    expect(bank.locator(".bank-held")).to_contain_text("basophil 5, eosinophil 6, lymphocyte 0, neutrophil 0")
    assert bank.locator(".bank-needed li").all_inner_texts() == [
        "5 more basophil needed", "4 more eosinophil needed", "10 more lymphocyte needed", "10 more neutrophil needed"]
    assert page.locator(".adapt-classifier").count() == 0  # a technician has no button

    page.locator("#sign-out").click()
    expect(page.locator("#user-name")).to_be_visible()  # the session is ended before the page is loaded again
    _open_as(page, url, "sam")
    button = page.locator(".adapt-classifier")
    expect(button).to_be_enabled()
    button.click()
    status = page.locator(".adapt-status")
    expect(status).to_have_class("adapt-status done", timeout=120_000)
    text = status.inner_text()
    assert text.startswith("Adapted by sam on 11 cells:") and "fold cross-validation" in text
    at_risk = page.request.get(url + "/v1/lab/adaptation?lab=").json()["job"]["figures"]["at_risk"]
    risk = page.locator(".adapt-risk").inner_text()
    assert at_risk == {"neutrophil": 1.0}  # the bank's basophils and eosinophils all looked like neutrophils to it
    assert risk == ("The bank has no neutrophil cells, and before adapting the model called 100.0% of the bank's cells "
                    "neutrophil: if the lab sees neutrophil cells, the adapted model may miss them. Add reviewed "
                    "neutrophil cells and adapt again, or tick the types the lab sees below to adapt again keeping the "
                    "model's calls of them that are more confident than its mistakes among the bank's cells.")
    assert [t.strip() for t in page.locator(".keep-types label").all_inner_texts()] == ["neutrophil"]
    expect(page.locator(".adapt-keeping")).to_be_disabled()  # until a type is ticked
    written = list((tmp_path / "models").glob("lab-adapted-*.safetensors"))
    assert len(written) == 1 and written[0].name in text
    audit = page.request.get(url + "/v1/samples/B-2/audit").json()
    assert [(e["actor"], e["action"]) for e in audit][-1] == ("sam", "adapt_classifier")

    model = page.locator(".lab-model")
    expect(model).to_have_text("New counts of this lab are typed with the service's own model, tiny.")
    page.locator(".use-model").click()
    expect(model).to_contain_text(f"typed with the adapted model {written[0].name}, chosen by sam on")
    assert page.locator(".use-model").count() == 0
    expect(page.locator("#model-name")).to_contain_text(f"model: {written[0].stem} (adapted to this lab; tiny for")
    chosen = page.request.get(url + "/v1/lab/adaptation?lab=").json()["classifier"]
    assert chosen["model"] == written[0].name
    shots = Path(os.environ.get("BLOODCELL_SCREENSHOTS", tmp_path))
    page.locator(".cell-bank").screenshot(path=str(shots / "bank-desktop.png"))

    page.set_viewport_size({"width": 390, "height": 844})
    page.locator(".cell-bank").scroll_into_view_if_needed()
    assert page.evaluate(OVERFLOW_JS) == []
    page.locator(".cell-bank").screenshot(path=str(shots / "bank-phone.png"))

    page.locator(".use-service-model").click()
    expect(model).to_have_text("New counts of this lab are typed with the service's own model, tiny.")
    expect(page.locator(".use-model")).to_be_visible()  # the finished job's model can be chosen again
    expect(page.locator("#model-name")).to_have_text("model: tiny · detector: classical")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.locator(".keep-types input[value=neutrophil]").check()
    page.locator(".adapt-keeping").click()  # the lab sees neutrophils: adapt again, keeping them
    expect(status).to_contain_text("Kept on the lab's word: neutrophil.", timeout=120_000)
    expect(page.locator(".adapt-risk")).to_be_empty()
    assert page.locator(".keep-types").count() == 0
    from bloodcell.checkpoint import read_checkpoint_meta

    kept = [p for p in (tmp_path / "models").glob("lab-adapted-*.safetensors") if p != written[0]]
    assert len(kept) == 1 and list(read_checkpoint_meta(kept[0])["adaptation"]["recipe"]["kept"]) == ["neutrophil"]
    expect(page.locator(".use-model")).to_be_visible()  # the new model can be chosen
    page.locator(".cell-bank").screenshot(path=str(shots / "bank-kept-desktop.png"))
    page.locator("#sign-out").click()
    expect(page.locator("#user-name")).to_be_visible()  # the session is ended before the page is loaded again
    _open_as(page, url, "tia")  # a technician reads which model is in use, with no button
    expect(page.locator(".lab-model")).to_contain_text("typed with the service's own model")
    assert page.locator(".use-model, .use-service-model, .adapt-classifier").count() == 0
