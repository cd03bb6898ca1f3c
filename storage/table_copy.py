"""Copying the index's tables from one database to another, and proving the copy, for
`arkiv migrate` (`arkiv/migration.py` runs the phases, records the audit events and judges).

Only `storage` speaks SQL, so everything of the migration that does lives here: which tables are
copied in which order and how (`table_plan`), copying a table's rows in batches that each commit
on their own (`TableCopier.copy`), and a count and digest of each table's rows on both sides
(`TableCopier.compare`). The core gets plain records back: names, numbers, digests.

Every row is copied verbatim (same keys, same audit sequence numbers and hashes), so the target
can be proved equal row for row, and a copy interrupted at any moment is continued by the next
run, which finds in the target how far the last one came.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Table,
    and_,
    delete,
    false,
    func,
    select,
    text,
    tuple_,
    union,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from storage import models
from storage.database import create_index_engine, upsert_insert
from storage.errors import IndexUnavailable, StorageError

__all__ = [
    "CopyProgress",
    "DatabaseFailed",
    "Kind",
    "PlannedTable",
    "ReferencedObject",
    "TableComparison",
    "TableCopier",
    "TableFingerprint",
    "UnknownTables",
    "copy_plan",
    "describe_url",
    "table_plan",
]

REFERENCE_BATCH = 1000
"""Index rows read at once while listing the objects they refer to."""

_MODULUS = 1 << 256


class Kind(Enum):
    APPEND = "append"
    """Rows are only ever added, under growing keys: continue after the target's highest key."""
    SYNC = "sync"
    """Rows change in place: every row is written again (insert or update)."""
    MIRROR = "mirror"
    """Rows change and are deleted: written again, and rows the source no longer has removed."""


_PLAN: tuple[tuple[str, Kind], ...] = (
    # The audit log first: a target with any rows then always shows whose log it continues.
    ("audit_events", Kind.APPEND),
    ("audit_patients", Kind.APPEND),
    ("audit_counties", Kind.APPEND),
    ("audit_checkpoints", Kind.APPEND),
    ("break_glass_grants", Kind.APPEND),
    # A reconciliation changes a patient's name and birth date (accept) and a study's patient
    # (merge, split, undo) in place, so these two are written again in full.
    ("patients", Kind.SYNC),
    ("studies", Kind.SYNC),
    ("series", Kind.APPEND),
    ("instances", Kind.APPEND),
    ("instance_conflicts", Kind.APPEND),
    ("photos", Kind.APPEND),
    ("media_blobs", Kind.APPEND),
    # Patient reconciliation: only ever added, except that a redirect is keyed by its study.
    ("patient_aliases", Kind.APPEND),
    ("patient_names", Kind.APPEND),
    ("patient_changes", Kind.APPEND),
    ("redirected_studies", Kind.SYNC),
    ("users", Kind.SYNC),
    ("web_sessions", Kind.MIRROR),
    # How far the log was forwarded to syslog: the scale-out forwarder continues from there.
    ("audit_forward_cursor", Kind.SYNC),
    # Last: the head moves to the source's only once every event before it is in place.
    ("audit_chain_head", Kind.SYNC),
)

_REFERENCING = ("instances", "instance_conflicts", "media_blobs")
"""The tables whose rows refer to objects in the blob store."""

_OWNED = ("studies", "instance_conflicts", "photos", "users", "audit_counties")
"""The tables whose rows name the county they belong to."""


class UnknownTables(StorageError):
    """storage/models.py has a table the plan does not say how to copy: copying the others
    would leave it behind, so nothing is copied."""


class DatabaseFailed(IndexUnavailable):
    """A database failed while tables were copied or compared (a connection lost half-way).
    What was committed stays: a new run continues from there. The message is the driver's."""


@dataclass(frozen=True)
class PlannedTable:
    """One table of the plan, by name, with how it is copied."""

    name: str
    kind: Kind


@dataclass(frozen=True)
class TableFingerprint:
    """A table's rows on one side: how many, and the sum of their SHA-256 (mod 2^256), equal
    for the same rows in any order and for the same values whichever database returned them."""

    name: str
    rows: int
    digest: int


@dataclass(frozen=True)
class TableComparison:
    """A table's fingerprints in the source and the target. For an insert-only table the target
    counts only the rows within the source's keys, and `later` the rows it holds beyond them
    (written once the target went live); for the others it counts every row and `later` is 0."""

    source: TableFingerprint
    target: TableFingerprint
    later: int = 0


@dataclass(frozen=True)
class ReferencedObject:
    """An object an index row refers to, with the SHA-256 (lower-case hex) and size recorded
    when it was received."""

    key: str
    sha256: str
    size: int


class CopyProgress(Protocol):
    """Told how far the copy of one table has come."""

    def counted(self, total: int, done: int) -> None:
        """The source holds `total` rows, of which `done` are in the target already."""
        ...

    def copied(self, rows: int) -> None:
        """Another batch of `rows` rows is committed in the target."""
        ...


