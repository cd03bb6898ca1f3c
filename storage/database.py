"""The index database: engine, connection settings and schema migrations.

SQLite is the embedded default. It runs in WAL mode with `synchronous=FULL` so that a committed
transaction survives a power cut, and every write transaction starts with `BEGIN IMMEDIATE` so that
concurrent writers queue on the database lock instead of failing half-way with "database is locked".
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import ConnectionPoolEntry

from storage.errors import IndexUnavailable

_MIGRATIONS = Path(__file__).parent / "migrations"


class WriterQueue:
    """Lines up SQLite writers without SQLite's busy handler.

    SQLite lets one writer in at a time; the others poll with sleeps that grow to 100 ms, which
    starves a node receiving from several modalities at once. Writers of this process queue on a
    lock, and processes sharing the database (DICOM workers) on an advisory file lock, both of
    which wake the next writer the moment the lock is released.
    """

    def __init__(self, database: Path | None) -> None:
        self._lock = threading.Lock()
        self._path = database.with_name(database.name + ".writer-lock") if database else None
        self._fd: int | None = None

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._lock:
            if self._path is None:
                yield
                return
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o640)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases or in-memory SQLite)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix + ":memory:":
        return None
    return Path(url[len(prefix) :])


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'index.sqlite3'}"


def create_index_engine(url: str) -> Engine:
    """An engine configured for the archive's durability and concurrency needs."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 60, "isolation_level": None},
            pool_size=8,
            max_overflow=16,
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _configure_sqlite(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


WRITE_OPTION = "arkiv_write"


def _begin_immediate(connection: Any) -> None:
    """Writers take the lock up front; readers begin deferred and never wait for writers (WAL)."""
    if connection.get_execution_options().get(WRITE_OPTION):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe to call at every start."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    try:
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as connection:
            config.attributes["connection"] = connection
            with connection.begin():
                command.upgrade(config, "head")
    except Exception as exc:  # any driver error means the index is unusable
        raise IndexUnavailable(f"cannot prepare the index database: {exc}") from exc
