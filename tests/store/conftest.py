"""Store fixtures: every store test runs on SQLite, and on PostgreSQL when BLOODCELL_TEST_POSTGRES_URL is set
(``scripts/postgres-test.sh`` installs, starts and prepares one and prints its URL)."""

from __future__ import annotations


import pytest

from bloodcell.store.database import open_store
from bloodcell.store.users import Person, add_user

from store_helpers import PASSWORDS, store_location


@pytest.fixture(params=["sqlite", "postgresql"])
def store_spec(request, tmp_path, monkeypatch):
    """Where a fresh store goes: an SQLite file, or the test PostgreSQL emptied first."""
    return store_location(request.param, tmp_path, monkeypatch, "lab/store.sqlite")


@pytest.fixture()
def store(store_spec):
    opened = open_store(store_spec)
    yield opened
    opened.close()


@pytest.fixture()
def people(store) -> dict[str, Person]:
    """An admin (ada), a supervisor (sam) and a technician (tia)."""
    with store.session() as session:
        ada = add_user(session, "ada", "admin", PASSWORDS["ada"], None)
        sam = add_user(session, "sam", "supervisor", PASSWORDS["sam"], ada)
        tia = add_user(session, "tia", "technician", PASSWORDS["tia"], ada)
    return {"ada": ada, "sam": sam, "tia": tia}
