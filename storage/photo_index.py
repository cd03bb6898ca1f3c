"""The index of clinical photos and video: a patient's gallery, one photo, and the writes.

Kept apart from `storage.index` because photos have their own shape (one row of facts and a row
per stored rendition) while sharing its connections and transactions: `Index.photos` reads,
`IndexTransaction.add_photo` writes in the same transaction as the DICOM wrapper and the audit
event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, Table, select

from storage import models
from storage.errors import IndexUnavailable
from storage.records import BlobRef, NewPhoto, PatientRecord, PhotoFacts, PhotoQuery, PhotoRecord

_patients: Table = models.Patient.__table__  # type: ignore[assignment]
_studies: Table = models.Study.__table__  # type: ignore[assignment]
_photos: Table = models.Photo.__table__  # type: ignore[assignment]
_media: Table = models.MediaBlob.__table__  # type: ignore[assignment]

Reader = Callable[[], AbstractContextManager[Connection]]


def teeth_text(teeth: tuple[int, ...]) -> str:
    """ ",11,21," so that one tooth is found with LIKE '%,11,%' on every database."""
    return "," + ",".join(str(t) for t in teeth) + "," if teeth else ""


def _teeth(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.strip(",").split(",") if t)


class PhotoIndex:
    def __init__(self, read: Reader) -> None:
        self._read = read

    def patient(self, pk: int) -> PatientRecord | None:
        with self._read() as conn:
            row = conn.execute(select(_patients).where(_patients.c.id == pk)).mappings().first()
        return None if row is None else _patient(row)

    def patient_by_national_id(self, patient_id: str) -> PatientRecord | None:
        stmt = (
            select(_patients)
            .where(_patients.c.patient_id == patient_id)
            .order_by(_patients.c.id)
            .limit(1)
        )
        with self._read() as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else _patient(row)

    def patient_counties(self, pk: int) -> set[str]:
        """The counties holding studies or photos of this patient."""
        with self._read() as conn:
            counties = set(
                conn.execute(
                    select(_studies.c.county).where(_studies.c.patient_pk == pk).distinct()
                ).scalars()
            )
            counties.update(
                conn.execute(
                    select(_photos.c.county).where(_photos.c.patient_pk == pk).distinct()
                ).scalars()
            )
        return counties

    def find(self, query: PhotoQuery) -> list[PhotoRecord]:
        """The patient's photos in scope, oldest first by capture time."""
        stmt = select(_photos, _patients.c.patient_id.label("national_id")).join(
            _patients, _photos.c.patient_pk == _patients.c.id
        )
        stmt = stmt.where(_photos.c.patient_pk == query.patient_pk)
        if query.county is not None:
            scope = _photos.c.county == query.county
            if query.granted_patient_ids:
                scope = scope | _patients.c.patient_id.in_(query.granted_patient_ids)
            stmt = stmt.where(scope)
        if query.category:
            stmt = stmt.where(_photos.c.category == query.category)
        if query.tooth is not None:
            stmt = stmt.where(_photos.c.teeth.like(f"%,{int(query.tooth)},%"))
        stmt = stmt.order_by(_photos.c.taken_at, _photos.c.id)
        return self._records(stmt)

    def get(self, photo_id: str) -> PhotoRecord | None:
        stmt = (
            select(_photos, _patients.c.patient_id.label("national_id"))
            .join(_patients, _photos.c.patient_pk == _patients.c.id)
            .where(_photos.c.photo_id == photo_id)
        )
        found = self._records(stmt)
        return found[0] if found else None

    def blob_rows(self) -> Iterator[tuple[str, str, str]]:
        """(key, SHA-256, county) of every stored rendition, for consistency checks."""
        with self._read() as conn:
            rows = conn.execute(select(_media.c.blob_key, _media.c.sha256, _media.c.county))
            yield from ((str(k), str(s), str(c)) for k, s, c in rows)

    def blob_owner(self, key: str) -> tuple[str, str, str] | None:
        """(photo id, national ID, county) of the photo whose rendition `key` holds."""
        stmt = (
            select(_photos.c.photo_id, _patients.c.patient_id, _photos.c.county)
            .select_from(
                _media.join(_photos, _media.c.photo_pk == _photos.c.id).join(
                    _patients, _photos.c.patient_pk == _patients.c.id
                )
            )
            .where(_media.c.blob_key == key)
            .limit(1)
        )
        with self._read() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else (str(row[0]), str(row[1]), str(row[2]))

    def _records(self, stmt: Any) -> list[PhotoRecord]:
        with self._read() as conn:
            rows = list(conn.execute(stmt).mappings())
            pks = [int(r["id"]) for r in rows]
            blobs: dict[int, dict[str, BlobRef]] = {pk: {} for pk in pks}
            for start in range(0, len(pks), 500):
                for blob in conn.execute(
                    select(_media).where(_media.c.photo_pk.in_(pks[start : start + 500]))
                ).mappings():
                    blobs[int(blob["photo_pk"])][str(blob["role"])] = BlobRef(
                        key=blob["blob_key"], size=int(blob["size"]), sha256=blob["sha256"]
                    )
        return [_record(row, blobs[int(row["id"])]) for row in rows]


