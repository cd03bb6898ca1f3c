"""Patient reconciliation in the index: aliases, the names and birth dates seen, and the
administrators' merges, splits and accepts with what undoing them needs.

The ingest transaction notes what each new patient key brought (`note_patient`) and files a new
study of a merged record under the record it was merged into (`current_patient`). Everything
here is only ever added; the two in-place changes reconciliation needs are a study's
`patient_pk` (merge, split, undo) and a patient's name and birth date (accept).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, exists, func, select, update

from storage import models
from storage.database import upsert_insert
from storage.records import NewInstance

_patients: Table = models.Patient.__table__  # type: ignore[assignment]
_studies: Table = models.Study.__table__  # type: ignore[assignment]
_series: Table = models.Series.__table__  # type: ignore[assignment]
_instances: Table = models.Instance.__table__  # type: ignore[assignment]
_photos: Table = models.Photo.__table__  # type: ignore[assignment]
_aliases: Table = models.PatientAlias.__table__  # type: ignore[assignment]
_names: Table = models.PatientName.__table__  # type: ignore[assignment]
_changes: Table = models.PatientChange.__table__  # type: ignore[assignment]
_redirects: Table = models.RedirectedStudy.__table__  # type: ignore[assignment]

_MAX_MERGE_DEPTH = 20
"""How many merges in a row a new study follows before it stops (a loop cannot be made through
the service, which refuses merging into a merged record; this only bounds the walk)."""


@dataclass(frozen=True)
class PatientRow:
    pk: int
    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str
    id_valid: bool
    id_problem: str | None
    county: str
    counties: tuple[str, ...] = ()
    """Counties owning the record's studies now."""


@dataclass(frozen=True)
class NameVariant:
    id: int
    patient_pk: int
    name: str
    birth_date: str
    birth_date_problem: str | None
    county: str
    first_seen: str
    source: str


@dataclass(frozen=True)
class Alias:
    patient_pk: int
    local_id: str
    issuer: str
    county: str
    first_seen: str
    source: str


@dataclass(frozen=True)
class StudyRow:
    study_uid: str
    patient_pk: int
    study_date: str
    description: str
    county: str
    modalities: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChangeRow:
    id: int
    kind: str
    patient_pk: int
    target_pk: int | None
    study_uids: tuple[str, ...]
    details: dict[str, Any]
    undoes: int | None
    actor: str
    made_at: str
    undone_by: int | None = None


@dataclass(frozen=True)
class NewChange:
    kind: str
    patient_pk: int
    target_pk: int | None
    actor: str
    made_at: str
    study_uids: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    undoes: int | None = None


