"""Bulk loading of audit events, and the tools to time searches over them (benchmarks only).

The archive appends audit events one at a time, each inside the transaction of what it records
(`IndexTransaction.append_audit`, an fsync per commit). That is right for the archive and far too
slow to build the ten million events of a year's log for a benchmark. `bulk_append_audit` writes
exactly the same rows — the same tables, the same JSON encodings, the same hash chain, computed by
the caller's `link` as in `append_audit` — but in large transactions with journal and fsync
switched off, and it builds the secondary indexes of the audit tables once at the end from their
own `CREATE INDEX` statements (one sort per index instead of ten million random B-tree inserts).
The result cannot be told apart from a log the archive wrote: `arkiv audit verify` passes, and
every index the migrations define is there, with its original definition.

Only for a database nobody else has open, such as a benchmark's staging copy: with the journal off
a crash in the middle leaves a damaged file, which the caller throws away. SQLite only.

Also here, because only `storage` touches the database file: `evict_from_page_cache` (cold-cache
timings) and `query_plans` (SQLite's plan for each statement a call runs, to explain a slow search).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event

from storage.database import sqlite_path
from storage.errors import IndexUnavailable
from storage.index import (
    AUDIT_EVENT_COLUMNS,
    CHAIN,
    CHAIN_GENESIS,
    ChainLink,
    Index,
    audit_rows,
)
from storage.records import NewAuditEvent

AUDIT_TABLES = ("audit_events", "audit_patients", "audit_counties")

_INSERT_EVENT = (
    f"INSERT INTO audit_events ({', '.join(AUDIT_EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in AUDIT_EVENT_COLUMNS)})"
)
_INSERT_PATIENT = "INSERT INTO audit_patients (seq, patient_id) VALUES (?, ?)"
_INSERT_COUNTY = "INSERT INTO audit_counties (seq, county) VALUES (?, ?)"

EventRow = tuple[Any, ...]


@dataclass(frozen=True)
class BulkLoadResult:
    """What a bulk load appended and how long its two phases took."""

    events: int
    first_seq: int
    last_seq: int
    head_hash: str
    insert_seconds: float
    index_seconds: float
    database_bytes: int


def event_rows(
    seq: int, prev_hash: str, digest: str, ev: NewAuditEvent
) -> tuple[EventRow, list[tuple[int, str]], list[tuple[int, str]]]:
    """The rows `IndexTransaction.append_audit` writes for one event (`audit_rows`), as tuples
    for `executemany`."""
    row, patients, counties = audit_rows(seq, prev_hash, digest, ev)
    return (
        tuple(row[c] for c in AUDIT_EVENT_COLUMNS),
        [(p["seq"], p["patient_id"]) for p in patients],
        [(c["seq"], c["county"]) for c in counties],
    )


def _database(url: str) -> Path:
    path = sqlite_path(url)
    if path is None:
        raise IndexUnavailable(f"bulk loading needs a SQLite database file, not {url}")
    return path


def _secondary_indexes(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """Name and `CREATE INDEX` text of the audit tables' own indexes (not the primary keys')."""
    marks = ", ".join("?" for _ in AUDIT_TABLES)
    rows = conn.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        f"AND tbl_name IN ({marks}) ORDER BY name",
        AUDIT_TABLES,
    ).fetchall()
    return [(str(name), str(sql)) for name, sql in rows]


def _head(conn: sqlite3.Connection) -> tuple[int, str]:
    row = conn.execute(
        "SELECT seq, hash FROM audit_chain_head WHERE chain = ?", (CHAIN,)
    ).fetchone()
    last = conn.execute("SELECT max(seq) FROM audit_events").fetchone()[0] or 0
    seq, digest = (0, CHAIN_GENESIS) if row is None else (int(row[0]), str(row[1]))
    if seq != last:
        raise IndexUnavailable(f"chain head says event {seq} but the log ends at event {last}")
    return seq, digest


def bulk_append_audit(
    url: str,
    events: Iterable[NewAuditEvent],
    link: ChainLink,
    *,
    batch_size: int = 50_000,
    progress: Callable[[int], None] | None = None,
) -> BulkLoadResult:
    """Append `events` to the chain of the SQLite index at `url` (created and migrated if new).

    `link` computes each event's hash exactly as the archive does (`arkiv.audit.chain_hash`).
    The caller must have the database to itself for the whole load; see the module docstring.
    """
    path = _database(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    Index(url).close()  # creates the file and brings the schema to the newest revision
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA cache_size=-524288")  # 512 MiB
        conn.execute("PRAGMA threads=2")  # CREATE INDEX may sort with a helper thread
        seq, prev = _head(conn)
        first = seq + 1
        indexes = _secondary_indexes(conn)
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        started = time.perf_counter()
        rows: list[EventRow] = []
        patient_rows: list[tuple[int, str]] = []
        county_rows: list[tuple[int, str]] = []

        def flush() -> None:
            conn.execute("BEGIN")
            conn.executemany(_INSERT_EVENT, rows)
            conn.executemany(_INSERT_PATIENT, patient_rows)
            conn.executemany(_INSERT_COUNTY, county_rows)
            conn.execute(
                "INSERT INTO audit_chain_head (chain, seq, hash) VALUES (?, ?, ?) "
                "ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                (CHAIN, seq, prev),
            )
            conn.execute("COMMIT")
            rows.clear()
            patient_rows.clear()
            county_rows.clear()
            if progress is not None:
                progress(seq - first + 1)

        for ev in events:
            seq += 1
            digest = link(prev, seq, ev)
            row, patients, counties = event_rows(seq, prev, digest, ev)
            rows.append(row)
            patient_rows.extend(patients)
            county_rows.extend(counties)
            prev = digest
            if len(rows) >= batch_size:
                flush()
        if rows:
            flush()
        inserted = time.perf_counter()
        for _, sql in indexes:
            conn.execute(sql)
        indexed = time.perf_counter()
        conn.execute("PRAGMA locking_mode=NORMAL")
        conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise IndexUnavailable(f"bulk load into {path} failed: {exc}") from exc
    finally:
        conn.close()
    return BulkLoadResult(
        events=seq - first + 1,
        first_seq=first,
        last_seq=seq,
        head_hash=prev,
        insert_seconds=inserted - started,
        index_seconds=indexed - inserted,
        database_bytes=database_bytes(url),
    )


def database_bytes(url: str) -> int:
    """Size of the database file and its WAL, if any."""
    path = _database(url)
    total = 0
    for candidate in (path, path.with_name(path.name + "-wal")):
        if candidate.exists():
            total += candidate.stat().st_size
    return total


def evict_from_page_cache(url: str) -> None:
    """Ask the kernel to drop this database's clean pages from the page cache.

    For cold-cache timings without root and without disturbing anything else on the machine:
    only this file's pages go (`posix_fadvise(DONTNEED)`), and the next read comes from disk.
    """
    path = _database(url)
    for candidate in (path, path.with_name(path.name + "-wal")):
        if not candidate.exists():
            continue
        fd = os.open(candidate, os.O_RDONLY)
        try:
            os.fdatasync(fd)  # dirty pages cannot be dropped; write them out first
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class QueryPlan:
    """One statement a call ran, and SQLite's plan for it (indented as a tree)."""

    sql: str
    plan: tuple[str, ...]


def query_plans(index: Index, call: Callable[[], object]) -> list[QueryPlan]:
    """Run `call` and return the plan of every SELECT it sent to `index` (SQLite only).

    Plans come from `EXPLAIN QUERY PLAN` of the very statement text and parameters the index
    sent, so they show what the code asks for, not a hand-written approximation of it.
    """
    engine = index._engine
    captured: list[tuple[str, Any]] = []

    def listen(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", listen)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    plans: list[QueryPlan] = []
    with engine.connect() as conn:
        for statement, parameters in captured:
            result = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            depth: dict[int, int] = {0: -1}
            lines: list[str] = []
            for node, parent, _unused, detail in result.all():
                depth[int(node)] = depth.get(int(parent), -1) + 1
                lines.append("  " * depth[int(node)] + str(detail))
            plans.append(QueryPlan(sql=" ".join(statement.split()), plan=tuple(lines)))
    return plans
