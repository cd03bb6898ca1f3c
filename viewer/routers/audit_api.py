"""The audit log for auditors, as an API: search, patient access report, review, exports.

National IDs go in request bodies (`POST /api/audit/search`, `/api/audit/patient-report`); the
GET search remains for filters without patients. Every call is itself an audit event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import StreamingResponse

from arkiv.audit_export import csv_rows, dicom_audit_lines, fhir_audit_event
from arkiv.errors import InvalidQuery
from viewer.audit_params import audit_query
from viewer.dependencies import ArchiveDep, PrincipalDep

router = APIRouter(prefix="/api/audit")

_EXPORTS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "fhir": ("application/fhir+ndjson", "ndjson"),
    "dicom": ("application/xml", "xml"),
}


@router.get("")
def search_audit(
    request: Request, archive: ArchiveDep, principal: PrincipalDep
) -> list[dict[str, Any]]:
    query = audit_query(dict(request.query_params))
    events = archive.audit_review.search(principal, query, str(request.url.query))
    return [asdict(e) for e in events]


@router.post("/search")
def search_audit_posted(
    archive: ArchiveDep,
    principal: PrincipalDep,
    filters: Annotated[dict[str, str | int], Body()],
) -> list[dict[str, Any]]:
    params = {k: str(v) for k, v in filters.items()}
    query = audit_query(params)
    text = " ".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "patient")
    events = archive.audit_review.search(principal, query, text)
    return [asdict(e) for e in events]


@router.post("/patient-report")
def patient_report(
    archive: ArchiveDep,
    principal: PrincipalDep,
    patient_id: Annotated[str, Body(embed=True, min_length=1, max_length=64)],
    county: Annotated[str | None, Body(embed=True)] = None,
) -> dict[str, Any]:
    """Innsyn i logg: who saw this patient's images, when, from where and in which role."""
    lines = archive.audit_review.patient_report(principal, patient_id.strip(), county)
    return {"patient_id": patient_id.strip(), "accesses": [asdict(line) for line in lines]}


@router.get("/review")
def review(
    archive: ArchiveDep,
    principal: PrincipalDep,
    county: Annotated[str | None, Query(max_length=16)] = None,
    days: Annotated[int, Query(ge=1, le=366)] = 7,
) -> dict[str, Any]:
    found = archive.audit_review.review(principal, county, days)
    return {
        "break_glass": [asdict(e) for e in found.break_glass],
        "cross_county": [asdict(e) for e in found.cross_county],
        "heavy_users": [asdict(v) for v in found.heavy_users],
        "threshold": found.threshold,
    }


@router.get("/export")
def export(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
) -> StreamingResponse:
    """The matching events, oldest first, as CSV, FHIR AuditEvent NDJSON or DICOM audit XML."""
    params = dict(request.query_params)
    fmt = params.pop("format", "csv")
    if fmt not in _EXPORTS:
        raise InvalidQuery(f"format must be one of {', '.join(_EXPORTS)}")
    query = audit_query(params)
    events = archive.audit_review.export(principal, query, str(request.url.query), fmt)
    source = archive.settings.ae_title
    media_type, suffix = _EXPORTS[fmt]

    def body() -> Iterator[str]:
        if fmt == "csv":
            yield from (line if line.endswith("\n") else line + "\n" for line in csv_rows(events))
        elif fmt == "fhir":
            for event in events:
                yield json.dumps(fhir_audit_event(event, source), ensure_ascii=False) + "\n"
        else:
            yield from (line + "\n" for line in dicom_audit_lines(events, source))

    return StreamingResponse(
        body(),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="arkiv-audit.{suffix}"'},
    )