def table_plan() -> list[tuple[Table, Kind]]:
    """The index's tables in copying order (no row before a row it refers to), each with how it
    is copied. Raises UnknownTables when storage/models.py has a table the plan does not know."""
    tables = models.Base.metadata.tables
    planned = {name for name, _ in _PLAN}
    unknown = sorted(set(tables) - planned)
    if unknown:
        raise UnknownTables(
            f"the index has tables the migration does not know how to copy: {', '.join(unknown)} "
            "(storage/table_copy.py needs to learn them)"
        )
    return [(tables[name], kind) for name, kind in _PLAN if name in tables]


def copy_plan() -> list[PlannedTable]:
    """`table_plan` as plain records, for the core, which names tables but never holds them."""
    return [PlannedTable(table.name, kind) for table, kind in table_plan()]


def describe_url(url: str) -> str:
    """A database URL without its password, for messages and the audit log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "the target database"


class TableCopier:
    """The index tables of the database at `source_url`, copied to and compared with those of
    the database at `target_url` (both with the schema at head: open an `Index` on each first).

    Each method reads in short transactions of its own; SQLAlchemy's errors leave as
    DatabaseFailed. Raises UnknownTables when the plan does not cover every table.
    """

    def __init__(self, source_url: str, target_url: str) -> None:
        self._plan = {table.name: (table, kind) for table, kind in table_plan()}
        self._src: Engine = create_index_engine(source_url)
        self._tgt: Engine = create_index_engine(target_url)

    def close(self) -> None:
        self._src.dispose()
        self._tgt.dispose()

    # -- what the databases hold ---------------------------------------------------------------

    def target_holds_rows(self) -> bool:
        """Whether any table of the target has a row."""
        with _translated(), self._tgt.connect() as conn:
            return any(
                conn.execute(select(func.count()).select_from(table)).scalar_one()
                for table, _ in self._plan.values()
            )

    def source_counties(self) -> tuple[str, ...]:
        """Every county the source's data belongs to: owners of studies, kept conflicts,
        accounts and audit events, sorted."""
        tables = models.Base.metadata.tables
        stmt = union(*(select(tables[name].c.county) for name in _OWNED))
        with _translated(), self._src.connect() as conn:
            return tuple(sorted(str(c) for c in conn.execute(stmt).scalars()))

    def referenced_objects(self, batch: int = REFERENCE_BATCH) -> Iterator[ReferencedObject]:
        """Every object a row of the source refers to (instances, then kept conflicts), one per
        row, read `batch` rows at a time in key order."""
        for name in _REFERENCING:
            table = models.Base.metadata.tables[name]
            last = 0
            while True:
                stmt = (
                    select(table.c.id, table.c.blob_key, table.c.sha256, table.c.size)
                    .where(table.c.id > last)
                    .order_by(table.c.id)
                    .limit(batch)
                )
                with _translated(), self._src.connect() as conn:
                    rows = conn.execute(stmt).all()
                if not rows:
                    break
                for row in rows:
                    yield ReferencedObject(
                        str(row.blob_key), str(row.sha256).lower(), int(row.size)
                    )
                last = int(rows[-1].id)

    def referenced_totals(self) -> tuple[int, int]:
        """(number, total size in bytes) of `referenced_objects`."""
        count = size = 0
        with _translated(), self._src.connect() as conn:
            for name in _REFERENCING:
                table = models.Base.metadata.tables[name]
                row = conn.execute(
                    select(func.count(), func.coalesce(func.sum(table.c.size), 0))
                ).one()
                count += int(row[0])
                size += int(row[1])
        return count, size

    # -- copying -------------------------------------------------------------------------------

    def copy(self, name: str, batch_size: int, progress: CopyProgress) -> None:
        """Copy what the target lacks of table `name`, `batch_size` rows per transaction, as
        its kind says; then, on PostgreSQL, move the table's serial key past the copied keys."""
        table, kind = self._plan[name]
        with _translated():
            if kind is Kind.APPEND:
                self._copy_appended(table, batch_size, progress)
            else:
                self._copy_changing(table, batch_size, progress, mirror=kind is Kind.MIRROR)
            self._advance_sequence(table)

    def _copy_appended(self, table: Table, batch_size: int, progress: CopyProgress) -> None:
        """Rows in key order, each batch one transaction, so the target always holds a prefix
        of the source's rows: a new run continues after the target's highest key. With a
        composite key the rows of the last leading key are sent again and ignored, so that the
        order of the other key columns (a collation) never matters between the two databases."""
        keys = list(table.primary_key.columns)
        lead = keys[0]
        with self._tgt.connect() as conn:
            resume = conn.execute(select(func.max(lead))).scalar()
        stmt = select(table)
        with self._src.connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            done = 0
            if resume is not None:
                before = lead < resume if len(keys) > 1 else lead <= resume
                stmt = stmt.where(lead >= resume if len(keys) > 1 else lead > resume)
                done = int(
                    conn.execute(select(func.count()).select_from(table).where(before)).scalar_one()
                )
        progress.counted(total, done)
        last: tuple[Any, ...] | None = None
        while True:
            batch = stmt
            if last is not None:
                batch = batch.where(
                    tuple_(*keys) > tuple_(*last) if len(keys) > 1 else lead > last[0]
                )
            batch = batch.order_by(*keys).limit(batch_size)
            with self._src.connect() as conn:
                rows = [dict(row) for row in conn.execute(batch).mappings()]
            if not rows:
                return
            with self._tgt.begin() as conn:
                conn.execute(upsert_insert(conn, table).on_conflict_do_nothing(), rows)
            progress.copied(len(rows))
            last = tuple(rows[-1][column.name] for column in keys)

    def _copy_changing(
        self, table: Table, batch_size: int, progress: CopyProgress, mirror: bool
    ) -> None:
        """Small tables whose rows change: every row written again, in batches."""
        keys = list(table.primary_key.columns)
        names = [column.name for column in keys]
        with self._src.connect() as conn:
            rows = [dict(row) for row in conn.execute(select(table).order_by(*keys)).mappings()]
        progress.counted(len(rows), 0)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            with self._tgt.begin() as conn:
                conn.execute(_upsert(conn, table, names), chunk)
            progress.copied(len(chunk))
        if not mirror:
            return
        wanted = {tuple(row[name] for name in names) for row in rows}
        with self._tgt.begin() as conn:
            for present in conn.execute(select(*keys)).all():
                if tuple(present) not in wanted:
                    conn.execute(
                        delete(table).where(
                            and_(*(c == v for c, v in zip(keys, present, strict=True)))
                        )
                    )

    def _advance_sequence(self, table: Table) -> None:
        """PostgreSQL hands out serial keys from a sequence the copy (with its explicit keys)
        never moved: set it past the copied keys, or the target's first new row would fail."""
        keys = list(table.primary_key.columns)
        if self._tgt.dialect.name != "postgresql" or len(keys) != 1:
            return
        if not isinstance(keys[0].type, Integer):
            return
        with self._tgt.begin() as conn:
            sequence = conn.execute(
                text("SELECT pg_get_serial_sequence(:table, :column)"),
                {"table": table.name, "column": keys[0].name},
            ).scalar()
            if sequence is None:  # not a serial column (audit sequence numbers are given)
                return
            quote = conn.dialect.identifier_preparer.quote
            conn.execute(
                text(
                    f"SELECT setval(:sequence, COALESCE((SELECT MAX({quote(keys[0].name)}) "
                    f"FROM {quote(table.name)}), 0) + 1, false)"
                ),
                {"sequence": sequence},
            )

    # -- proof ---------------------------------------------------------------------------------

    def compare(self, name: str) -> TableComparison:
        """Fingerprints of table `name` in the source and the target: counts and a digest over
        every value of every row, so that equal fingerprints mean the same rows, not only as
        many. An insert-only table's target is fingerprinted within the source's keys."""
        table, kind = self._plan[name]
        with _translated():
            with self._src.connect() as conn:
                source = _fingerprint(conn, name, select(table))
            if kind is not Kind.APPEND:
                with self._tgt.connect() as conn:
                    return TableComparison(source, _fingerprint(conn, name, select(table)))
            lead = next(iter(table.primary_key.columns))
            with self._src.connect() as conn:
                bound = conn.execute(select(func.max(lead))).scalar()
            within = false() if bound is None else lead <= bound
            with self._tgt.connect() as conn:
                target = _fingerprint(conn, name, select(table).where(within))
                later = int(
                    conn.execute(
                        select(func.count()).select_from(table).where(~within)
                    ).scalar_one()
                )
        return TableComparison(source, target, later)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as exc:
        raise DatabaseFailed(str(exc)) from exc


def _upsert(conn: Connection, table: Table, keys: list[str]) -> Any:
    stmt = upsert_insert(conn, table)
    changing = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    if not changing:
        return stmt.on_conflict_do_nothing()
    return stmt.on_conflict_do_update(index_elements=keys, set_=changing)


def _fingerprint(conn: Connection, name: str, stmt: Any) -> TableFingerprint:
    """The rows `stmt` selects, streamed: their number, and the sum of the SHA-256 of each
    row's values as JSON (mod 2^256)."""
    count = total = 0
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(stmt)
    for row in result:
        encoded = json.dumps(list(row), ensure_ascii=False, separators=(",", ":"), default=str)
        total = (total + int.from_bytes(hashlib.sha256(encoded.encode()).digest(), "big")) % (
            _MODULUS
        )
        count += 1
    return TableFingerprint(name, count, total)