def photo_by_content(conn: Connection, patient_pk: int, county: str, sha256: str) -> str | None:
    """The photo id already holding this original for this patient and county, if any."""
    row = conn.execute(
        select(_photos.c.photo_id).where(
            (_photos.c.patient_pk == patient_pk)
            & (_photos.c.county == county)
            & (_photos.c.original_sha256 == sha256)
        )
    ).first()
    return None if row is None else str(row[0])


def add_photo(conn: Connection, new: NewPhoto) -> None:
    """Insert the photo row and its renditions' rows (the caller checked for duplicates)."""
    f = new.facts
    result = conn.execute(
        _photos.insert().values(
            photo_id=f.photo_id,
            kind=f.kind,
            media_type=f.media_type,
            patient_pk=new.patient_pk,
            county=new.county,
            taken_at=f.taken_at,
            taken_at_source=f.taken_at_source,
            category=f.category,
            teeth=teeth_text(f.teeth),
            note=f.note,
            width=f.width,
            height=f.height,
            duration_seconds=f.duration_seconds,
            original_sha256=new.blobs["original"].sha256,
            filename=f.filename,
            uploaded_by=new.uploaded_by,
            source=new.source,
            received_at=new.received_at,
            study_uid=f.study_uid,
            series_uid=f.series_uid,
            sop_uid=f.sop_uid,
        )
    )
    inserted = result.inserted_primary_key
    if inserted is None:
        raise IndexUnavailable("the database did not return the new photo's key")
    photo_pk = int(inserted[0])
    conn.execute(
        _media.insert(),
        [
            {
                "photo_pk": photo_pk,
                "role": role,
                "blob_key": blob.key,
                "size": blob.size,
                "sha256": blob.sha256,
                "county": new.county,
            }
            for role, blob in sorted(new.blobs.items())
        ],
    )


def _patient(row: Any) -> PatientRecord:
    return PatientRecord(
        pk=int(row["id"]),
        patient_id=row["patient_id"],
        issuer=row["issuer"],
        name=row["name"],
        birth_date=row["birth_date"],
        sex=row["sex"],
        county=row["county"],
    )


def _record(row: Any, blobs: dict[str, BlobRef]) -> PhotoRecord:
    duration = row["duration_seconds"]
    return PhotoRecord(
        facts=PhotoFacts(
            photo_id=row["photo_id"],
            kind=row["kind"],
            media_type=row["media_type"],
            taken_at=row["taken_at"],
            taken_at_source=row["taken_at_source"],
            category=row["category"],
            teeth=_teeth(row["teeth"]),
            note=row["note"],
            width=int(row["width"]),
            height=int(row["height"]),
            duration_seconds=None if duration is None else float(duration),
            filename=row["filename"],
            study_uid=row["study_uid"],
            series_uid=row["series_uid"],
            sop_uid=row["sop_uid"],
        ),
        patient_pk=int(row["patient_pk"]),
        patient_id=row["national_id"],
        county=row["county"],
        blobs=blobs,
        uploaded_by=row["uploaded_by"],
        received_at=row["received_at"],
    )
