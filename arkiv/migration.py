"""`arkiv migrate`: move an embedded archive (SQLite index, files) to the scale-out backend
(PostgreSQL index, S3 bucket), verifying every object on the way and proving the result.

Three phases, each safe to interrupt at any moment (Ctrl-C, kill -9, a power cut) and to run
again, which continues where the last run stopped:

1. Objects. Every object an index row refers to is read from the source and hashed; an object
   whose content no longer matches the digest recorded at ingest is corrupt and is not copied
   (the run stops before any index row is written and names it: `arkiv fsck` first). Intact
   objects are stored in the bucket with their digest, which the S3 server checks on arrival.
   Objects the target already holds with the recorded digest are skipped: that is the resume.
2. Index rows. Every table, verbatim (same keys, same audit sequence numbers and hashes), in
   batches of one transaction each, in an order where no row arrives before what it refers to.
   Insert-only tables (the index of objects, the audit log, grants, checkpoints) continue after
   the highest key the target holds; the few tables whose rows change in place (accounts,
   sessions, the syslog cursor, the chain head) are written again whole. Objects go first so
   that no index row in the target ever refers to an object the target does not have. On
   PostgreSQL the serial keys' sequences are then set past the copied keys.
3. Proof. Per table, the number of rows and a digest over all their values are equal; the
   target's audit chain verifies from its first event and ends at the source's head; every
   indexed object is in the bucket with the recorded SHA-256 (`verify_read`: read and hashed).

The audit logs document the move: an Export event (PS3.15 110106: data leaves the system) in the
source before anything is copied, so the source's own chain records where its data went, and an
Import event (110107) in the target once the proof holds, recording the source's head. Both
concern every county whose data moved, so each county's auditors see them. Application Activity
(110100) is for the application starting and stopping, which a migration is not.

A second run after a completed migration finds that Import event right after the source's head
and only proves again (the target may have gone live since: its later rows are not counted, and
the tables whose rows change are not compared). A source used after its migration, or a target
holding another archive, is refused: the two audit logs differ at some event, which is named.

Files of the data directory that are not index rows (the audit signing key, an old syslog cursor)
are not copied; the report says which to install on the scale-out nodes.

The SQL is in `storage/table_copy.py` (the table plan, copying rows, fingerprints), as only
`storage` speaks to the database; the progress bar, the report and the command are in
`arkiv/migration_progress.py`. This module runs the phases, keeps the audit logs and judges.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from arkiv.audit import Actor, AuditLog, Event, EventType
from arkiv.audit_syslog import CURSOR_FILE
from arkiv.config import Settings
from arkiv.errors import AuditUnavailable
from arkiv.services import open_blob_store
from storage.blobs import BlobStore, FileBlobStore, sha256_of
from storage.database import normalise_url, sqlite_url
from storage.errors import BlobNotFound
from storage.index import Index
from storage.records import AuditEvent
from storage.table_copy import (
    DatabaseFailed,
    Kind,
    PlannedTable,
    ReferencedObject,
    TableCopier,
    UnknownTables,
    copy_plan,
    describe_url,
)

DEFAULT_BATCH = 1000
DEFAULT_WORKERS = 8
MIGRATION_DETAIL = "migration"
"""Key in the details of the migration's audit events: "started" (source) or "completed"."""

_LISTED = 20
"""How many keys a message names before it only counts the rest."""


class MigrationError(RuntimeError):
    """The migration cannot run, or go on, as things are; the message says what to do."""


class MigrationFailed(MigrationError):
    """A check failed (a corrupt source object, a target that does not match): nothing that
    would mark the migration as done was written."""


# -- progress --------------------------------------------------------------------------------------


class Observer(Protocol):
    """Where the migration reports progress (a progress bar, or nothing)."""

    def start(
        self,
        label: str,
        total: int,
        *,
        completed: int = 0,
        size: int | None = None,
        unit: str = "rows",
    ) -> None:
        """A new step of `total` items (`size` bytes in all, when they are objects)."""
        ...

    def advance(self, items: int = 1, size: int = 0) -> None: ...

    def finish(self) -> None: ...

    def say(self, message: str) -> None: ...


