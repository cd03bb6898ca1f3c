"""Photos as the JSON API and the pages show them (the contract in docs/ARCHITECTURE.md)."""

from __future__ import annotations

from typing import Any

from storage.records import PatientRecord, PhotoRecord


def photo_json(photo: PhotoRecord, duplicate: bool | None = None) -> dict[str, Any]:
    f = photo.facts
    base = f"/api/photos/{f.photo_id}"
    links = {
        "thumbnail": f"{base}/thumbnail",
        "web": f"{base}/web",
        "original": f"{base}/original",
    }
    if f.kind == "video":
        links["video"] = f"{base}/video"
    answer: dict[str, Any] = {
        "id": f.photo_id,
        "kind": f.kind,
        "media_type": f.media_type,
        "patient_id": photo.patient_id,
        "patient_key": photo.patient_pk,
        "county": photo.county,
        "taken_at": f.taken_at,
        "taken_at_source": f.taken_at_source,
        "category": f.category,
        "teeth": list(f.teeth),
        "note": f.note,
        "width": f.width,
        "height": f.height,
        "duration_seconds": f.duration_seconds,
        "size": photo.original.size,
        "sha256": photo.original.sha256,
        "filename": f.filename,
        "uploaded_by": photo.uploaded_by,
        "received_at": photo.received_at,
        "study_uid": f.study_uid,
        "series_uid": f.series_uid,
        "sop_uid": f.sop_uid,
        "links": links,
    }
    if duplicate is not None:
        answer["duplicate"] = duplicate
    return answer


def patient_json(patient: PatientRecord) -> dict[str, Any]:
    return {
        "key": patient.pk,
        "patient_id": patient.patient_id,
        "name": patient.name,
        "birth_date": patient.birth_date,
        "county": patient.county,
    }
