"""Open a sample store: SQLite (one file, the default) or PostgreSQL (by URL), upgraded to the current schema.

``open_store(spec)`` takes ``--store``'s value: a file path, an ``sqlite:///`` or ``postgresql://`` URL,
or None for ``$BLOODCELL_STORE`` or else ``store.sqlite`` in the user data folder. A database that is
not a bloodcell store (another program's, a damaged file, or one made by a newer bloodcell) is refused
in one sentence before anything is written to it; an older store is upgraded by the Alembic migrations
shipped in this package. Photos are files named by their SHA-256 in a folder beside the SQLite file
(``<stem>-photos``), or for PostgreSQL in ``$BLOODCELL_PHOTOS`` / the user data folder.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from platformdirs import user_data_path
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from bloodcell.store.errors import ConflictError, StoreError
from bloodcell.store.photos import PhotoFolder

STORE_ENV = "BLOODCELL_STORE"
PHOTOS_ENV = "BLOODCELL_PHOTOS"
SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass
class Store:
    """An open store: ``session()`` for a transaction, ``photos`` for the photo files, ``where`` to name it."""

    engine: Engine
    photos: PhotoFolder
    where: str

    def __post_init__(self) -> None:
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed at the end, rolled back on any error; a stale write raises ConflictError."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except StaleDataError:
                session.rollback()
                raise ConflictError("the sample was changed by someone else since it was read: reload it and "
                                    "make the change again") from None
            except BaseException:
                session.rollback()
                raise

    def close(self) -> None:
        self.engine.dispose()


def can_hold(session: Session, text: str) -> bool:
    """Whether the store's text columns can hold ``text``: PostgreSQL's hold no NUL character (a query naming one
    fails in its driver), SQLite's can. A lookup of a name it cannot hold finds nothing."""
    return "\x00" not in text or session.get_bind().dialect.name != "postgresql"


def default_store() -> Path:
    return user_data_path("bloodcell", appauthor=False) / "store.sqlite"


#: What to do about a store that is not there (a mistyped path, or one not made yet).
_MAKE_ONE = ("check the path; a store is made by counting into it (bloodcell count PHOTOS --store STORE) or by "
             "adding its first admin (bloodcell users add NAME --role admin --store STORE)")


def open_store(spec: str | Path | None = None, *, create: bool = True) -> Store:
    """Open (creating or upgrading) the store ``spec``; StoreError in one sentence when it cannot be used. With
    ``create=False`` (a command that only reads or changes samples or users already kept), a missing SQLite file
    or an empty database is refused instead of being made a new, empty store."""
    spec = spec if spec not in (None, "") else os.environ.get(STORE_ENV) or default_store()
    text_spec = str(spec)
    if "://" in text_spec:
        url = make_url(text_spec)
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        if url.get_backend_name() == "sqlite":
            return _open_sqlite(Path(url.database or ""), create)
        if url.get_backend_name() != "postgresql":
            raise StoreError(f"{url.render_as_string(hide_password=True)}: a store is an SQLite file or a "
                             "postgresql:// URL")
        photos = Path(os.environ.get(PHOTOS_ENV) or user_data_path("bloodcell", appauthor=False) / "photos")
        return _prepared(create_engine(url, pool_pre_ping=True), PhotoFolder(photos),
                         url.render_as_string(hide_password=True), create)
    return _open_sqlite(Path(spec), create)


def _open_sqlite(path: Path, create: bool) -> Store:
    if not path.name:
        raise StoreError("give the store as a file path, e.g. --store lab.sqlite")
    if path.is_dir():
        raise StoreError(f"{path}: is a folder; give the store's file, e.g. {path / 'store.sqlite'}")
    if not create and not path.exists():
        raise StoreError(f"no sample store at {path}: {_MAKE_ONE}")
    if path.exists() and path.stat().st_size:
        _check_sqlite_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{path.parent}: cannot create the store's folder ({exc.strerror or exc})") from None
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    return _prepared(engine, PhotoFolder(path.with_name(f"{path.stem}-photos")), str(path), create)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """Foreign keys enforced; write-ahead log (one fsync per commit, readers never blocked by the writer)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.close()


def _check_sqlite_file(path: Path) -> None:
    """Refuse a file that is not a readable SQLite database, reading it only (read-only, no journal)."""
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the store ({exc.strerror or exc})") from None
    if header != SQLITE_HEADER:
        raise StoreError(f"{path}: is not a bloodcell store (not an SQLite database); it was left unchanged")
    try:
        # immutable: no lock, journal or shared-memory file is made beside a file that may not be ours
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            connection.execute("PRAGMA quick_check").fetchall()
            tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            revisions = ({row[0] for row in connection.execute("SELECT version_num FROM alembic_version")}
                         if "alembic_version" in tables else set())
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: the store is damaged ({exc}); it was left unchanged: restore it from a "
                         "backup") from None
    _check_is_store(tables - {"sqlite_sequence"}, revisions, str(path))


def _prepared(engine: Engine, photos: PhotoFolder, where: str, create: bool) -> Store:
    """Check the database is a bloodcell store (or empty, when ``create``), then bring it to the current schema."""
    with _migrations() as config:
        try:
            with engine.begin() as connection:
                tables = set(inspect(connection).get_table_names())
                if not create and not tables - {"sqlite_sequence"}:
                    raise StoreError(f"no sample store at {where}: the database is empty; {_MAKE_ONE}")
                revisions = ({row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))}
                             if "alembic_version" in tables else set())
                _check_is_store(tables, revisions, where)
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except (DBAPIError, SQLAlchemyError) as exc:
            engine.dispose()
            raise StoreError(f"{where}: cannot open the store ({_reason(exc)})") from None
        except StoreError:
            engine.dispose()
            raise
    return Store(engine, photos, where)


def _check_is_store(tables: set[str], revisions: set[str], where: str) -> None:
    """StoreError unless the database is empty or a bloodcell store of a schema revision this version knows."""
    if not tables:
        return
    if "alembic_version" not in tables:
        raise StoreError(f"{where}: is not a bloodcell store (it holds other tables: "
                         f"{', '.join(sorted(tables)[:5])}); it was left unchanged")
    with _migrations() as config:
        known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    unknown = revisions - known
    if unknown:
        raise StoreError(f"{where}: was made by a newer bloodcell or another program (schema revision "
                         f"{', '.join(sorted(unknown))}); it was left unchanged: upgrade bloodcell")


def _reason(exc: Exception) -> str:
    original = getattr(exc, "orig", None) or exc
    return str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__


@contextmanager
def _migrations() -> Iterator[Config]:
    """The Alembic configuration of the migrations shipped in this package (found via importlib.resources)."""
    with as_file(files("bloodcell.store") / "migrations") as folder:
        config = Config()
        config.set_main_option("script_location", str(folder))
        yield config


def head_revision() -> str:
    with _migrations() as config:
        return ScriptDirectory.from_config(config).get_current_head()


def upgrade_to(engine: Engine, revision: str) -> None:
    """Bring a database to ``revision`` (tests build older stores with it)."""
    with _migrations() as config, engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