class Silent:
    """An observer that shows nothing."""

    def start(
        self,
        label: str,
        total: int,
        *,
        completed: int = 0,
        size: int | None = None,
        unit: str = "rows",
    ) -> None:
        pass

    def advance(self, items: int = 1, size: int = 0) -> None:
        pass

    def finish(self) -> None:
        pass

    def say(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class _RowProgress:
    """The copy of one table, shown to the observer as a step of its own."""

    observer: Observer
    table: str

    def counted(self, total: int, done: int) -> None:
        self.observer.start(f"rows: {self.table}", total, completed=done)

    def copied(self, rows: int) -> None:
        self.observer.advance(rows)


# -- reports ---------------------------------------------------------------------------------------


class Status(Enum):
    MATCH = "match"
    DIFFERS = "DIFFERS"
    LIVE = "live"
    """Rows that change while an archive runs, not compared once the target has gone live."""


@dataclass(frozen=True)
class TableCheck:
    table: str
    source: int
    target: int
    status: Status
    later: int = 0
    """Rows the target holds beyond the source's (written after a completed migration)."""
    detail: str = ""


@dataclass
class MigrationReport:
    source: str
    target: str
    resumed: bool = False
    already_done: bool = False
    objects: int = 0
    objects_copied: int = 0
    objects_present: int = 0
    bytes_copied: int = 0
    unreferenced: list[str] = field(default_factory=list)
    tables: list[TableCheck] = field(default_factory=list)
    objects_verified: int = 0
    read_back: bool = False
    object_problems: list[str] = field(default_factory=list)
    audit_problems: list[str] = field(default_factory=list)
    source_head: tuple[int, str] = (0, "")
    target_head: tuple[int, str] = (0, "")
    completion_seq: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences()

    def differences(self) -> list[str]:
        """Everything that keeps the target from matching the source, one line each."""
        found = [
            f"table {check.table}: {check.detail}"
            for check in self.tables
            if check.status is Status.DIFFERS
        ]
        found.extend(self.audit_problems)
        found.extend(_listed(self.object_problems, "object problems"))
        return found


# -- the migration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    batch_size: int = DEFAULT_BATCH
    """Rows per transaction in the target."""
    workers: int = DEFAULT_WORKERS
    """Objects copied (and verified) at once."""
    verify_read: bool = False
    """Prove by reading every object back from the target and hashing it, not only its digest."""


@runtime_checkable
class DigestLookup(Protocol):
    """A blob store that can tell an object's recorded SHA-256 without reading it (S3: the
    `x-amz-meta-sha256` of a HEAD request). Stores without it are read and hashed."""

    def stored_sha256(self, key: str) -> str | None: ...


class _State(Enum):
    FRESH = "fresh"
    RESUME = "resume"
    DONE = "done"


_T = TypeVar("_T")
_R = TypeVar("_R")


class Migration:
    """One migration of the embedded archive under `source.data_dir` to the PostgreSQL database
    and S3 bucket of `target`. `run` may be called again after any interruption."""

    def __init__(
        self,
        source: Settings,
        target: Settings,
        actor: Actor,
        options: Options | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._source = source
        self._target = target
        self._actor = actor
        self._options = options or Options()
        self._observer: Observer = observer or Silent()
        if self._options.batch_size < 1 or self._options.workers < 1:
            raise MigrationError("batch size and workers must be at least 1")
        self._source_url = sqlite_url(source.data_dir)
        self._target_url = _check_target(target)

    def run(self) -> MigrationReport:
        """Copy what is missing and prove the target matches the source.

        Raises MigrationError when the migration cannot run (the source is running, the target
        holds another archive), MigrationFailed when the source has corrupt or missing objects;
        a report whose `ok` is False when the proof finds a difference.
        """
        _check_source_stopped(self._source.data_dir)
        try:
            plan = copy_plan()
        except UnknownTables as exc:
            raise MigrationError(str(exc)) from exc
        with ExitStack() as stack:
            try:
                return self._run(stack, plan)
            except DatabaseFailed as exc:  # a connection lost half-way: nothing is lost
                raise MigrationError(
                    f"a database failed during the migration: {exc}. Run migrate again once "
                    "it answers: the migration continues where it stopped"
                ) from exc

    def _run(self, stack: ExitStack, plan: Sequence[PlannedTable]) -> MigrationReport:
        self._src_index = Index(self._source_url)
        stack.callback(self._src_index.close)
        self._tgt_index = Index(self._target_url)
        stack.callback(self._tgt_index.close)
        self._tables = TableCopier(self._source_url, self._target_url)
        stack.callback(self._tables.close)
        self._src_blobs: BlobStore = FileBlobStore(self._source.blob_dir)
        self._tgt_blobs: BlobStore = open_blob_store(self._target)
        self._tgt_blobs.check()
        report = MigrationReport(
            source=f"the embedded archive in {self._source.data_dir.resolve()}",
            target=f"{describe_url(self._target_url)} with {self._tgt_blobs.describe()}",
        )
        self._verify_source_log()
        state = self._state()
        report.already_done = state is _State.DONE
        report.resumed = state is _State.RESUME
        if state is _State.DONE:
            self._observer.say("already migrated: proving again that the target matches")
        else:
            if state is _State.RESUME:
                self._observer.say("continuing an interrupted migration")
            self._record_start(report.target)
            self._copy_objects(report)
            self._copy_rows(plan)
        self._prove(plan, report, live=state is _State.DONE)
        if report.ok and state is not _State.DONE:
            report.completion_seq = self._record_completion(report)
        self._notes(report)
        return report

    # -- preparation ---------------------------------------------------------------------------

    def _verify_source_log(self) -> None:
        """A source whose chain does not verify is evidence of tampering to investigate, not
        something to carry into a new database whose proof would then fail."""
        verified = AuditLog(self._src_index).verify()
        if not verified.ok:
            raise MigrationError(
                f"the source's audit log does not verify: event {verified.broken_at}: "
                f"{verified.reason}. Investigate with `arkiv audit verify` before migrating"
            )

    def _state(self) -> _State:
        """Whether the target is empty, a migration of this archive in progress, or one done.

        The target's audit log is copied first and its hashes chain every event to all events
        before it, so one event's hash shows whether the two logs are one log.
        """
        head_seq, head_hash = self._src_index.audit_head()
        # The highest sequence number in the target's log: its chain head is copied last, so
        # during a copy it lags behind the events already there.
        target_last = self._tgt_index.statistics().audit_events
        if target_last > 0:
            common = min(head_seq, target_last)
            if not self._same_event(common):
                raise MigrationError(_diverged(self._first_difference(common)))
            if target_last <= head_seq:
                return _State.RESUME
            after = self._tgt_index.audit_event_at(head_seq + 1)
            if after is not None and _completes(after, head_seq, head_hash):
                return _State.DONE
            raise MigrationError(_diverged(head_seq + 1))
        if self._tables.target_holds_rows():
            raise MigrationError(
                f"the target database {describe_url(self._target_url)} already holds data but "
                "no audit log of this archive: give migrate an empty database"
            )
        return _State.FRESH

    def _same_event(self, seq: int) -> bool:
        ours = self._src_index.audit_event_at(seq)
        theirs = self._tgt_index.audit_event_at(seq)
        return ours is not None and theirs is not None and ours.hash == theirs.hash

    def _first_difference(self, last: int) -> int:
        """The first event at which the two logs differ, knowing they differ by `last` (hashes
        chain each event to all before it, so the logs agree up to some event, then no more)."""
        low, high = 0, last  # they agree up to `low` and differ at `high`
        while high - low > 1:
            middle = (low + high) // 2
            if self._same_event(middle):
                low = middle
            else:
                high = middle
        return high

    def _counties(self) -> tuple[str, ...]:
        """Every county whose data moves: owners of studies, accounts and audit events."""
        return self._tables.source_counties()

    def _instance_count(self) -> int:
        return self._src_index.instance_count()

    def _record_start(self, target: str) -> None:
        event = Event(
            EventType.EXPORT,
            "R",
            self._actor,
            object_count=self._instance_count(),
            counties=self._counties(),
            details={
                MIGRATION_DETAIL: "started",
                "to": target,
                "scope": "the whole archive: every object, index row and audit event",
            },
        )
        try:
            AuditLog(self._src_index).record(event)
        except AuditUnavailable as exc:
            raise MigrationError(
                f"the source's audit log cannot record the migration: {exc}"
            ) from exc

    def _record_completion(self, report: MigrationReport) -> int:
        head_seq, head_hash = report.source_head
        event = Event(
            EventType.IMPORT,
            "C",
            self._actor,
            object_count=self._instance_count(),
            counties=self._counties(),
            details={
                MIGRATION_DETAIL: "completed",
                "from": report.source,
                "source_head_seq": head_seq,
                "source_head_hash": head_hash,
                "objects": report.objects,
                "rows": {check.table: check.source for check in report.tables},
            },
        )
        try:
            return AuditLog(self._tgt_index).record(event).seq
        except AuditUnavailable as exc:
            raise MigrationError(
                f"the target matches the source, but its audit log cannot record the "
                f"migration: {exc}. Run migrate again"
            ) from exc

    # -- phase 1: objects ----------------------------------------------------------------------

    def _copy_objects(self, report: MigrationReport) -> None:
        count, size = self._tables.referenced_totals()
        report.objects = count
        self._observer.start("objects", count, size=size, unit="objects")
        corrupt: list[str] = []
        missing: list[str] = []
        clashes: list[str] = []
        for blob, outcome, detail in self._in_parallel(
            self._tables.referenced_objects(), self._copy_one
        ):
            if outcome == "copied":
                report.objects_copied += 1
                report.bytes_copied += blob.size
            elif outcome == "present":
                report.objects_present += 1
            elif outcome == "corrupt":
                corrupt.append(f"{blob.key} ({detail})")
            elif outcome == "missing":
                missing.append(blob.key)
            else:
                clashes.append(f"{blob.key} ({detail})")
            self._observer.advance(1, blob.size)
        self._observer.finish()
        referenced = self._src_index.blob_keys()
        report.unreferenced = sorted(k for k in self._src_blobs.keys() if k not in referenced)
        problems: list[str] = []
        if corrupt:
            problems.append(
                f"{len(corrupt)} object(s) in the source no longer match the SHA-256 recorded "
                "when they were received, and were not migrated:"
            )
            problems.extend(f"  corrupt: {line}" for line in _listed(corrupt, "more"))
        if missing:
            problems.append(
                f"{len(missing)} object(s) the source's index refers to are missing from it:"
            )
            problems.extend(f"  missing: {key}" for key in _listed(missing, "more"))
        if corrupt or missing:
            problems.append(
                f"Run `arkiv fsck --scrub --repair --data {self._source.data_dir}` first (it "
                "restores what it can and names what must be sent again), then migrate again: "
                "what was copied is kept"
            )
        if clashes:
            problems.append(
                f"{len(clashes)} key(s) hold a different object in the target bucket than the "
                "source recorded: the bucket holds another archive's objects (give migrate an "
                "empty bucket), or they were damaged there (`arkiv fsck --scrub --repair "
                "--config TARGET.toml` restores an intact version):"
            )
            problems.extend(f"  different: {line}" for line in _listed(clashes, "more"))
        if problems:
            raise MigrationFailed("\n".join(problems))

    def _copy_one(self, blob: ReferencedObject) -> tuple[ReferencedObject, str, str]:
        stored = self._target_digest(blob.key)
        if stored == blob.sha256:
            return blob, "present", ""
        if stored is not None:
            return blob, "clash", f"sha256 {stored} in the target, {blob.sha256} recorded"
        try:
            data = self._src_blobs.read(blob.key)
        except BlobNotFound:
            return blob, "missing", ""
        actual = hashlib.sha256(data).hexdigest()
        if actual != blob.sha256:
            return blob, "corrupt", f"content hashes to {actual}, {blob.sha256} recorded"
        self._tgt_blobs.put(blob.key, data, blob.sha256)
        return blob, "copied", ""

    def _target_digest(self, key: str) -> str | None:
        """The SHA-256 of the target's object under `key`, None when it holds none."""
        if isinstance(self._tgt_blobs, DigestLookup):
            stored = self._tgt_blobs.stored_sha256(key)
            return None if stored is None else stored.lower()
        return self._read_digest(key)

    def _read_digest(self, key: str) -> str | None:
        try:
            with self._tgt_blobs.open(key) as handle:
                return sha256_of(handle)
        except BlobNotFound:
            return None

    def _in_parallel(self, items: Iterable[_T], work: Callable[[_T], _R]) -> Iterator[_R]:
        """`work` over `items` on the worker threads, results as they finish, with a bounded
        number in flight (objects are read whole)."""
        window = self._options.workers * 4
        pending: set[Future[_R]] = set()
        with ThreadPoolExecutor(self._options.workers, thread_name_prefix="migrate") as pool:
            try:
                for item in items:
                    pending.add(pool.submit(work, item))
                    if len(pending) >= window:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            yield future.result()
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            finally:
                for future in pending:
                    future.cancel()

    # -- phase 2: index rows -------------------------------------------------------------------

    def _copy_rows(self, plan: Sequence[PlannedTable]) -> None:
        """Table by table in the plan's order (`storage.table_copy`: insert-only tables continue
        after the target's highest key, the others are written again whole)."""
        for planned in plan:
            progress = _RowProgress(self._observer, planned.name)
            try:
                self._tables.copy(planned.name, self._options.batch_size, progress)
            except DatabaseFailed as exc:
                raise MigrationError(f"copying table {planned.name} failed: {exc}") from exc
            self._observer.finish()

    # -- phase 3: proof ------------------------------------------------------------------------

    def _prove(self, plan: Sequence[PlannedTable], report: MigrationReport, live: bool) -> None:
        report.source_head = self._src_index.audit_head()
        self._observer.start("proof: tables", len(plan), unit="tables")
        for planned in plan:
            report.tables.append(self._check_table(planned, live))
            self._observer.advance()
        self._observer.finish()
        self._check_audit(report, live)
        self._check_objects(report)

    def _check_table(self, planned: PlannedTable, live: bool) -> TableCheck:
        """Counts and a digest over every value of every row (order-independent: a sum of row
        hashes), so that equal results mean the same rows, not only as many."""
        compared = self._tables.compare(planned.name)
        name, later = planned.name, compared.later
        source, source_digest = compared.source.rows, compared.source.digest
        target, target_digest = compared.target.rows, compared.target.digest
        if planned.kind is not Kind.APPEND:
            if live:
                return TableCheck(name, source, target, Status.LIVE)
            if (source, source_digest) == (target, target_digest):
                return TableCheck(name, source, target, Status.MATCH)
            detail = (
                f"{source} rows in the source, {target} in the target"
                if source != target
                else "as many rows, but different values"
            )
            return TableCheck(name, source, target, Status.DIFFERS, detail=detail)
        # Insert-only: the target's rows within the source's keys, and `later` beyond them.
        if source != target:
            detail = f"{source} rows in the source, {target} in the target"
        elif source_digest != target_digest:
            detail = "as many rows, but different values"
        elif later and not live:
            detail = f"the target holds {later} rows the source does not"
        else:
            return TableCheck(name, source, target, Status.MATCH, later=later)
        return TableCheck(name, source, target, Status.DIFFERS, later=later, detail=detail)

    def _check_audit(self, report: MigrationReport, live: bool) -> None:
        verified = AuditLog(self._tgt_index).verify()
        report.target_head = self._tgt_index.audit_head()
        if not verified.ok:
            report.audit_problems.append(
                f"the target's audit log does not verify: event {verified.broken_at}: "
                f"{verified.reason}"
            )
        head_seq, head_hash = report.source_head
        if not live:
            if report.target_head != report.source_head:
                report.audit_problems.append(
                    f"the target's audit head (event {report.target_head[0]}) is not the "
                    f"source's (event {head_seq})"
                )
            return
        at_head = self._tgt_index.audit_event_at(head_seq) if head_seq else None
        if head_seq and (at_head is None or at_head.hash != head_hash):
            report.audit_problems.append(
                f"the target's event {head_seq} is not the source's last event"
            )

    def _check_objects(self, report: MigrationReport) -> None:
        count, size = self._tables.referenced_totals()
        report.objects = count
        # Without a stored digest to look up, the digest is the content's, read back.
        report.read_back = self._options.verify_read or not isinstance(
            self._tgt_blobs, DigestLookup
        )
        label = "proof: objects (read)" if report.read_back else "proof: objects"
        self._observer.start(label, count, size=size, unit="objects")
        for blob, problem in self._in_parallel(
            self._tables.referenced_objects(), self._check_object
        ):
            if problem:
                report.object_problems.append(f"{blob.key}: {problem}")
            else:
                report.objects_verified += 1
            self._observer.advance(1, blob.size)
        self._observer.finish()

    def _check_object(self, blob: ReferencedObject) -> tuple[ReferencedObject, str]:
        stored = self._target_digest(blob.key)
        if stored is None:
            return blob, "missing from the target"
        if stored != blob.sha256:
            return blob, f"the target's sha256 is {stored}, {blob.sha256} recorded"
        if self._options.verify_read and isinstance(self._tgt_blobs, DigestLookup):
            content = self._read_digest(blob.key)
            if content != blob.sha256:
                return blob, f"the target's content hashes to {content}, {blob.sha256} recorded"
        return blob, ""

    def _notes(self, report: MigrationReport) -> None:
        """What the operator must do by hand: the signing key is a file, not a row."""
        source_key = self._source.signing_key_path
        target_key = self._target.signing_key_path
        if source_key.is_file() and not target_key.is_file():
            report.notes.append(
                f"The audit signing key {source_key} is a file and was not copied: install it "
                f"(mode 0600) as {target_key} on the scale-out nodes, so that they verify the "
                "copied checkpoints and sign new ones with the same key"
            )
        legacy_cursor = self._source.data_dir / CURSOR_FILE
        if legacy_cursor.is_file():
            report.notes.append(
                f"{legacy_cursor} (how far the audit log was forwarded to syslog) is a file and "
                "was not copied: put it in the data directory of the node that forwards, which "
                "takes it into the index at its first start"
            )
        if report.unreferenced:
            report.notes.append(
                f"{len(report.unreferenced)} object(s) in the source are not in its index and "
                "were not migrated (left by interrupted stores): "
                + ", ".join(_listed(report.unreferenced, "more"))
                + f". `arkiv fsck --repair --data {self._source.data_dir}` indexes them; "
                "then migrate again"
            )


# -- helpers ---------------------------------------------------------------------------------------


def _check_target(target: Settings) -> str:
    url = normalise_url(target.database_url)
    if not url.startswith("postgresql"):
        raise MigrationError(
            "the target must be a scale-out configuration: its database_url must be a "
            "PostgreSQL URL (postgresql://user@host/database)"
        )
    if not target.uses_s3:
        raise MigrationError(
            "the target must be a scale-out configuration: it sets no s3_endpoint for the objects"
        )
    return url


def _check_source_stopped(data_dir: Path) -> None:
    """The source must exist and no process may have its index open (a running archive keeps
    its database connections open). Only processes this user may inspect can be seen, so this
    catches the usual mistake, not every one; the proof catches a source that changed."""
    index = data_dir / "index.sqlite3"
    if not index.is_file():
        raise MigrationError(f"no embedded archive in {data_dir}: {index} does not exist")
    holders = processes_holding(index)
    if holders:
        raise MigrationError(
            f"the source archive is running: {'; '.join(holders)} has {index} open. Stop the "
            "archive (every arkiv process using this data directory) and migrate again"
        )


def processes_holding(path: Path) -> list[str]:
    """Other processes with `path` (or its SQLite journal files) open, as "pid (command)"."""
    resolved = path.resolve()
    names = {str(resolved), f"{resolved}-wal", f"{resolved}-shm", f"{resolved}-journal"}
    found: list[str] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            descriptors = list((entry / "fd").iterdir())
        except OSError:  # gone, or another user's
            continue
        for descriptor in descriptors:
            try:
                opened = os.readlink(descriptor)
            except OSError:
                continue
            if opened in names:
                found.append(f"process {entry.name} ({_command(entry)})")
                break
    return found


def _command(proc_entry: Path) -> str:
    try:
        raw = (proc_entry / "cmdline").read_bytes()
    except OSError:
        return "?"
    command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return command[:100] or "?"


def _completes(event: AuditEvent, head_seq: int, head_hash: str) -> bool:
    """Whether `event` is the Import event a completed migration of this very log left."""
    return (
        event.event_id == EventType.IMPORT.code
        and event.details.get(MIGRATION_DETAIL) == "completed"
        and event.details.get("source_head_seq") == head_seq
        and event.details.get("source_head_hash") == head_hash
    )


def _diverged(seq: int) -> str:
    return (
        f"the target's audit log and the source's differ at event {seq}: the target belongs to "
        "another archive, or one of the two was used after the migration began. Give migrate "
        "an empty database and bucket"
    )


def _listed(items: Sequence[str], what: str) -> list[str]:
    if len(items) <= _LISTED:
        return list(items)
    return [*items[:_LISTED], f"... and {len(items) - _LISTED} {what}"]
