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
from fastapi.responses import PlainTextResponse, StreamingResponse

from arkiv.audit_checkpoint import load_signing_key, log_origin, public_key_pem, verifier_key
from arkiv.audit_export import csv_rows, dicom_audit_lines, fhir_audit_event
from arkiv.authorization import audit_scope
from arkiv.errors import InvalidQuery, NotFound
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
            yield from csv_rows(events)
        elif fmt == "fhir":
            for event in events:
                yield json.dumps(fhir_audit_event(event, source), ensure_ascii=False) + "\n"
        else:
            yield from dicom_audit_lines(events, source)

    return StreamingResponse(
        body(),
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="arkiv-audit.{suffix}"'},
    )


@router.get("/checkpoints")
def checkpoints(
    archive: ArchiveDep,
    principal: PrincipalDep,
    since: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    """Signed checkpoints for auditors to keep outside the archive (`arkiv audit verify
    --checkpoint` checks the log against them)."""
    audit_scope(principal, None)
    return [asdict(c) for c in archive.index.checkpoints(since)]


@router.get("/public-key", response_class=PlainTextResponse)
def public_key(archive: ArchiveDep, principal: PrincipalDep, fmt: str = "pem") -> str:
    """The key that verifies the checkpoints: PEM, or the signed-note verifier key (`vkey`)."""
    audit_scope(principal, None)
    key = load_signing_key(archive.settings.signing_key_path)
    if key is None:
        raise NotFound("no checkpoint has been signed yet, so there is no signing key")
    if fmt == "vkey":
        return verifier_key(log_origin(archive.settings), key.public_key()) + "\n"
    return public_key_pem(key.public_key())
