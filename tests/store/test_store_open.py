"""Opening a store: created or upgraded by the shipped migrations; a foreign, damaged or newer database refused
unchanged in one sentence; photos kept by content inside their folder whatever the sample id."""

from __future__ import annotations

import hashlib
import re
import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from store_helpers import counted_doc
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from bloodcell.errors import ConfigError
from bloodcell.store.database import head_revision, open_store, upgrade_to
from bloodcell.store.errors import StoreError
from bloodcell.store.models import Base
from bloodcell.store.samples import find, record_count


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(path) -> str:
    before = _digest(path)
    siblings = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(StoreError) as error:
        open_store(path)
    assert _digest(path) == before, "the refused file was changed"
    assert sorted(p.name for p in path.parent.iterdir()) == siblings, "files appeared beside the refused one"
    message = str(error.value)
    assert "\n" not in message and message.count(". ") == 0
    return message


def test_a_file_that_is_not_a_database_is_refused_unchanged(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"shopping list: milk, eggs\n" * 50)
    assert "is not a bloodcell store (not an SQLite database); it was left unchanged" in _refused(path)


def test_a_damaged_database_is_refused_unchanged(tmp_path):
    path = tmp_path / "store.sqlite"
    open_store(path).close()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the first page's b-tree after the header
    path.write_bytes(bytes(data))
    assert "the store is damaged" in _refused(path)


def test_another_programs_database_is_refused_unchanged(tmp_path):
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO customers (name) VALUES ('Ann')")
    connection.close()
    assert "is not a bloodcell store (it holds other tables: customers)" in _refused(path)


def test_a_store_of_a_newer_bloodcell_is_refused_unchanged(tmp_path):
    path = tmp_path / "store.sqlite"
    open_store(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    connection.close()
    assert "made by a newer bloodcell or another program (schema revision 9999)" in _refused(path)


def test_a_folder_given_as_the_store_is_refused(tmp_path):
    with pytest.raises(StoreError, match="is a folder"):
        open_store(tmp_path)


def test_an_older_store_is_upgraded_on_open_and_keeps_its_samples(store_spec, tmp_path):
    url = store_spec if "://" in store_spec else f"sqlite:///{store_spec}"
    if "://" not in store_spec:
        (tmp_path / "lab").mkdir()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    upgrade_to(engine, "0001")
    with engine.begin() as connection:
        assert "note" not in {c["name"] for c in inspect(connection).get_columns("samples")}
        connection.execute(text(
            "INSERT INTO samples (sample_id, lab, status, created_at, updated_at, version) "
            "VALUES ('OLD-1', 'lab A', 'counted', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)"))
    engine.dispose()
    store = open_store(store_spec)
    try:
        with store.engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
        with store.session() as session:
            old = find(session, "OLD-1")
            assert (old.lab, old.note, old.version) == ("lab A", "", 1)
    finally:
        store.close()


def test_the_models_match_the_migrated_schema(store):
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_the_default_store_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOODCELL_STORE", str(tmp_path / "env" / "lab.sqlite"))
    store = open_store(None)
    store.close()
    assert (tmp_path / "env" / "lab.sqlite").is_file()
    assert store.photos.root == tmp_path / "env" / "lab-photos"


@pytest.mark.parametrize("sample_id", ["../../escaped", "/etc/passwd", "..\\..\\win", "a/../../b"])
def test_a_sample_id_with_path_characters_is_refused_and_never_leaves_the_photo_folder(store, tmp_path, sample_id):
    outside_before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    with pytest.raises(ConfigError, match="cannot be used"):
        with store.session() as session:
            record_count(session, store.photos, counted_doc(tmp_path / "in", sample_id), "tia")
    new_files = sorted(p for p in tmp_path.rglob("*") if p.is_file() and p not in outside_before)
    assert all(p.suffix == ".sqlite" or p.parent == tmp_path / "in" for p in new_files)
    for name in ("../" + "0" * 64, sample_id, "A" * 64):
        with pytest.raises(StoreError, match="is not a photo's SHA-256"):
            store.photos.path(name)


@pytest.mark.parametrize("sample_id", ["x\x00y", "line\nbreak", "", "s" * 191, "a/b", "..", ".hidden", "a%2Fb",
                                       "x?y", " S-5 ", "S-5 ", "S#5", "\u0301a"])
def test_a_sample_id_that_cannot_be_kept_is_refused_before_anything_is_written(store, tmp_path, sample_id):
    with pytest.raises(ConfigError, match=re.escape("cannot be used: use 1 to 190 letters (of any script), digits, "
                                                    "'.', '_', '-' or spaces between them, not starting with '.'")):
        with store.session() as session:
            record_count(session, store.photos, counted_doc(tmp_path / "in", sample_id), "tia")
    assert not store.photos.root.exists()


def test_a_sample_id_with_inner_spaces_is_kept_and_found_again(store, tmp_path):
    """A lab's folder named "Ward 3 S-5" is one sample: spaces between words are kept (its address encodes them)."""
    with store.session() as session:
        record_count(session, store.photos, counted_doc(tmp_path / "in", "Ward 3 S-5"), "tia")
    with store.session() as session:
        assert find(session, "Ward 3 S-5").sample_id == "Ward 3 S-5"


def test_a_postgresql_database_of_another_program_is_refused_unchanged(store_spec):
    if "://" not in store_spec:
        pytest.skip("PostgreSQL only")
    engine = create_engine(store_spec.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE invoices (id integer PRIMARY KEY, total numeric)"))
    with pytest.raises(StoreError, match=r"is not a bloodcell store \(it holds other tables: invoices\); it was left"):
        open_store(store_spec)
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) == {"invoices"}
    engine.dispose()


def test_a_postgresql_server_that_refuses_the_password_is_one_sentence(store_spec):
    if "://" not in store_spec:
        pytest.skip("PostgreSQL only")
    wrong = make_url(store_spec).set(password="not-the-password").render_as_string(hide_password=False)
    with pytest.raises(StoreError) as error:
        open_store(wrong)
    message = str(error.value)
    assert "cannot open the store" in message and "\n" not in message and "not-the-password" not in message


@pytest.mark.parametrize("sample_id", ["Ünïcödé-血液", "Ä-1", "S 2026.01_7", "s" * 190])
def test_a_sample_id_of_letters_of_any_script_is_kept_and_found_again(store, tmp_path, sample_id):
    with store.session() as session:
        record_count(session, store.photos, counted_doc(tmp_path / "in", sample_id), "tia")
    with store.session() as session:
        assert find(session, sample_id).sample_id == sample_id
