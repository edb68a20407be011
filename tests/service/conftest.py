"""Fixtures for service tests: the tiny CNN saved as a real checkpoint, apps, live servers and a browser.

The browser is Debian's Chromium at /usr/bin/chromium (CI installs it with ``apt-get install -y
chromium``); Playwright never downloads one. Without it the browser tests are skipped with a reason
that says how to get it, and the run's summary lists them (tests/conftest.py).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from service_helpers import CHROMIUM, CHROMIUM_ARGS, LiveServer, save_tiny_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "store"))
from store_helpers import PASSWORDS, counted_doc, store_location  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A real self-describing checkpoint of the tiny CNN."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("service_ckpt") / "tiny.safetensors")


@pytest.fixture(scope="session")
def tiny_classifier(tiny_checkpoint):
    from bloodcell.inference.predictor import load

    return load(tiny_checkpoint)


@pytest.fixture()
def access_log() -> io.StringIO:
    return io.StringIO()


@pytest.fixture()
def make_client(tiny_classifier, access_log):
    """``make_client(limits=..., api_key=..., refer_below=..., **create_app_kwargs)`` -> a started TestClient.

    Settings fields become one ``ServiceSettings``; the client is closed after the test.
    """
    from fastapi.testclient import TestClient

    from bloodcell.service.app import create_app
    from bloodcell.service.settings import ServiceSettings

    clients = []

    def make(**kwargs):
        fields = {name: kwargs.pop(name) for name in ("limits", "api_key", "refer_below") if name in kwargs}
        kwargs.setdefault("classifier", tiny_classifier)
        kwargs.setdefault("access_log", access_log)
        client = TestClient(create_app(ServiceSettings(**fields), **kwargs), raise_server_exceptions=False,
                            base_url="http://localhost")
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture()
def client(make_client):
    return make_client()


@pytest.fixture()
def live_server(tiny_classifier):
    from bloodcell.service.app import create_app

    with LiveServer(create_app(classifier=tiny_classifier, access_log=io.StringIO())) as server:
        yield server


@pytest.fixture()
def browser_page():
    """A Playwright page in Debian's headless Chromium (downloads accepted)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            yield page
        finally:
            browser.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_path(request, tmp_path, monkeypatch):
    """A store with three users and one counted sample: an SQLite file, or the test PostgreSQL when configured."""
    path = store_location(request.param, tmp_path, monkeypatch)
    from bloodcell.store.database import open_store
    from bloodcell.store.samples import record_count
    from bloodcell.store.users import add_user

    store = open_store(path)
    with store.session() as session:
        ada = add_user(session, "ada", "admin", PASSWORDS["ada"], None)
        add_user(session, "sam", "supervisor", PASSWORDS["sam"], ada)
        add_user(session, "tia", "technician", PASSWORDS["tia"], ada)
        record_count(session, store.photos, counted_doc(tmp_path / "in"), "tia")
    store.close()
    return path
