"""Leases: a role that exactly one of the processes sharing an index holds at a time.

Several `arkiv` processes (on several machines) may share one index. Some work must be done by
one of them only — signing audit checkpoints, forwarding the audit log — and must move to another
when that one dies. A `Lease` is that role: `held()` says whether this process holds it now, and
takes it when it is free; the holder keeps it until it calls `release()` or dies.

- PostgreSQL: a session-level advisory lock, `pg_try_advisory_lock(namespace, key)` with the key
  derived from the lease name, on a connection of its own (outside the engine's pool) that stays
  open. The server frees the lock when the session ends: the process exits or is killed, its
  connection breaks, or an operator ends it (`pg_terminate_backend`). `held()` makes a round
  trip each time, so the holder notices a lost connection at its next check; the connection has
  TCP keepalives and a TCP user timeout on both ends, so a node cut off from the database loses
  the lock on the server, and notices on its side, within about half a minute rather than the
  system default of hours. A lease needs a direct connection or a session-pooling proxy: under
  transaction pooling (PgBouncer's default) a session lock means nothing.
- SQLite file: a non-blocking `flock` on `<database>.lease-<name>` next to the database file,
  which the kernel releases when the process ends however it ends. The holder writes who it is
  into the file, for the others' log.
- In-memory SQLite: one process only, so the lease is always held.

Between a holder losing its lease and noticing (at most one check interval) two processes may
both think they hold it; work guarded by a lease must stay correct, if redundant, when that
happens (see `arkiv.audit_duties`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import socket
import threading
import zlib
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from storage.database import is_sqlite, normalise_url, sqlite_path

__all__ = [
    "LEASE_NAMESPACE",
    "FileLease",
    "Lease",
    "LocalLease",
    "PostgresLease",
    "lease_key",
    "open_lease",
    "this_process",
]

log = logging.getLogger(__name__)

LEASE_NAMESPACE = 0x61726B76
"""`arkv`: the first key of every lease's two-key advisory lock. Two-key locks are a key space of
their own, apart from the one-key lock that schema upgrades queue on (`storage.database`)."""

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_KEEPALIVE_IDLE_SECONDS = 10
_KEEPALIVE_INTERVAL_SECONDS = 5
_KEEPALIVE_COUNT = 3
_TCP_USER_TIMEOUT_MS = 20_000
_IDENTITY_LIMIT = 200


def lease_key(name: str) -> int:
    """The second key of the lease's advisory lock: CRC-32 of the name, as a positive int4."""
    return zlib.crc32(name.encode("ascii")) & 0x7FFFFFFF


def this_process() -> str:
    """How a holder names itself in the others' log: host name and process id."""
    return f"{socket.gethostname()} pid {os.getpid()}"


class Lease(ABC):
    """An exclusive role among all processes sharing an index, held until released or until the
    holder dies. Thread-safe; usable as a context manager (released on exit)."""

    def __init__(self, name: str) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"lease name {name!r}: lower-case letters, digits and dashes only")
        self.name = name
        self._lock = threading.Lock()

    @abstractmethod
    def held(self) -> bool:
        """True while this process holds the lease; when it does not, try to take it first.

        Except right after a loss: the call that finds the lease lost returns False without
        trying again, so that the caller learns of the loss (and stops what the lease guards)
        and the other processes get a turn; the next call competes again as usual.
        """

    @abstractmethod
    def release(self) -> None:
        """Give the lease up (if held), so another process may take it at once."""

    def holder(self) -> str:
        """Best effort: who holds the lease (`this_process()` of the holder), or "" if unknown."""
        return ""

    def close(self) -> None:
        self.release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_lease(url: str, name: str) -> Lease:
    """The lease called `name` among the processes sharing the index at `url`."""
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is None:
            return LocalLease(name)
        return FileLease(path.with_name(f"{path.name}.lease-{name}"), name)
    return PostgresLease(url, name)


class LocalLease(Lease):
    """An in-memory index has one process: it always holds every lease."""

    def held(self) -> bool:
        return True

    def release(self) -> None:
        return None

    def holder(self) -> str:
        return this_process()


