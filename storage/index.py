"""The index: what the archive holds, who may be asked about it, and the audit log.

`Index` offers reads, each in its own short transaction, and `Index.transaction()` for the writes
that must commit together (an object's index rows and its audit event). Writes use
insert-or-ignore so that two nodes receiving the same study at once never fail on a duplicate
patient, study or series row.
"""

from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    case,
    exists,
    func,
    select,
    text,
    true,
    update,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import SQLAlchemyError

from storage import models
from storage.database import (
    WRITE_OPTION,
    WriterQueue,
    create_index_engine,
    is_sqlite,
    migrate,
    sqlite_path,
    upsert_insert,
)
from storage.errors import IndexUnavailable
from storage.leases import Lease, open_lease
from storage.patient_records import (
    PatientChanges,
    PatientRecords,
    current_patient,
    note_patient,
    note_redirect,
)
from storage.photo_index import PhotoIndex, add_photo, photo_by_content
from storage.records import (
    AuditEvent,
    AuditQuery,
    BlobOwner,
    BlobRef,
    BreakGlassGrant,
    Checkpoint,
    IndexStatistics,
    NewAuditEvent,
    NewConflict,
    NewInstance,
    NewPhoto,
    PatientSummary,
    SeriesSummary,
    StoredInstance,
    StudyQuery,
    StudySummary,
    UserAccount,
    UserVolume,
    WebSession,
)

CHAIN = "main"
CHAIN_GENESIS = "0" * 64

ChainLink = Callable[[str, int, NewAuditEvent], str]
"""Computes an event's hash from the previous hash and its sequence number (rule in arkiv.audit)."""

_patients: Table = models.Patient.__table__  # type: ignore[assignment]
_studies: Table = models.Study.__table__  # type: ignore[assignment]
_series: Table = models.Series.__table__  # type: ignore[assignment]
_instances: Table = models.Instance.__table__  # type: ignore[assignment]
_conflicts: Table = models.InstanceConflict.__table__  # type: ignore[assignment]
_audit: Table = models.AuditEventRow.__table__  # type: ignore[assignment]
_audit_patients: Table = models.AuditPatient.__table__  # type: ignore[assignment]
_head: Table = models.AuditChainHead.__table__  # type: ignore[assignment]
_users: Table = models.User.__table__  # type: ignore[assignment]
_sessions: Table = models.SessionRow.__table__  # type: ignore[assignment]
_audit_counties: Table = models.AuditCounty.__table__  # type: ignore[assignment]
_checkpoints: Table = models.AuditCheckpoint.__table__  # type: ignore[assignment]
_grants: Table = models.BreakGlassGrant.__table__  # type: ignore[assignment]
_forward_cursors: Table = models.AuditForwardCursor.__table__  # type: ignore[assignment]
_photos: Table = models.Photo.__table__  # type: ignore[assignment]
_media: Table = models.MediaBlob.__table__  # type: ignore[assignment]


_LOCK_HEAD = select(_head).where(_head.c.chain == CHAIN).with_for_update()
_INSERT_EVENT = _audit.insert()
_INSERT_EVENT_PATIENT = _audit_patients.insert()
_INSERT_EVENT_COUNTY = _audit_counties.insert()
_MOVE_HEAD = (
    update(_head)
    .where(_head.c.chain == CHAIN)
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)


AUDIT_EVENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in _audit.columns)


def _postgres_append() -> Any:
    """On PostgreSQL the event, its patients and counties and the new head in one statement
    (data-modifying CTEs; foreign keys are checked at its end): one round trip under the head
    lock instead of four, which is what bounds the archive's audit events per second."""
    columns = ", ".join(f'"{c}"' for c in AUDIT_EVENT_COLUMNS)
    values = ", ".join(f":{c}" for c in AUDIT_EVENT_COLUMNS)
    return text(
        f"WITH event AS (INSERT INTO {_audit.name} ({columns}) VALUES ({values})), "
        f"patients AS (INSERT INTO {_audit_patients.name} (seq, patient_id) "
        "SELECT :seq, unnest(CAST(:patient_list AS varchar[]))), "
        f"counties AS (INSERT INTO {_audit_counties.name} (seq, county) "
        "SELECT :seq, unnest(CAST(:county_list AS varchar[]))) "
        f"UPDATE {_head.name} SET seq = :seq, hash = :hash WHERE chain = :chain"
    )


_POSTGRES_APPEND = _postgres_append()


def _plain(value: str) -> bool:
    """True when `json.dumps` would write the string as is between quotes."""
    return value.isascii() and value.isprintable() and '"' not in value and "\\" not in value


def json_strings(values: Sequence[str]) -> str:
    """`json.dumps(list(values))`, without its cost for the common case of plain ASCII strings
    (national IDs, UIDs, county names)."""
    if all(_plain(v) for v in values):
        return "[" + ", ".join(f'"{v}"' for v in values) + "]"
    return json.dumps(list(values))


