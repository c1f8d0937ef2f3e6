"""Opening the result database: URL resolution, the engine (SQLite pragmas), migrations at start-up.

SQLite (the default) is a file ``pneumo.db`` under the data folder, in WAL mode with foreign keys on,
``synchronous=FULL`` and every transaction ``BEGIN IMMEDIATE`` (writers queue on ``busy_timeout`` instead of
failing mid-transaction). PostgreSQL needs only its URL: ``postgresql+psycopg://user@host:port/db``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pneumo.errors import ConfigError, StoreError
from pneumo.store.blobs import BlobStore

DATA_DIR_ENV = "PNEUMO_DATA_DIR"
DATABASE_ENV = "PNEUMO_DATABASE_URL"
DB_FILE = "pneumo.db"
BUSY_TIMEOUT_MS = 30_000


def data_dir(explicit: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The folder for the SQLite file and the image store: ``explicit``, else ``$PNEUMO_DATA_DIR``, else
    ``~/.local/share/pneumo``."""
    environ = os.environ if environ is None else environ
    if explicit is not None:
        return Path(explicit).expanduser()
    if environ.get(DATA_DIR_ENV):
        return Path(environ[DATA_DIR_ENV]).expanduser()
    return Path.home() / ".local" / "share" / "pneumo"


def database_url(explicit: str | None, folder: Path, environ: Mapping[str, str] | None = None) -> str:
    """``explicit``, else ``$PNEUMO_DATABASE_URL``, else ``sqlite:///<folder>/pneumo.db``."""
    environ = os.environ if environ is None else environ
    url = explicit or environ.get(DATABASE_ENV) or f"sqlite:///{(folder / DB_FILE).resolve()}"
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise ConfigError(f"not a database URL: {error}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql+psycopg://")
    return url


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys, FULL sync, a busy timeout and IMMEDIATE transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event below opens the transactions
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=FULL", f"busy_timeout={BUSY_TIMEOUT_MS}"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@dataclass
class Database:
    """The engine, a session factory and the content-addressed blob store (decoded images, heatmaps)."""

    engine: Engine
    blobs: BlobStore
    sessions: sessionmaker[Session]

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: committed on normal exit, rolled back on any error (database errors become
        ``StoreError``)."""
        try:
            with self.sessions.begin() as session:
                yield session
        except SQLAlchemyError as error:
            # not str(error): it holds the SQL parameters, which may include a patient id
            raise StoreError(f"database error ({type(error).__name__}); nothing was saved") from error

    def close(self) -> None:
        self.engine.dispose()


def open_database(url: str | None = None, folder: str | os.PathLike | None = None, migrate: bool = True) -> Database:
    """Open (creating if needed) the database at ``url`` (default: SQLite under ``data_dir(folder)``) and bring
    its schema to the newest migration. Blobs live under ``<data dir>/blobs``."""
    from pneumo.store.migrate import upgrade

    root = data_dir(folder)
    engine = make_engine(database_url(url, root))
    try:
        if migrate:
            upgrade(engine)
    except SQLAlchemyError as error:
        engine.dispose()
        raise StoreError(f"cannot open the database: {type(error).__name__}: {error}") from error
    return Database(engine, BlobStore(root / "blobs"), sessionmaker(engine, expire_on_commit=False))