def _insert_ignore(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    stmt = upsert_insert(conn, table).values(**values).on_conflict_do_nothing()
    key = next(iter(table.primary_key.columns))
    return conn.execute(stmt.returning(key)).first() is not None


# -- in the ingest transaction ---------------------------------------------------------------------


def note_patient(conn: Connection, patient_pk: int, new: NewInstance) -> None:
    """Keep the object's local ID as an alias and its name and birth date as seen for this
    patient in this county (each distinct one once)."""
    p = new.patient
    if p.alias_id:
        _insert_ignore(
            conn,
            _aliases,
            {
                "patient_pk": patient_pk,
                "local_id": p.alias_id,
                "issuer": p.alias_issuer,
                "county": new.county,
                "first_seen": new.received_at,
                "source": new.source[:200],
            },
        )
    _insert_ignore(
        conn,
        _names,
        {
            "patient_pk": patient_pk,
            "name": p.name,
            "birth_date": p.birth_date,
            "birth_date_problem": p.birth_date_problem,
            "county": new.county,
            "first_seen": new.received_at,
            "source": new.source[:200],
        },
    )


def _undone() -> Any:
    return select(_changes.c.undoes).where(_changes.c.undoes.is_not(None))


def active_merge(conn: Connection, patient_pk: int) -> tuple[int, int] | None:
    """(change id, target record) of the merge in force out of this record, if any."""
    row = conn.execute(
        select(_changes.c.id, _changes.c.target_pk)
        .where(
            (_changes.c.kind == "merge")
            & (_changes.c.patient_pk == patient_pk)
            & _changes.c.id.not_in(_undone())
        )
        .order_by(_changes.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None or row[1] is None else (int(row[0]), int(row[1]))


def current_patient(conn: Connection, patient_pk: int) -> tuple[int, int | None]:
    """The record a new study of `patient_pk` belongs in: itself, or the record it was merged
    into (followed through later merges), with the id of the first merge followed."""
    current, first_change = patient_pk, None
    for _ in range(_MAX_MERGE_DEPTH):
        merged = active_merge(conn, current)
        if merged is None:
            break
        change_id, current = merged
        first_change = first_change or change_id
    return current, first_change


def note_redirect(conn: Connection, study_pk: int, named_pk: int, change_id: int) -> None:
    _insert_ignore(
        conn,
        _redirects,
        {"study_pk": study_pk, "named_patient_pk": named_pk, "change_id": change_id},
    )


# -- reads -----------------------------------------------------------------------------------------


def _patient_row(row: Any, counties: Sequence[str] = ()) -> PatientRow:
    return PatientRow(
        pk=row["id"],
        patient_id=row["patient_id"],
        issuer=row["issuer"],
        name=row["name"],
        birth_date=row["birth_date"],
        sex=row["sex"],
        id_valid=bool(row["id_valid"]),
        id_problem=row["id_problem"],
        county=row["county"],
        counties=tuple(counties),
    )


def _change_row(row: Any, undone_by: int | None = None) -> ChangeRow:
    return ChangeRow(
        id=row["id"],
        kind=row["kind"],
        patient_pk=row["patient_pk"],
        target_pk=row["target_pk"],
        study_uids=tuple(json.loads(row["study_uids"])),
        details=json.loads(row["details"]),
        undoes=row["undoes"],
        actor=row["actor"],
        made_at=row["made_at"],
        undone_by=undone_by,
    )


def _in_county(county: str | None) -> Any:
    """Records with a study the county owns (any record when no county is given)."""
    condition = (_studies.c.patient_pk == _patients.c.id) & (
        _studies.c.county == county if county else _studies.c.id.is_not(None)
    )
    return exists().where(condition)


class PatientRecords:
    """Reads for the reconciliation (each in its own short transaction)."""

    def __init__(self, read: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._read = read

    def _rows(self, conn: Connection, stmt: Any) -> list[PatientRow]:
        rows = conn.execute(stmt).mappings().all()
        pks = [row["id"] for row in rows]
        counties: dict[int, list[str]] = {}
        if pks:
            found = conn.execute(
                select(_studies.c.patient_pk, _studies.c.county)
                .where(_studies.c.patient_pk.in_(pks))
                .distinct()
                .order_by(_studies.c.county)
            )
            for pk, county in found:
                counties.setdefault(pk, []).append(county)
        return [_patient_row(row, counties.get(row["id"], ())) for row in rows]

    def patients(self, pks: Iterable[int]) -> list[PatientRow]:
        found: list[PatientRow] = []
        with self._read() as conn:
            for chunk in _chunks(pks):
                found += self._rows(conn, select(_patients).where(_patients.c.id.in_(chunk)))
        return found

    def patients_by_id(self, patient_id: str) -> list[PatientRow]:
        """Records filed under this Patient ID (any issuer) or holding it as an alias."""
        alias_of = select(_aliases.c.patient_pk).where(_aliases.c.local_id == patient_id)
        stmt = (
            select(_patients)
            .where((_patients.c.patient_id == patient_id) | _patients.c.id.in_(alias_of))
            .order_by(_patients.c.id)
        )
        with self._read() as conn:
            return self._rows(conn, stmt)

    def patients_of_studies(self, study_uids: Iterable[str]) -> list[int]:
        found: set[int] = set()
        with self._read() as conn:
            for chunk in _chunks(study_uids):
                rows = conn.execute(
                    select(_studies.c.patient_pk).where(_studies.c.study_uid.in_(chunk))
                )
                found.update(int(pk) for pk in rows.scalars())
        return sorted(found)

    def with_name_variants(self, county: str | None, pks: Sequence[int] | None = None) -> list[int]:
        """Records that have seen a name or birth date other than their own, or a birth date
        that contradicts their national ID (the core decides which of these conflict)."""
        differs = (_names.c.patient_pk == _patients.c.id) & (
            (_names.c.name != _patients.c.name)
            | (_names.c.birth_date != _patients.c.birth_date)
            | _names.c.birth_date_problem.is_not(None)
        )
        stmt = select(_patients.c.id).where(exists().where(differs)).where(_in_county(county))
        if pks is not None:
            stmt = stmt.where(_patients.c.id.in_(pks))
        with self._read() as conn:
            return [int(pk) for pk in conn.execute(stmt.order_by(_patients.c.id)).scalars()]

    def with_invalid_id(self, county: str | None, pks: Sequence[int] | None = None) -> list[int]:
        """Records holding studies under an ID that is not a valid national ID (placeholders of
        studies without any ID included)."""
        stmt = (
            select(_patients.c.id)
            .where(_patients.c.id_valid.is_(False))
            .where(_in_county(county))
            .order_by(_patients.c.id)
        )
        if pks is not None:
            stmt = stmt.where(_patients.c.id.in_(pks))
        with self._read() as conn:
            return [int(pk) for pk in conn.execute(stmt).scalars()]

    def sharing_national_id(
        self, county: str | None, pks: Sequence[int] | None = None
    ) -> dict[int, list[int]]:
        """Records with a valid ID that another record with studies also has (under another
        issuer), and those other records."""
        other = _patients.alias("other")
        stmt = (
            select(_patients.c.id, other.c.id)
            .join(other, other.c.patient_id == _patients.c.patient_id)
            .where(_patients.c.id_valid.is_(True) & (other.c.id != _patients.c.id))
            .where(_in_county(county))
            .where(exists().where(_studies.c.patient_pk == other.c.id))
            .order_by(_patients.c.id, other.c.id)
        )
        if pks is not None:
            stmt = stmt.where(_patients.c.id.in_(pks))
        result: dict[int, list[int]] = {}
        with self._read() as conn:
            for pk, other_pk in conn.execute(stmt):
                result.setdefault(int(pk), []).append(int(other_pk))
        return result

    def name_variants(self, pks: Iterable[int]) -> dict[int, list[NameVariant]]:
        result: dict[int, list[NameVariant]] = {}
        with self._read() as conn:
            for chunk in _chunks(pks):
                rows = conn.execute(
                    select(_names).where(_names.c.patient_pk.in_(chunk)).order_by(_names.c.id)
                ).mappings()
                for row in rows:
                    result.setdefault(row["patient_pk"], []).append(NameVariant(**dict(row)))
        return result

    def aliases(self, pks: Iterable[int]) -> dict[int, list[Alias]]:
        result: dict[int, list[Alias]] = {}
        with self._read() as conn:
            for chunk in _chunks(pks):
                rows = conn.execute(
                    select(_aliases).where(_aliases.c.patient_pk.in_(chunk)).order_by(_aliases.c.id)
                ).mappings()
                for row in rows:
                    values = {k: v for k, v in dict(row).items() if k != "id"}
                    result.setdefault(row["patient_pk"], []).append(Alias(**values))
        return result

    def studies(self, pks: Iterable[int]) -> dict[int, list[StudyRow]]:
        result: dict[int, list[StudyRow]] = {}
        with self._read() as conn:
            for chunk in _chunks(pks):
                result.update(_studies_of(conn, chunk))
        return result

    def changes(self, limit: int = 50, patient_pk: int | None = None) -> list[ChangeRow]:
        """The newest changes first, each with the undo that reversed it, if any."""
        stmt = select(_changes).order_by(_changes.c.id.desc()).limit(limit)
        if patient_pk is not None:
            stmt = stmt.where(
                (_changes.c.patient_pk == patient_pk) | (_changes.c.target_pk == patient_pk)
            )
        with self._read() as conn:
            rows = conn.execute(stmt).mappings().all()
            undone = _undone_by(conn, [row["id"] for row in rows])
        return [_change_row(row, undone.get(row["id"])) for row in rows]

    def change(self, change_id: int) -> ChangeRow | None:
        with self._read() as conn:
            return _change(conn, change_id)

    def active_accepts(self, pks: Iterable[int]) -> dict[int, ChangeRow]:
        """The newest accept in force per record: what an administrator checked."""
        result: dict[int, ChangeRow] = {}
        with self._read() as conn:
            for chunk in _chunks(pks):
                rows = conn.execute(
                    select(_changes)
                    .where(
                        (_changes.c.kind == "accept")
                        & _changes.c.patient_pk.in_(chunk)
                        & _changes.c.id.not_in(_undone())
                    )
                    .order_by(_changes.c.id)
                ).mappings()
                for row in rows:
                    result[row["patient_pk"]] = _change_row(row)  # the newest wins
        return result


_CHUNK = 500
"""Keys per IN list: SQLite allows 32,766 parameters a statement, and an import may touch more
records than that."""


def _chunks(values: Iterable[Any]) -> list[list[Any]]:
    wanted = sorted(set(values))
    return [wanted[i : i + _CHUNK] for i in range(0, len(wanted), _CHUNK)]


def _studies_of(conn: Connection, pks: Sequence[int]) -> dict[int, list[StudyRow]]:
    rows = conn.execute(
        select(
            _studies.c.id,
            _studies.c.study_uid,
            _studies.c.patient_pk,
            _studies.c.study_date,
            _studies.c.description,
            _studies.c.county,
        )
        .where(_studies.c.patient_pk.in_(pks))
        .order_by(_studies.c.study_date, _studies.c.id)
    ).all()
    modalities: dict[int, list[str]] = {}
    if rows:
        found = conn.execute(
            select(_series.c.study_pk, _series.c.modality)
            .where(_series.c.study_pk.in_([row[0] for row in rows]))
            .distinct()
            .order_by(_series.c.modality)
        )
        for study_pk, modality in found:
            if modality:
                modalities.setdefault(study_pk, []).append(modality)
    result: dict[int, list[StudyRow]] = {}
    for study_pk, uid, patient_pk, date, description, county in rows:
        result.setdefault(patient_pk, []).append(
            StudyRow(
                uid, patient_pk, date, description, county, tuple(modalities.get(study_pk, ()))
            )
        )
    return result


def _undone_by(conn: Connection, ids: Sequence[int]) -> dict[int, int]:
    if not ids:
        return {}
    found = conn.execute(
        select(_changes.c.undoes, _changes.c.id).where(_changes.c.undoes.in_(ids))
    ).all()
    return {int(undoes): int(by) for undoes, by in found}


def _change(conn: Connection, change_id: int) -> ChangeRow | None:
    row = conn.execute(select(_changes).where(_changes.c.id == change_id)).mappings().first()
    if row is None:
        return None
    return _change_row(row, _undone_by(conn, [change_id]).get(change_id))


def _active_accept(conn: Connection, pk: int) -> ChangeRow | None:
    row = (
        conn.execute(
            select(_changes)
            .where(
                (_changes.c.kind == "accept")
                & (_changes.c.patient_pk == pk)
                & _changes.c.id.not_in(_undone())
            )
            .order_by(_changes.c.id.desc())
            .limit(1)
        )
        .mappings()
        .first()
    )
    return None if row is None else _change_row(row)


class PatientChanges:
    """The writes of merges, splits, accepts and undos, inside one index transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def lock(self, pks: Iterable[int]) -> list[PatientRow]:
        """The records, locked until commit (PostgreSQL), so that two administrators changing
        the same records take turns and each sees the other's change (SQLite has one writer)."""
        wanted = sorted(set(pks))
        rows = self._conn.execute(
            select(_patients).where(_patients.c.id.in_(wanted)).with_for_update()
        ).mappings()
        found = {row["id"]: _patient_row(row) for row in rows}
        return [found[pk] for pk in wanted if pk in found]

    def studies(self, pk: int) -> list[StudyRow]:
        return _studies_of(self._conn, [pk]).get(pk, [])

    def move_studies(self, from_pk: int, to_pk: int, study_uids: Sequence[str]) -> list[str]:
        """Move these studies (those of them on `from_pk`) to `to_pk`; the uids moved."""
        if not study_uids:
            return []
        moved = self._conn.execute(
            update(_studies)
            .where((_studies.c.patient_pk == from_pk) & _studies.c.study_uid.in_(study_uids))
            .values(patient_pk=to_pk)
            .returning(_studies.c.study_uid)
        )
        return sorted(str(uid) for uid in moved.scalars())

    def move_photos(self, from_pk: int, to_pk: int, study_uids: Sequence[str] | None) -> list[str]:
        """Move the record's photos (those of these studies, or all) to `to_pk`; their ids."""
        stmt = update(_photos).where(_photos.c.patient_pk == from_pk)
        if study_uids is not None:
            if not study_uids:
                return []
            stmt = stmt.where(_photos.c.study_uid.in_(study_uids))
        moved = self._conn.execute(stmt.values(patient_pk=to_pk).returning(_photos.c.photo_id))
        return sorted(str(photo_id) for photo_id in moved.scalars())

    def move_photo_ids(self, from_pk: int, to_pk: int, photo_ids: Sequence[str]) -> list[str]:
        if not photo_ids:
            return []
        moved = self._conn.execute(
            update(_photos)
            .where((_photos.c.patient_pk == from_pk) & _photos.c.photo_id.in_(photo_ids))
            .values(patient_pk=to_pk)
            .returning(_photos.c.photo_id)
        )
        return sorted(str(photo_id) for photo_id in moved.scalars())

    def redirected_from(self, named_pk: int, now_on: int) -> list[str]:
        """Studies whose objects named `named_pk` and were filed under `now_on` instead."""
        found = self._conn.execute(
            select(_studies.c.study_uid)
            .join(_redirects, _redirects.c.study_pk == _studies.c.id)
            .where((_redirects.c.named_patient_pk == named_pk) & (_studies.c.patient_pk == now_on))
        )
        return sorted(str(uid) for uid in found.scalars())

    def ensure_patient(self, values: dict[str, Any]) -> tuple[int, bool]:
        """The record with this Patient ID and issuer, created from `values` if missing;
        (key, created)."""
        created = _insert_ignore(self._conn, _patients, values)
        pk = self._conn.execute(
            select(_patients.c.id).where(
                (_patients.c.patient_id == values["patient_id"])
                & (_patients.c.issuer == values["issuer"])
            )
        ).scalar_one()
        return int(pk), created

    def set_identity(self, pk: int, name: str, name_key: str, birth_date: str) -> None:
        self._conn.execute(
            update(_patients)
            .where(_patients.c.id == pk)
            .values(name=name, name_key=name_key, birth_date=birth_date)
        )

    def last_name_variant(self, pk: int) -> int:
        found = self._conn.execute(
            select(func.coalesce(func.max(_names.c.id), 0)).where(_names.c.patient_pk == pk)
        ).scalar_one()
        return int(found)

    def add_change(self, change: NewChange) -> int:
        result = self._conn.execute(
            _changes.insert().values(
                kind=change.kind,
                patient_pk=change.patient_pk,
                target_pk=change.target_pk,
                study_uids=json.dumps(list(change.study_uids)),
                details=json.dumps(change.details, sort_keys=True, ensure_ascii=False),
                undoes=change.undoes,
                actor=change.actor,
                made_at=change.made_at,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def change(self, change_id: int) -> ChangeRow | None:
        return _change(self._conn, change_id)

    def later_changes(self, change: ChangeRow) -> list[ChangeRow]:
        """Changes in force made after `change` to any record it touched."""
        touched = {change.patient_pk} | ({change.target_pk} if change.target_pk else set())
        rows = (
            self._conn.execute(
                select(_changes)
                .where(
                    (_changes.c.id > change.id)
                    & (_changes.c.kind != "undo")
                    & (_changes.c.patient_pk.in_(touched) | _changes.c.target_pk.in_(touched))
                    & _changes.c.id.not_in(_undone())
                )
                .order_by(_changes.c.id)
            )
            .mappings()
            .all()
        )
        return [_change_row(row) for row in rows]

    def active_merge(self, pk: int) -> tuple[int, int] | None:
        return active_merge(self._conn, pk)

    def active_accept(self, pk: int) -> ChangeRow | None:
        return _active_accept(self._conn, pk)
