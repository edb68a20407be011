"""The printable report over HTTP (GET /v1/samples/{id}/report, with the API key or a session) and printed by
Debian's Chromium: the printed page (print media, page.pdf()) shows the sample's numbers."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import BROWSER_TESTS, LiveServer

from bloodcell.service.app import create_app
from bloodcell.service.settings import ServiceSettings
from bloodcell.store.database import open_store
from bloodcell.store.users import add_user

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_helpers import PASSWORDS  # noqa: E402
from test_sample_report import kept_sample  # noqa: E402

KEY = "machine-key-for-report-tests"
LONG_LAB = "Laboratoire-" + "x" * 178  # a lab name of 190 characters without a space: it wraps, never widens the page


@pytest.fixture()
def report_app(tmp_path, monkeypatch, tiny_classifier):
    monkeypatch.setenv("BLOODCELL_PHOTOS", str(tmp_path / "photos"))
    path = tmp_path / "lab.sqlite"
    store = open_store(path)
    with store.session() as session:
        ada = add_user(session, "ada", "admin", PASSWORDS["ada"], None)
        people = {"sam": add_user(session, "sam", "supervisor", PASSWORDS["sam"], ada),
                  "tia": add_user(session, "tia", "technician", PASSWORDS["tia"], ada)}
    kept_sample(store, people, tmp_path / "in", lab=LONG_LAB)
    store.close()
    return create_app(ServiceSettings(store=str(path), api_key=KEY), classifier=tiny_classifier,
                      access_log=io.StringIO())


def test_the_report_is_html_for_the_api_key_or_a_session_and_401_otherwise(report_app):
    with TestClient(report_app, base_url="http://localhost") as client:
        assert client.get("/v1/samples/S-001/report").status_code == 401
        response = client.get("/v1/samples/S-001/report", params={"wbc": 10}, headers={"X-API-Key": KEY})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "<td class='num'>90</td><td class='num'>90.0</td>" in response.text and "9.00" in response.text
        assert f"<span id='lab'>{LONG_LAB}</span>" in response.text
        assert client.get("/v1/samples/S-404/report", headers={"X-API-Key": KEY}).status_code == 404
        bad = client.get("/v1/samples/S-001/report", params={"wbc": -1}, headers={"X-API-Key": KEY})
        assert bad.status_code == 422 and "not plausible" in bad.json()["message"]
        client.post("/v1/session", json={"name": "tia", "password": PASSWORDS["tia"]})
        assert client.get("/v1/samples/S-001/report").status_code == 200


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (Debian poppler-utils) is not installed")
@BROWSER_TESTS[0]
@BROWSER_TESTS[1]
def test_chromium_prints_the_reports_numbers(report_app, browser_page, tmp_path):
    page = browser_page
    page.set_extra_http_headers({"X-API-Key": KEY})
    with LiveServer(report_app) as server:
        page.set_viewport_size({"width": 390, "height": 844})  # a phone: never wider than its screen
        for query in ("", "?wbc=10"):  # the absolute columns make the differential widest
            page.goto(f"{server.url}/v1/samples/S-001/report{query}")
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), query
            assert page.locator("table.differential").bounding_box()["width"] <= 390 - 2 * 10, query  # all in view
        page.set_viewport_size({"width": 1366, "height": 900})
        page.goto(f"{server.url}/v1/samples/S-001/report?wbc=10")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        page.emulate_media(media="print")
        row = page.locator("tr[data-type='neutrophil']")
        assert re.sub(r"\s+", " ", row.inner_text()).strip() == "neutrophil 90 90.0 82.4–95.1 50-70% 9.00 HIGH 2-7 HIGH"
        assert page.locator(".ruo").is_visible()
        pdf = tmp_path / "printed.pdf"
        pdf.write_bytes(page.pdf(format="A4"))
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert re.search(r"lymphocyte\s+8\s+8\.0\s+3\.5.15\.2\s+20-45%\s+0\.80\s+1-3\s+LOW", text)
    assert "For research use only: not validated for diagnosis" in text and "Signed off" in text