def audit_rows(
    seq: int, prev_hash: str, digest: str, event: NewAuditEvent
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows one audit event is stored as: the event (lists and details as JSON), the
    patients it concerns and the counties it concerns (always including the actor's)."""
    row = {f.name: getattr(event, f.name) for f in fields(event)}
    row.update(
        seq=seq,
        prev_hash=prev_hash,
        hash=digest,
        patient_ids=json_strings(event.patient_ids),
        study_uids=json_strings(event.study_uids),
        details=json.dumps(event.details, sort_keys=True),
        counties=json_strings(event.counties),
    )
    patients = [{"seq": seq, "patient_id": p} for p in sorted(set(event.patient_ids))]
    counties = [{"seq": seq, "county": c} for c in sorted(set(event.counties) | {event.county})]
    return row, patients, counties


def name_key(name: str) -> str:
    """Case-folded person name, so that searches match regardless of case, æøå included."""
    return name.casefold()


def wildcard_to_like(pattern: str) -> str:
    """DICOM wildcard matching (`*`, `?`) as a SQL LIKE pattern with `\\` as escape."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


class KeyCache:
    """Primary keys of patient, study and series rows this process has seen committed.

    Rows are never deleted or re-keyed, so a cached key stays right; most objects join a study
    and series that exist, and with their keys at hand the locked part of ingest inserts the
    instance and the audit event and nothing else. Keys enter only after their transaction
    committed, so a rolled-back insert never leaves a key to a row that does not exist.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._keys: dict[tuple[str, ...], int] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> int | None:
        return self._keys.get(key)

    def add(self, entries: dict[tuple[str, ...], int]) -> None:
        with self._lock:
            if len(self._keys) + len(entries) > self._limit:
                self._keys.clear()
            self._keys.update(entries)


class Index:
    """The index database behind a small interface."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine = create_index_engine(url)
        self._writers = WriterQueue(sqlite_path(url), serialise=is_sqlite(url))
        self._keys = KeyCache()
        migrate(self._engine)
        self.photos = PhotoIndex(self._read)
        """Clinical photos and video (`storage.photo_index`)."""
        self.patient_records = PatientRecords(self._read)
        """Aliases, names seen, merges and splits (`storage.patient_records`)."""

    def close(self) -> None:
        self._engine.dispose()
        self._writers.close()

    # -- connections ---------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise IndexUnavailable(f"index database read failed: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[IndexTransaction]:
        """One atomic write: everything done through the yielded object commits or none of it."""
        try:
            with (
                self._writers.turn(),
                self._engine.connect().execution_options(**{WRITE_OPTION: True}) as conn,
            ):
                tx = IndexTransaction(conn, self._keys)
                with conn.begin():
                    yield tx
                self._keys.add(tx.new_keys)
        except SQLAlchemyError as exc:
            raise IndexUnavailable(f"index database write failed: {exc}") from exc

    def check(self) -> None:
        with self._read() as conn:
            conn.execute(text("SELECT 1"))

    def lease(self, name: str) -> Lease:
        """An exclusive role among all processes sharing this index, held until released or
        until the holder dies (`storage.leases`). Each call is a new contender: the caller
        keeps the object, asks it `held()`, and releases it when done."""
        return open_lease(self.url, name)

    # -- studies, series, instances ------------------------------------------------------------

    def find_patients(self, query: StudyQuery) -> list[PatientSummary]:
        """Patients with at least one study the query matches and its scope allows, by name.

        Two statements, not one grouped join over everything: a page of patient keys first,
        then the counts of only those patients' studies, series and instances in scope.
        """
        matched = _apply_study_filters(
            select(_patients.c.id, _patients.c.name_key)
            .select_from(_studies.join(_patients, _studies.c.patient_pk == _patients.c.id))
            .distinct(),
            query,
        )
        matched = _apply_lower_filters(matched, query, "study")
        stmt = matched.order_by(_patients.c.name_key, _patients.c.id)
        stmt = stmt.limit(query.limit).offset(query.offset)
        with self._read() as conn:
            page = [row[0] for row in conn.execute(stmt)]
            if not page:
                return []
            people = {
                row["id"]: row
                for row in conn.execute(select(_patients).where(_patients.c.id.in_(page)))
                .mappings()
                .all()
            }
            scoped = _apply_scope(
                select(
                    _studies.c.patient_pk,
                    _studies.c.county,
                    func.count(func.distinct(_studies.c.id)),
                    func.count(func.distinct(_series.c.id)),
                    func.count(_instances.c.id),
                )
                .select_from(
                    _studies.join(_patients, _studies.c.patient_pk == _patients.c.id)
                    .outerjoin(_series, _series.c.study_pk == _studies.c.id)
                    .outerjoin(_instances, _instances.c.series_pk == _series.c.id)
                )
                .where(_studies.c.patient_pk.in_(page)),
                query,
            ).group_by(_studies.c.patient_pk, _studies.c.county)
            counts: dict[int, list[int]] = {}
            counties: dict[int, set[str]] = {}
            for patient_pk, county, n_studies, n_series, n_instances in conn.execute(scoped):
                total = counts.setdefault(patient_pk, [0, 0, 0])
                total[0] += n_studies
                total[1] += n_series
                total[2] += n_instances
                counties.setdefault(patient_pk, set()).add(county)
        return [
            PatientSummary(
                patient_id=people[pk]["patient_id"],
                patient_name=people[pk]["name"],
                birth_date=people[pk]["birth_date"],
                sex=people[pk]["sex"],
                id_valid=bool(people[pk]["id_valid"]),
                study_count=counts.get(pk, [0, 0, 0])[0],
                series_count=counts.get(pk, [0, 0, 0])[1],
                instance_count=counts.get(pk, [0, 0, 0])[2],
                counties=tuple(sorted(counties.get(pk, ()))),
            )
            for pk in page
        ]

    def find_studies(self, query: StudyQuery) -> list[StudySummary]:
        """A page of matching studies, newest first; counts and modalities for that page only."""
        stmt = select(_studies, _patients).select_from(
            _studies.join(_patients, _studies.c.patient_pk == _patients.c.id)
        )
        stmt = _apply_lower_filters(_apply_study_filters(stmt, query), query, "study")
        stmt = stmt.order_by(_studies.c.study_date.desc(), _studies.c.id.desc())
        stmt = stmt.limit(query.limit).offset(query.offset)
        with self._read() as conn:
            rows = conn.execute(stmt).mappings().all()
            pks = [row["id"] for row in rows]
            modalities = self._modalities(conn, pks)
            counts = self._study_counts(conn, pks)
        return [
            StudySummary(
                patient_id=row["patient_id"],
                patient_name=row["name"],
                birth_date=row["birth_date"],
                sex=row["sex"],
                id_valid=bool(row["id_valid"]),
                study_uid=row["study_uid"],
                study_date=row["study_date"],
                study_time=row["study_time"],
                accession_number=row["accession_number"],
                description=row["description"],
                referring_physician=row["referring_physician"],
                study_id=row["study_id"],
                modalities=tuple(modalities.get(row["id"], ())),
                series_count=counts.get(row["id"], (0, 0))[0],
                instance_count=counts.get(row["id"], (0, 0))[1],
                county=row["county"],
            )
            for row in rows
        ]

    @staticmethod
    def _study_counts(conn: Connection, study_pks: Sequence[int]) -> dict[int, tuple[int, int]]:
        if not study_pks:
            return {}
        stmt = (
            select(
                _series.c.study_pk,
                func.count(func.distinct(_series.c.id)),
                func.count(_instances.c.id),
            )
            .select_from(_series.outerjoin(_instances, _instances.c.series_pk == _series.c.id))
            .where(_series.c.study_pk.in_(study_pks))
            .group_by(_series.c.study_pk)
        )
        return {pk: (n_series, n_instances) for pk, n_series, n_instances in conn.execute(stmt)}

    @staticmethod
    def _modalities(conn: Connection, study_pks: Sequence[int]) -> dict[int, list[str]]:
        if not study_pks:
            return {}
        result: dict[int, list[str]] = {}
        stmt = (
            select(_series.c.study_pk, _series.c.modality)
            .where(_series.c.study_pk.in_(study_pks))
            .distinct()
            .order_by(_series.c.modality)
        )
        for study_pk, modality in conn.execute(stmt):
            if modality:
                result.setdefault(study_pk, []).append(modality)
        return result

    def find_series(self, query: StudyQuery) -> list[SeriesSummary]:
        stmt = select(
            _series.c.id,
            _series.c.series_uid,
            _series.c.modality,
            _series.c.series_number,
            _series.c.description,
            _series.c.body_part,
            _series.c.county,
            _studies.c.study_uid,
            _patients.c.patient_id,
        ).select_from(
            _series.join(_studies, _series.c.study_pk == _studies.c.id).join(
                _patients, _studies.c.patient_pk == _patients.c.id
            )
        )
        stmt = _apply_lower_filters(_apply_study_filters(stmt, query), query, "series")
        stmt = stmt.order_by(_studies.c.study_uid, _series.c.series_number, _series.c.id)
        stmt = stmt.limit(query.limit).offset(query.offset)
        with self._read() as conn:
            rows = conn.execute(stmt).mappings().all()
            pks = [row["id"] for row in rows]
            counts: dict[int, int] = {}
            if pks:
                count_stmt = (
                    select(_instances.c.series_pk, func.count())
                    .where(_instances.c.series_pk.in_(pks))
                    .group_by(_instances.c.series_pk)
                )
                counts = {pk: n for pk, n in conn.execute(count_stmt)}
        return [
            SeriesSummary(
                patient_id=row["patient_id"],
                county=row["county"],
                study_uid=row["study_uid"],
                series_uid=row["series_uid"],
                modality=row["modality"],
                series_number=row["series_number"],
                description=row["description"],
                body_part=row["body_part"],
                instance_count=counts.get(row["id"], 0),
            )
            for row in rows
        ]

    def find_instances(self, query: StudyQuery) -> list[StoredInstance]:
        stmt = select(
            _instances,
            _series.c.series_uid,
            _studies.c.study_uid,
            _patients.c.patient_id,
        ).select_from(
            _instances.join(_series, _instances.c.series_pk == _series.c.id)
            .join(_studies, _series.c.study_pk == _studies.c.id)
            .join(_patients, _studies.c.patient_pk == _patients.c.id)
        )
        stmt = _apply_lower_filters(_apply_study_filters(stmt, query), query, "instance")
        stmt = stmt.order_by(
            _studies.c.study_uid,
            _series.c.series_uid,
            _instances.c.instance_number,
            _instances.c.id,
        )
        stmt = stmt.limit(query.limit).offset(query.offset)
        with self._read() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [_stored_instance(row) for row in rows]

    def instance_count(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(_instances)).scalar_one())

    def statistics(self) -> IndexStatistics:
        def count(table: Table) -> Any:
            return select(func.count()).select_from(table).scalar_subquery()

        stmt = select(
            count(_patients).label("patients"),
            count(_studies).label("studies"),
            count(_series).label("series"),
            count(_instances).label("instances"),
            count(_conflicts).label("conflicts"),
            select(func.coalesce(func.sum(_instances.c.size), 0))
            .scalar_subquery()
            .label("stored_bytes"),
            select(func.coalesce(func.max(_audit.c.seq), 0)).scalar_subquery().label("audit"),
            count(_photos).label("photos"),
            select(func.coalesce(func.sum(_media.c.size), 0))
            .scalar_subquery()
            .label("media_bytes"),
        )
        with self._read() as conn:
            row = conn.execute(stmt).one()
        return IndexStatistics(
            patients=int(row.patients),
            studies=int(row.studies),
            series=int(row.series),
            instances=int(row.instances),
            conflicts=int(row.conflicts),
            stored_bytes=int(row.stored_bytes),
            audit_events=int(row.audit),
            photos=int(row.photos),
            media_bytes=int(row.media_bytes),
        )

    def conflict_count(self, sop_uid: str | None = None) -> int:
        stmt = select(func.count()).select_from(_conflicts)
        if sop_uid is not None:
            stmt = stmt.where(_conflicts.c.sop_uid == sop_uid)
        with self._read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def blob_keys(self) -> set[str]:
        """Every blob the index refers to (instances and kept conflicts), for consistency checks."""
        with self._read() as conn:
            keys = set(conn.execute(select(_instances.c.blob_key)).scalars())
            keys.update(conn.execute(select(_conflicts.c.blob_key)).scalars())
        keys.update(key for key, _sha, _county in self.photos.blob_rows())
        return keys

    def blob_owner(self, key: str) -> BlobOwner | None:
        """The instance, or the conflicting object kept for review, whose bytes `key` holds
        (for the alert of an object that fails its checksum)."""
        instance = (
            select(_instances.c.sop_uid, _studies.c.study_uid, _patients.c.patient_id)
            .add_columns(_instances.c.county)
            .select_from(
                _instances.join(_series, _instances.c.series_pk == _series.c.id)
                .join(_studies, _series.c.study_pk == _studies.c.id)
                .join(_patients, _studies.c.patient_pk == _patients.c.id)
            )
            .where(_instances.c.blob_key == key)
        )
        conflict = (
            select(_conflicts.c.sop_uid, _conflicts.c.study_uid, _patients.c.patient_id)
            .add_columns(_conflicts.c.county)
            .select_from(
                _conflicts.outerjoin(
                    _studies, _conflicts.c.study_uid == _studies.c.study_uid
                ).outerjoin(_patients, _studies.c.patient_pk == _patients.c.id)
            )
            .where(_conflicts.c.blob_key == key)
        )
        with self._read() as conn:
            for stmt in (instance, conflict):
                row = conn.execute(stmt.limit(1)).first()
                if row is not None:
                    sop_uid, study_uid, patient_id, county = row
                    return BlobOwner(sop_uid, study_uid, patient_id or "", county)
        photo = self.photos.blob_owner(key)
        if photo is not None:
            photo_id, patient_id, county = photo
            return BlobOwner(f"photo {photo_id}", "", patient_id, county)
        return None

    def blob_digests(self) -> dict[str, str]:
        """Every blob the index refers to, with the SHA-256 (hex) recorded when it was received."""
        digests: dict[str, str] = {}
        with self._read() as conn:
            for table in (_conflicts, _instances):  # an instance's digest wins over a conflict's
                rows = conn.execute(select(table.c.blob_key, table.c.sha256))
                digests.update({str(key): str(sha) for key, sha in rows})
        digests.update({key: sha for key, sha, _county in self.photos.blob_rows()})
        return digests

    # -- audit -----------------------------------------------------------------------------------

    def find_audit_events(self, query: AuditQuery) -> list[AuditEvent]:
        """Events matching an auditor's filters, newest first (or oldest first when asked).

        Shaped for a log of many millions of events: a patient's events are looked up through
        `audit_patients` and fetched by sequence number; a time range becomes a range of
        sequence numbers (events are appended in time order, give or take the moments a writer
        waits for the lock, hence a margin), so the walk stays inside it.
        """
        stmt = select(_audit)
        if query.patient_id:
            stmt = stmt.where(
                _audit.c.seq.in_(
                    select(_audit_patients.c.seq).where(
                        _audit_patients.c.patient_id == query.patient_id
                    )
                )
            )
        if query.actor:
            stmt = stmt.where(_audit.c.actor == query.actor)
        if query.county:
            stmt = stmt.where(
                exists().where(
                    (_audit_counties.c.seq == _audit.c.seq)
                    & (_audit_counties.c.county == query.county)
                )
            )
        if query.county and query.cross_county:
            # A literal, so that SQLite may use the partial index of multi-county events.
            stmt = stmt.where(_audit.c.county != query.county).where(
                text("audit_events.counties LIKE '%,%'")
            )
        if query.event_id:
            stmt = stmt.where(_audit.c.event_id == query.event_id)
        if query.action:
            stmt = stmt.where(_audit.c.action == query.action)
        if query.outcome is not None:
            stmt = stmt.where(_audit.c.outcome == query.outcome)
        if query.min_outcome is not None:
            # The four PS3.15 outcomes as a list: a range would walk the whole log by sequence.
            worse = [o for o in _OUTCOMES if o >= query.min_outcome]
            stmt = stmt.where(_audit.c.outcome.in_(worse))
        with self._read() as conn:
            if query.since:
                stmt = stmt.where(_audit.c.recorded_at >= query.since)
                before = _seq_bound(conn, query.since, later=False)
                if before is not None:
                    stmt = stmt.where(_audit.c.seq > before)
            if query.until:
                stmt = stmt.where(_audit.c.recorded_at <= query.until)
                beyond = _seq_bound(conn, query.until, later=True)
                if beyond is not None:
                    stmt = stmt.where(_audit.c.seq < beyond)
            if query.after_seq:
                stmt = stmt.where(_audit.c.seq > query.after_seq)
            if query.through_seq is not None:
                stmt = stmt.where(_audit.c.seq <= query.through_seq)
            order = _audit.c.seq.asc() if query.oldest_first else _audit.c.seq.desc()
            stmt = stmt.order_by(order).limit(query.limit).offset(query.offset)
            return [_audit_event(row) for row in conn.execute(stmt).mappings()]

    def iter_audit_events(self, batch: int = 5000, after: int = 0) -> Iterator[AuditEvent]:
        """The log in physical order (by sequence number) from event `after + 1`, in batches."""
        last = after if after > 0 else -1
        while True:
            stmt = select(_audit).where(_audit.c.seq > last).order_by(_audit.c.seq).limit(batch)
            with self._read() as conn:
                rows = [_audit_event(row) for row in conn.execute(stmt).mappings()]
            if not rows:
                return
            yield from rows
            last = rows[-1].seq

    def audit_head(self) -> tuple[int, str]:
        """The chain head as recorded: (sequence number, hash) of the last appended event."""
        with self._read() as conn:
            row = conn.execute(select(_head).where(_head.c.chain == CHAIN)).mappings().first()
        if row is None:
            return 0, CHAIN_GENESIS
        return int(row["seq"]), str(row["hash"])

    # -- accounts and sessions -----------------------------------------------------------------

    def get_user(self, username: str) -> UserAccount | None:
        with self._read() as conn:
            row = conn.execute(select(_users).where(_users.c.username == username)).mappings()
            found = row.first()
        return None if found is None else _user_account(found)

    def find_user_by_identity(
        self, hpr_number: str | None, pid_sha256: str | None
    ) -> UserAccount | None:
        """The account linked to an external identity: HPR number first, then national ID."""
        with self._read() as conn:
            for column, value in (
                (_users.c.hpr_number, hpr_number),
                (_users.c.pid_sha256, pid_sha256),
            ):
                if value:
                    found = conn.execute(select(_users).where(column == value)).mappings().first()
                    if found is not None:
                        return _user_account(found)
        return None

    def list_users(self) -> list[UserAccount]:
        with self._read() as conn:
            rows = conn.execute(select(_users).order_by(_users.c.username)).mappings().all()
        return [_user_account(row) for row in rows]

    def user_count(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(_users)).scalar_one())

    def get_session(self, token_hash: str, now: str) -> WebSession | None:
        stmt = select(_sessions).where(
            (_sessions.c.token_hash == token_hash) & (_sessions.c.expires_at > now)
        )
        with self._read() as conn:
            row = conn.execute(stmt).mappings().first()
        if row is None:
            return None
        return WebSession(
            token_hash=row["token_hash"],
            username=row["username"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            last_seen_at=row["last_seen_at"],
            csrf_token=row["csrf_token"],
            auth_method=row["auth_method"],
        )

    # -- break the glass -------------------------------------------------------------------------

    def active_grants(self, username: str, now: str) -> list[BreakGlassGrant]:
        stmt = (
            select(_grants)
            .where((_grants.c.username == username) & (_grants.c.expires_at > now))
            .order_by(_grants.c.id)
        )
        with self._read() as conn:
            return [_grant(row) for row in conn.execute(stmt).mappings()]

    def patient_counties(self, patient_id: str) -> list[str]:
        """Which counties own studies of this patient (for break-the-glass and audit)."""
        stmt = (
            select(_studies.c.county)
            .join(_patients, _studies.c.patient_pk == _patients.c.id)
            .where(_patients.c.patient_id == patient_id)
            .distinct()
        )
        with self._read() as conn:
            return sorted(str(c) for c in conn.execute(stmt).scalars())

    # -- checkpoints and review ------------------------------------------------------------------

    def checkpoints(self, since_seq: int = 0) -> list[Checkpoint]:
        stmt = (
            select(_checkpoints).where(_checkpoints.c.seq > since_seq).order_by(_checkpoints.c.seq)
        )
        with self._read() as conn:
            return [Checkpoint(**dict(row)) for row in conn.execute(stmt).mappings()]

    def latest_checkpoint_seq(self) -> int:
        """Size of the log at its newest signed checkpoint (0 when none was signed yet)."""
        with self._read() as conn:
            return int(
                conn.execute(select(func.coalesce(func.max(_checkpoints.c.seq), 0))).scalar_one()
            )

    def forward_cursor(self, name: str) -> tuple[int, str] | None:
        """The (sequence number, hash) of the last event forwarder `name` had taken, if any."""
        stmt = select(_forward_cursors.c.seq, _forward_cursors.c.hash).where(
            _forward_cursors.c.name == name
        )
        with self._read() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else (int(row[0]), str(row[1]))

    def audit_event_at(self, seq: int) -> AuditEvent | None:
        with self._read() as conn:
            row = conn.execute(select(_audit).where(_audit.c.seq == seq)).mappings().first()
        return None if row is None else _audit_event(row)

    def user_volumes(
        self, county: str | None, since: str, minimum_patients: int
    ) -> list[UserVolume]:
        """Users who opened at least `minimum_patients` distinct patients on a day since `since`.

        Counts instance reads (110103/110104 with action R) per user and UTC day.
        """
        day = func.substr(_audit.c.recorded_at, 1, 10)
        stmt = (
            select(
                _audit.c.actor,
                _audit.c.county,
                day.label("day"),
                func.count(func.distinct(_audit_patients.c.patient_id)).label("patients"),
                func.count(func.distinct(_audit.c.seq)).label("events"),
            )
            .join(_audit_patients, _audit_patients.c.seq == _audit.c.seq)
            .where(
                (_audit.c.recorded_at >= since)
                & _audit.c.event_id.in_(("110103", "110104"))
                & (_audit.c.action == "R")
                & (_audit.c.actor_kind == "user")
            )
            .group_by(_audit.c.actor, _audit.c.county, day)
            .having(func.count(func.distinct(_audit_patients.c.patient_id)) >= minimum_patients)
            .order_by(day.desc(), _audit.c.actor)
        )
        if county:
            stmt = stmt.where(_audit.c.county == county)
        with self._read() as conn:
            before = _seq_bound(conn, since, later=False)
            if before is not None:
                stmt = stmt.where(_audit.c.seq > before)
            return [UserVolume(**dict(row)) for row in conn.execute(stmt).mappings()]


class IndexTransaction:
    """The writes available inside one atomic transaction."""

    def __init__(self, conn: Connection, keys: KeyCache) -> None:
        self._conn = conn
        self._keys = keys
        self.new_keys: dict[tuple[str, ...], int] = {}
        self.patient_changes = PatientChanges(conn)

    def instance_digest(self, sop_uid: str) -> str | None:
        """SHA-256 of the stored object under this SOP Instance UID, if any."""
        row = self._conn.execute(
            select(_instances.c.sha256).where(_instances.c.sop_uid == sop_uid)
        ).first()
        return None if row is None else str(row[0])

    def add_instance(self, new: NewInstance) -> bool:
        """Index a new instance; False when this SOP Instance UID is already indexed."""
        p = new.patient
        # Name, birth date, alias and county are in the key so that each new one reaches
        # _ensure_patient once and is noted for the reconciliation.
        patient_key: tuple[str, ...] = ("patient", p.patient_id, p.issuer, p.name, p.birth_date)
        patient_key += (p.alias_id, p.alias_issuer, new.county)
        study_key = ("study", new.study.study_uid)
        series_key = ("series", new.series.series_uid)
        patient_pk = self._keys.get(patient_key) or self._ensure_patient(new, patient_key)
        study_pk = self._keys.get(study_key) or self._ensure_study(new, patient_pk, study_key)
        series_pk = self._keys.get(series_key) or self._ensure_series(new, study_pk, series_key)
        inst = new.instance
        return _insert_ignore(
            self._conn,
            _instances,
            {
                "sop_uid": inst.sop_uid,
                "series_pk": series_pk,
                "sop_class_uid": inst.sop_class_uid,
                "instance_number": inst.instance_number,
                "transfer_syntax_uid": inst.transfer_syntax_uid,
                "rows": inst.rows,
                "columns": inst.columns,
                "frames": inst.frames,
                "blob_key": new.blob.key,
                "size": new.blob.size,
                "sha256": new.blob.sha256,
                "county": new.county,
                "source": new.source,
                "received_at": new.received_at,
                "metadata_json": inst.metadata_json,
            },
        )

    def photo_by_content(self, patient_pk: int, county: str, sha256: str) -> str | None:
        """The photo already holding this original for this patient and county, if any."""
        return photo_by_content(self._conn, patient_pk, county, sha256)

    def add_photo(self, new: NewPhoto) -> None:
        """Index a photo and its renditions (the same original twice fails the unique key)."""
        add_photo(self._conn, new)

    def add_conflict(self, conflict: NewConflict) -> bool:
        """Keep a conflicting object; False when this very content was already kept."""
        inserted = _insert_ignore(
            self._conn,
            _conflicts,
            {
                "sop_uid": conflict.sop_uid,
                "study_uid": conflict.study_uid,
                "series_uid": conflict.series_uid,
                "blob_key": conflict.blob.key,
                "size": conflict.blob.size,
                "sha256": conflict.blob.sha256,
                "existing_sha256": conflict.existing_sha256,
                "county": conflict.county,
                "source": conflict.source,
                "received_at": conflict.received_at,
            },
        )
        return inserted

    def _ensure(
        self, table: Table, values: dict[str, Any], lookup: Any, key: tuple[str, ...]
    ) -> int:
        """The primary key of a row, inserting it first if no writer has yet (rows are only
        ever added, so insert-or-ignore followed by a lookup is safe under concurrency)."""
        _insert_ignore(self._conn, table, values)
        pk = int(self._conn.execute(lookup).scalar_one())
        self.new_keys[key] = pk
        return pk

    def _ensure_patient(self, new: NewInstance, key: tuple[str, ...]) -> int:
        p = new.patient
        values = {
            "patient_id": p.patient_id,
            "issuer": p.issuer,
            "name": p.name,
            "name_key": name_key(p.name),
            "birth_date": p.birth_date,
            "sex": p.sex,
            "id_kind": p.id_kind,
            "id_valid": p.id_valid,
            "id_problem": p.id_problem,
            "county": new.county,
            "created_at": new.received_at,
        }
        lookup = select(_patients.c.id).where(
            (_patients.c.patient_id == p.patient_id) & (_patients.c.issuer == p.issuer)
        )
        pk = self._ensure(_patients, values, lookup, key)
        note_patient(self._conn, pk, new)
        return pk

    def _ensure_study(self, new: NewInstance, patient_pk: int, key: tuple[str, ...]) -> int:
        s = new.study
        filed_under, merge = current_patient(self._conn, patient_pk)  # a merged record's heir
        values = {
            "study_uid": s.study_uid,
            "patient_pk": filed_under,
            "study_date": s.study_date,
            "study_time": s.study_time,
            "accession_number": s.accession_number,
            "description": s.description,
            "referring_physician": s.referring_physician,
            "study_id": s.study_id,
            "county": new.county,
            "created_at": new.received_at,
        }
        lookup = select(_studies.c.id).where(_studies.c.study_uid == s.study_uid)
        pk = self._ensure(_studies, values, lookup, key)
        if merge is not None:
            note_redirect(self._conn, pk, patient_pk, merge)
        return pk

    def _ensure_series(self, new: NewInstance, study_pk: int, key: tuple[str, ...]) -> int:
        s = new.series
        values = {
            "series_uid": s.series_uid,
            "study_pk": study_pk,
            "modality": s.modality,
            "series_number": s.series_number,
            "description": s.description,
            "body_part": s.body_part,
            "county": new.county,
        }
        lookup = select(_series.c.id).where(_series.c.series_uid == s.series_uid)
        return self._ensure(_series, values, lookup, key)

    def append_audit(self, event: NewAuditEvent, link: ChainLink) -> AuditEvent:
        """Append to the chain; the head row is locked so that appenders line up one by one.

        This is what keeps one chain valid with many writers (threads, DICOM workers, several
        nodes on one PostgreSQL): the row lock is held until commit, so the next appender reads
        the committed head, and an appender that rolls back leaves the head as it was. Callers
        append last in their transaction to hold the lock as briefly as possible.
        """
        head = self._conn.execute(_LOCK_HEAD).mappings().first()
        if head is None:  # the very first event: whoever inserts the genesis head goes first
            _insert_ignore(self._conn, _head, {"chain": CHAIN, "seq": 0, "hash": CHAIN_GENESIS})
            head = self._conn.execute(_LOCK_HEAD).mappings().one()
        seq, prev = int(head["seq"]) + 1, str(head["hash"])
        digest = link(prev, seq, event)
        row, patients, counties = audit_rows(seq, prev, digest, event)
        # Statements built once and given parameters: building them per event cost more than
        # the rest of the append (see docs/PERFORMANCE.md, "Audit").
        if self._conn.dialect.name == "postgresql":
            self._conn.execute(
                _POSTGRES_APPEND,
                {
                    **row,
                    "patient_list": [p["patient_id"] for p in patients],
                    "county_list": [c["county"] for c in counties],
                    "chain": CHAIN,
                },
            )
        else:
            self._conn.execute(_INSERT_EVENT, row)
            if patients:
                self._conn.execute(_INSERT_EVENT_PATIENT, patients)
            self._conn.execute(_INSERT_EVENT_COUNTY, counties)
            self._conn.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": digest})
        fields_of_event = {f.name: getattr(event, f.name) for f in fields(event)}
        return AuditEvent(seq=seq, prev_hash=prev, hash=digest, **fields_of_event)

    # -- accounts and sessions -----------------------------------------------------------------

    def add_user(self, account: UserAccount, created_at: str) -> bool:
        """Create an account; False when the name is taken."""
        return _insert_ignore(
            self._conn,
            _users,
            {
                "username": account.username,
                "password_hash": account.password_hash,
                "role": account.role,
                "county": account.county,
                "failed_logins": 0,
                "locked_until": None,
                "created_at": created_at,
                "display_name": account.display_name,
                "hpr_number": account.hpr_number,
                "pid_sha256": account.pid_sha256,
                "scopes": " ".join(account.scopes),
                "disabled": account.disabled,
            },
        )

    def set_disabled(self, username: str, disabled: bool) -> bool:
        changed = self._conn.execute(
            update(_users)
            .where(_users.c.username == username)
            .values(disabled=disabled)
            .returning(_users.c.id)
        ).first()
        if disabled:
            self._conn.execute(sql_delete(_sessions).where(_sessions.c.username == username))
        return changed is not None

    def set_password(self, username: str, password_hash: str) -> None:
        self._conn.execute(
            update(_users).where(_users.c.username == username).values(password_hash=password_hash)
        )

    def record_login_failure(self, username: str, locked_until: str | None) -> None:
        self._conn.execute(
            update(_users)
            .where(_users.c.username == username)
            .values(failed_logins=_users.c.failed_logins + 1, locked_until=locked_until)
        )

    def record_login_success(self, username: str) -> None:
        self._conn.execute(
            update(_users)
            .where(_users.c.username == username)
            .values(failed_logins=0, locked_until=None)
        )

    def add_session(self, session: WebSession) -> None:
        self._conn.execute(
            _sessions.insert().values(
                token_hash=session.token_hash,
                username=session.username,
                created_at=session.created_at,
                expires_at=session.expires_at,
                last_seen_at=session.last_seen_at or session.created_at,
                csrf_token=session.csrf_token,
                auth_method=session.auth_method,
            )
        )

    def touch_session(self, token_hash: str, now: str) -> None:
        self._conn.execute(
            update(_sessions).where(_sessions.c.token_hash == token_hash).values(last_seen_at=now)
        )

    def add_grant(
        self,
        username: str,
        user_county: str,
        patient_id: str,
        reason_code: str,
        reason_text: str,
        granted_at: str,
        expires_at: str,
        audit_seq: int,
    ) -> BreakGlassGrant:
        values: dict[str, Any] = {
            "username": username,
            "user_county": user_county,
            "patient_id": patient_id,
            "reason_code": reason_code,
            "reason_text": reason_text,
            "granted_at": granted_at,
            "expires_at": expires_at,
            "audit_seq": audit_seq,
        }
        result = self._conn.execute(_grants.insert().values(**values))
        key = result.inserted_primary_key
        assert key is not None
        return BreakGlassGrant(id=int(key[0]), **values)

    def add_checkpoint(self, checkpoint: Checkpoint) -> bool:
        """Keep a signed checkpoint; False if one for this size exists already."""
        return _insert_ignore(
            self._conn,
            _checkpoints,
            {
                "seq": checkpoint.seq,
                "head_hash": checkpoint.head_hash,
                "signed_at": checkpoint.signed_at,
                "key_id": checkpoint.key_id,
                "note": checkpoint.note,
            },
        )

    def set_forward_cursor(self, name: str, seq: int, event_hash: str, updated_at: str) -> None:
        """Move forwarder `name`'s cursor to the event (`seq`, `event_hash`)."""
        values = {"name": name, "seq": seq, "hash": event_hash, "updated_at": updated_at}
        changed = {"seq": seq, "hash": event_hash, "updated_at": updated_at}
        stmt = upsert_insert(self._conn, _forward_cursors).values(**values)
        self._conn.execute(
            stmt.on_conflict_do_update(index_elements=[_forward_cursors.c.name], set_=changed)
        )

    def delete_session(self, token_hash: str) -> None:
        self._conn.execute(sql_delete(_sessions).where(_sessions.c.token_hash == token_hash))

    def purge_sessions(self, now: str) -> None:
        self._conn.execute(sql_delete(_sessions).where(_sessions.c.expires_at <= now))


_OUTCOMES = (0, 4, 8, 12)
_APPEND_SKEW = timedelta(minutes=10)
"""How far an event's time may run ahead of a later event's: the time is taken before the writer
queues for the lock. Generous, since it only widens the range walked."""


def _seq_bound(conn: Connection, moment: str, later: bool) -> int | None:
    """A sequence number no event recorded at `moment` (or beyond, in that direction) crosses.

    Appends are ordered by sequence number but take their time a little before they queue, so
    for events a before b, a's time is at most `_APPEND_SKEW` after b's. Hence every event at or
    after `moment` comes after any event recorded more than the skew before it, and every event
    at or before `moment` comes before any recorded more than the skew after it. One probe of the
    time index finds such an event; None when there is none.
    """
    if later:
        stmt = (
            select(_audit.c.seq)
            .where(_audit.c.recorded_at > _shift(moment, _APPEND_SKEW))
            .order_by(_audit.c.recorded_at)
        )
    else:
        stmt = (
            select(_audit.c.seq)
            .where(_audit.c.recorded_at < _shift(moment, -_APPEND_SKEW))
            .order_by(_audit.c.recorded_at.desc())
        )
    found = conn.execute(stmt.limit(1)).scalar()
    return None if found is None else int(found)


def _shift(moment: str, margin: timedelta) -> str:
    """An ISO time string moved by `margin`; unparseable strings are left as they are."""
    try:
        parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    except ValueError:
        return moment
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return (parsed + margin).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _insert_ignore(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """INSERT that does nothing when a unique key already exists; True when a row was added."""
    stmt = upsert_insert(conn, table).values(**values).on_conflict_do_nothing()
    # RETURNING, not rowcount: psycopg reports no row count for a skipped conflict (-1).
    key = next(iter(table.primary_key.columns))
    return conn.execute(stmt.returning(key)).first() is not None


_NAME_SEPARATORS = " ^=-,"
"""What separates the words of a person name for fuzzy matching: the PN component and group
delimiters, and spaces and hyphens inside components."""

_FOLDED_EXTRA = {"ø": "o", "Ø": "o", "đ": "d", "Đ": "d", "ł": "l", "Ł": "l", "ß": "s"}


def _fold(char: str) -> str:
    """A letter without case or accents: `Å`→`a`, `é`→`e`, `ø`→`o` (`æ` stays `æ`)."""
    if char in _FOLDED_EXTRA:
        return _FOLDED_EXTRA[char]
    base = unicodedata.normalize("NFKD", char)[:1] or char
    return base.casefold()


def _variants_table() -> dict[str, str]:
    """For each folded letter, every Latin-1 and Latin Extended-A letter that folds to it."""
    table: dict[str, set[str]] = {}
    for code in list(range(0x41, 0x5B)) + list(range(0x61, 0x7B)) + list(range(0xC0, 0x180)):
        char = chr(code)
        if char.isalpha():
            table.setdefault(_fold(char), set()).add(char)
    return {key: "".join(sorted(chars)) for key, chars in table.items()}


_VARIANTS = _variants_table()


def _char_class(chars: str) -> str:
    unique = "".join(sorted(set(chars)))
    if len(unique) == 1:
        return re.escape(unique)
    return "[" + "".join("\\" + c if c in "\\]^-[" else c for c in unique) + "]"


def _regex_body(pattern: str, letter: Callable[[str], str]) -> str:
    """A DICOM wildcard pattern as a regular expression body, each letter through `letter`."""
    parts: list[str] = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        elif char.isalpha():
            parts.append(letter(char))
        else:
            parts.append(re.escape(char))
    return "".join(parts)


def _any_case(char: str) -> str:
    return _char_class(char + char.lower() + char.upper())


def _any_accent(char: str) -> str:
    folded = _fold(char)
    return _char_class(_VARIANTS.get(folded, folded) + char.lower() + char.upper())


def person_name_regex(pattern: str, fuzzy: bool) -> str:
    """The regular expression (valid in PostgreSQL and Python) a person name must match.

    Plain: the whole name matches the wildcard pattern, ignoring case (`æ` matches `Æ`).
    Fuzzy: every word of the pattern (split at spaces and `^`) must begin some word of the name,
    ignoring case and accents (`soren` matches `Søren`, `ake` matches `Åke`; `æ` is a letter of
    its own and does not match `ae`).
    """
    if not fuzzy:
        return "^" + _regex_body(pattern, _any_case) + "$"
    separators = _char_class(_NAME_SEPARATORS)
    words = [w for w in re.split(r"[ ^=,]+", pattern) if w.strip("*")]
    if not words:
        return ""
    return "".join(
        f"(?=(^|.*{separators}){_regex_body(word.strip('*'), _any_accent)})" for word in words
    )


def _text_match(column: Any, pattern: str) -> Any:
    """Case-sensitive single value or wildcard match of a text attribute (PS3.4 C.2.2.2)."""
    if "*" in pattern or "?" in pattern:
        return column.like(wildcard_to_like(pattern), escape="\\") & column.regexp_match(
            "^" + _regex_body(pattern, re.escape) + "$"
        )
    return column == pattern


def _range(column: Any, low: str | None, high: str | None) -> Any:
    condition = column != ""
    if low:
        condition = condition & (column >= low)
    if high:
        condition = condition & (column <= high)
    return condition


def _padded_time(column: Any) -> Any:
    """A stored TM (`HH`, `HHMM`, `HHMMSS[.F…]`) widened to `HHMMSS…` so ranges compare as text."""
    return case(
        (func.length(column) < 6, column + func.substr("000000", 1, 6 - func.length(column))),
        else_=column,
    )


def _apply_scope(stmt: Any, query: StudyQuery) -> Any:
    """The principal's county plus the patients they hold break-the-glass grants for."""
    if query.county and query.granted_patient_ids:
        return stmt.where(
            (_studies.c.county == query.county)
            | _patients.c.patient_id.in_(query.granted_patient_ids)
        )
    if query.county:
        return stmt.where(_studies.c.county == query.county)
    return stmt


def _apply_study_filters(stmt: Any, query: StudyQuery) -> Any:
    """Apply patient- and study-level keys; typed loosely as the select has many shapes."""
    if query.patient_id:
        stmt = stmt.where(_text_match(_patients.c.patient_id, query.patient_id))
    if query.patient_name:
        regex = person_name_regex(query.patient_name, query.fuzzy_names)
        if not query.fuzzy_names:
            # LIKE on the case-folded key narrows cheaply; the expression decides.
            like = wildcard_to_like(name_key(query.patient_name))
            stmt = stmt.where(_patients.c.name_key.like(like, escape="\\"))
        if regex:
            stmt = stmt.where(_patients.c.name.regexp_match(regex))
    if query.birth_date:
        stmt = stmt.where(_patients.c.birth_date == query.birth_date)
    if query.birth_date_from or query.birth_date_to:
        stmt = stmt.where(
            _range(_patients.c.birth_date, query.birth_date_from, query.birth_date_to)
        )
    if query.patient_sex:
        stmt = stmt.where(_text_match(_patients.c.sex, query.patient_sex))
    if query.study_date_from or query.study_date_to:
        stmt = stmt.where(_range(_studies.c.study_date, query.study_date_from, query.study_date_to))
    if query.study_time_from or query.study_time_to:
        padded = _padded_time(_studies.c.study_time)
        stmt = stmt.where(
            (_studies.c.study_time != "")
            & _range(padded, query.study_time_from, query.study_time_to)
        )
    if query.accession_number:
        stmt = stmt.where(_text_match(_studies.c.accession_number, query.accession_number))
    if query.study_id:
        stmt = stmt.where(_text_match(_studies.c.study_id, query.study_id))
    if query.study_description:
        stmt = stmt.where(_text_match(_studies.c.description, query.study_description))
    if query.referring_physician:
        regex = person_name_regex(query.referring_physician, query.fuzzy_names)
        if regex:
            stmt = stmt.where(_studies.c.referring_physician.regexp_match(regex))
    if query.study_uids:
        stmt = stmt.where(_studies.c.study_uid.in_(query.study_uids))
    return _apply_scope(stmt, query)


def _modality_values(query: StudyQuery) -> tuple[str, ...]:
    return (query.modality, *query.modalities) if query.modality else query.modalities


def _apply_lower_filters(stmt: Any, query: StudyQuery, level: str) -> Any:
    """Series- and instance-level keys: on the row itself at its own level, or as "has a
    matching series/instance" above it (ModalitiesInStudy: any series of the study)."""
    modalities = _modality_values(query)
    series_keys = bool(modalities or query.series_uids or query.series_number is not None)
    instance_keys = bool(
        query.sop_uids or query.sop_class_uids or query.instance_number is not None
    )
    if level == "study" or level == "patient":
        if series_keys or instance_keys:
            stmt = stmt.where(exists().where(_series_match(query)))
        return stmt
    stmt = stmt.where(_series_conditions(query))
    if level == "series":
        if instance_keys:
            stmt = stmt.where(
                exists().where(
                    (_instances.c.series_pk == _series.c.id) & _instance_conditions(query)
                )
            )
        return stmt
    return stmt.where(_instance_conditions(query))


def _series_conditions(query: StudyQuery) -> Any:
    condition: Any = true()
    modalities = _modality_values(query)
    if modalities:
        condition = condition & _series.c.modality.in_(modalities)
    if query.series_uids:
        condition = condition & _series.c.series_uid.in_(query.series_uids)
    if query.series_number is not None:
        condition = condition & (_series.c.series_number == query.series_number)
    return condition


def _instance_conditions(query: StudyQuery) -> Any:
    condition: Any = true()
    if query.sop_uids:
        condition = condition & _instances.c.sop_uid.in_(query.sop_uids)
    if query.sop_class_uids:
        condition = condition & _instances.c.sop_class_uid.in_(query.sop_class_uids)
    if query.instance_number is not None:
        condition = condition & (_instances.c.instance_number == query.instance_number)
    return condition


def _series_match(query: StudyQuery) -> Any:
    """A series of the outer query's study that has the series and instance keys asked for."""
    condition = (_series.c.study_pk == _studies.c.id) & _series_conditions(query)
    if query.sop_uids or query.sop_class_uids or query.instance_number is not None:
        condition = condition & exists().where(
            (_instances.c.series_pk == _series.c.id) & _instance_conditions(query)
        )
    return condition


def _stored_instance(row: Any) -> StoredInstance:
    return StoredInstance(
        patient_id=row["patient_id"],
        county=row["county"],
        study_uid=row["study_uid"],
        series_uid=row["series_uid"],
        sop_uid=row["sop_uid"],
        sop_class_uid=row["sop_class_uid"],
        transfer_syntax_uid=row["transfer_syntax_uid"],
        instance_number=row["instance_number"],
        rows=row["rows"],
        columns=row["columns"],
        frames=row["frames"],
        blob=BlobRef(key=row["blob_key"], size=row["size"], sha256=row["sha256"]),
        metadata_json=row["metadata_json"],
    )


def _audit_event(row: Any) -> AuditEvent:
    return AuditEvent(
        seq=row["seq"],
        recorded_at=row["recorded_at"],
        event_id=row["event_id"],
        event_name=row["event_name"],
        action=row["action"],
        outcome=row["outcome"],
        outcome_description=row["outcome_description"],
        actor=row["actor"],
        actor_kind=row["actor_kind"],
        actor_role=row["actor_role"],
        county=row["county"],
        source_address=row["source_address"],
        patient_ids=tuple(json.loads(row["patient_ids"])),
        study_uids=tuple(json.loads(row["study_uids"])),
        object_count=row["object_count"],
        query=row["query"],
        details=json.loads(row["details"]),
        prev_hash=row["prev_hash"],
        hash=row["hash"],
        counties=tuple(json.loads(row["counties"])),
    )


def _user_account(row: Any) -> UserAccount:
    return UserAccount(
        username=row["username"],
        password_hash=row["password_hash"],
        role=row["role"],
        county=row["county"],
        failed_logins=row["failed_logins"],
        locked_until=row["locked_until"],
        display_name=row["display_name"],
        hpr_number=row["hpr_number"],
        pid_sha256=row["pid_sha256"],
        scopes=tuple(row["scopes"].split()),
        disabled=bool(row["disabled"]),
    )


def _grant(row: Any) -> BreakGlassGrant:
    return BreakGlassGrant(**dict(row))
