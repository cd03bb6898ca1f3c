"""The index database: engine, connection settings and schema migrations.

SQLite is the embedded default. It runs in WAL mode with `synchronous=FULL` so that a committed
transaction survives a power cut, and every write transaction starts with `BEGIN IMMEDIATE` so that
concurrent writers queue on the database lock instead of failing half-way with "database is locked".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import ConnectionPoolEntry

from storage.errors import IndexUnavailable

_MIGRATIONS = Path(__file__).parent / "migrations"


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
