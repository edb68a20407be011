"""Fixtures for service tests: the tiny CNN saved as a real checkpoint, apps and live servers."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from service_helpers import LiveServer, save_tiny_checkpoint


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
    """``make_client(**create_app_kwargs)`` -> a started TestClient (closed after the test)."""
    from fastapi.testclient import TestClient

    from bloodcell.service.app import create_app

    clients = []

    def make(**kwargs):
        kwargs.setdefault("classifier", tiny_classifier)
        kwargs.setdefault("access_log", access_log)
        client = TestClient(create_app(**kwargs), raise_server_exceptions=False)
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
