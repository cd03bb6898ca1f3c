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
from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import ConnectionPoolEntry

from storage.errors import IndexUnavailable

_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x61726B6976  # "arkiv": the advisory lock schema upgrades queue on


class WriterQueue:
    """Lines up SQLite writers without SQLite's busy handler.

    SQLite lets one writer in at a time; the others poll with sleeps that grow to 100 ms, which
    starves a node receiving from several modalities at once. Writers of this process queue on a
    lock, and processes sharing the database (DICOM workers) on an advisory file lock, both of
    which wake the next writer the moment the lock is released.
    """

    def __init__(self, database: Path | None, *, serialise: bool = True) -> None:
        self._lock = threading.Lock()
        self._serialise = serialise
        self._path = database.with_name(database.name + ".writer-lock") if database else None
        self._fd: int | None = None

    @contextmanager
    def turn(self) -> Iterator[None]:
        if not self._serialise:  # PostgreSQL: writers run side by side; row locks order them
            yield
            return
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


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def normalise_url(url: str) -> str:
    """PostgreSQL URLs as operators write them (`postgresql://…`, `postgres://…`) use psycopg 3,
    the driver the archive ships with, rather than SQLAlchemy's default psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_index_engine(url: str) -> Engine:
    """An engine configured for the archive's durability and concurrency needs.

    PostgreSQL runs at READ COMMITTED with its defaults (`synchronous_commit=on`: a commit is on
    disk before it returns). Pooled connections are not pinged before use (a round trip on
    every transaction, a fifth of an ingest's index time): after a database restart or failover
    the first use of each stale connection fails, which invalidates the pool, and the caller's
    request fails cleanly (a C-STORE is answered 0xA700 and retried by the modality).
    """
    url = normalise_url(url)
    if is_sqlite(url):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 60, "isolation_level": None},
            pool_size=8,
            max_overflow=16,
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    if not url.startswith("postgresql"):
        raise IndexUnavailable(
            f"unsupported index database {url.split(':', 1)[0]!r}: use sqlite:/// or postgresql://"
        )
    return create_engine(
        url,
        pool_size=8,
        max_overflow=16,
        pool_timeout=30,
        connect_args={"connect_timeout": 10, "application_name": "arkiv"},
    )


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
                if connection.dialect.name == "postgresql":
                    # Nodes starting together take turns: the first upgrades, the others then
                    # find the schema at head (PostgreSQL's DDL is transactional).
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK}
                    )
                command.upgrade(config, "head")
    except Exception as exc:  # any driver error means the index is unusable
        raise IndexUnavailable(f"cannot prepare the index database: {exc}") from exc


def upsert_insert(conn: Connection, table: Table) -> Any:
    """INSERT with the dialect's ON CONFLICT clauses (`on_conflict_do_nothing`/`_do_update`):
    the index is SQLite or PostgreSQL, and both spell them the same in SQLAlchemy."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise IndexUnavailable(f"unsupported database dialect {conn.dialect.name}")