class FileLease(Lease):
    """`flock(LOCK_EX | LOCK_NB)` on a file beside the SQLite database.

    Locks of `flock` belong to the open file, so two leases in one process exclude each other as
    two processes do. A lock on a file that was since removed or replaced guards nothing; the
    holder notices that at its next check and takes the lock on the file now in place.
    """

    def __init__(self, path: Path, name: str) -> None:
        super().__init__(name)
        self.path = path
        self._fd: int | None = None

    def held(self) -> bool:
        with self._lock:
            if self._fd is not None:
                if self._same_file(self._fd):
                    return True
                log.warning(
                    "lease %s lost: %s was removed or replaced; another process may hold it now",
                    self.name,
                    self.path,
                )
                self._close()
                return False
            return self._try_lock()

    def release(self) -> None:
        with self._lock:
            self._close()

    def holder(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return ""

    def _try_lock(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            log.warning("lease %s: cannot open %s: %s", self.name, self.path, exc)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            log.warning("lease %s: cannot lock %s: %s", self.name, self.path, exc)
            return False
        self._fd = fd
        with contextlib.suppress(OSError):  # only for the others' log
            os.ftruncate(fd, 0)
            os.pwrite(fd, (this_process() + "\n").encode()[:_IDENTITY_LIMIT], 0)
        return True

    def _same_file(self, fd: int) -> bool:
        try:
            mine, current = os.fstat(fd), os.stat(self.path)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino)

    def _close(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None


_TRY_LOCK = "SELECT pg_try_advisory_lock(%s::integer, %s::integer)"
_UNLOCK = "SELECT pg_advisory_unlock(%s::integer, %s::integer)"
_STILL_OURS = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
    " AND classid = %s::integer::oid AND objid = %s::integer::oid"
    " AND pid = pg_backend_pid() AND granted)"
)
_HOLDER = (
    "SELECT a.application_name, host(a.client_addr), l.pid FROM pg_locks l"
    " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.objsubid = 2"
    " AND l.classid = %s::integer::oid AND l.objid = %s::integer::oid AND l.granted"
)
_SESSION_SETTINGS = (
    # The server drops a vanished client (and its lock) within about half a minute...
    ("tcp_keepalives_idle", str(_KEEPALIVE_IDLE_SECONDS)),
    ("tcp_keepalives_interval", str(_KEEPALIVE_INTERVAL_SECONDS)),
    ("tcp_keepalives_count", str(_KEEPALIVE_COUNT)),
    ("tcp_user_timeout", str(_TCP_USER_TIMEOUT_MS)),
    # ...but never a live one for being idle between checks.
    ("idle_session_timeout", "0"),
)


class PostgresLease(Lease):
    """A session-level advisory lock on a dedicated psycopg connection, kept open."""

    def __init__(self, url: str, name: str, *, connect_timeout: int = 10) -> None:
        super().__init__(name)
        self._conninfo = _libpq_url(url)
        self._key = lease_key(name)
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._locked = False
        self._unreachable = False

    def held(self) -> bool:
        with self._lock:
            if self._locked:
                if self._still_ours():
                    return True
                self._locked = False
                log.warning(
                    "lease %s lost: the connection to the index dropped or the lock is gone; "
                    "another process may hold it now",
                    self.name,
                )
                return False
            return self._try_lock()

    def release(self) -> None:
        with self._lock:
            if self._locked and self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.execute(_UNLOCK, (LEASE_NAMESPACE, self._key))
            self._locked = False
            self._discard()

    def holder(self) -> str:
        with self._lock:
            conn = self._connection()
            if conn is None:
                return ""
            try:
                row = conn.execute(_HOLDER, (LEASE_NAMESPACE, self._key)).fetchone()
            except psycopg.Error:
                self._discard()
                return ""
        if row is None:
            return ""
        name, address, pid = row
        if name and str(name).startswith("arkiv "):
            return str(name)[len("arkiv ") :]
        return f"database session {pid}" + (f" from {address}" if address else "")

    @property
    def backend_pid(self) -> int | None:
        """The server process of this lease's connection (for tests and diagnostics)."""
        conn = self._conn
        return None if conn is None or conn.closed else int(conn.info.backend_pid)

    def _still_ours(self) -> bool:
        conn = self._conn
        if conn is None or conn.closed:
            return False
        try:
            row = conn.execute(_STILL_OURS, (LEASE_NAMESPACE, self._key)).fetchone()
        except psycopg.Error:
            self._discard()
            return False
        return bool(row and row[0])

    def _try_lock(self) -> bool:
        for _ in range(2):  # a connection kept from an earlier try may have died since: once more
            conn = self._connection()
            if conn is None:
                return False
            try:
                row = conn.execute(_TRY_LOCK, (LEASE_NAMESPACE, self._key)).fetchone()
            except psycopg.Error:
                self._discard()
                continue
            self._locked = bool(row and row[0])
            return self._locked
        return False

    def _connection(self) -> psycopg.Connection[Any] | None:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        try:
            conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                application_name=f"arkiv {this_process()}"[:63],
                keepalives=1,
                keepalives_idle=_KEEPALIVE_IDLE_SECONDS,
                keepalives_interval=_KEEPALIVE_INTERVAL_SECONDS,
                keepalives_count=_KEEPALIVE_COUNT,
                tcp_user_timeout=_TCP_USER_TIMEOUT_MS,
            )
        except psycopg.Error as exc:
            if not self._unreachable:
                log.warning("lease %s: cannot reach the index database: %s", self.name, exc)
            self._unreachable = True
            return None
        self._unreachable = False
        for setting, value in _SESSION_SETTINGS:
            with contextlib.suppress(psycopg.Error):  # older servers lack some of these
                conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
        self._conn = conn
        return conn

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                conn.close()


def _libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq takes it (`postgresql://…`, password included)."""
    parsed = make_url(normalise_url(url)).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)
