"""ITI-81 style audit search: `GET /fhir/AuditEvent?patient=&date=&agent=` → FHIR R4 Bundle.

Auditors and audit consumers of the counties can query the log with a standard FHIR client. The
same search can be posted (`POST /fhir/AuditEvent/_search`, form-encoded) to keep a national ID
out of the URL. Scoping and the Audit Log Used event are the same as for every other audit read.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from arkiv.audit_export import fhir_bundle
from arkiv.errors import InvalidQuery
from viewer.audit_params import audit_query
from viewer.dependencies import ArchiveDep, PrincipalDep

router = APIRouter(prefix="/fhir")

_PARAMS = frozenset(
    {
        "patient",
        "patient.identifier",
        "entity.identifier",
        "date",
        "agent",
        "agent.identifier",
        "outcome",
        "action",
        "_count",
        "_format",
    }
)
_OUTCOMES = {"0": "0", "4": "4", "8": "8", "12": "12"}


def _patient(value: str) -> str:
    """`system|value`, `Patient/value` or a bare value: the patient's identifier."""
    if "|" in value:
        value = value.split("|", 1)[1]
    if value.startswith("Patient/"):
        value = value[len("Patient/") :]
    if not value:
        raise InvalidQuery("patient must name an identifier")
    return value


def _filters(items: list[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in items:
        if key not in _PARAMS:
            raise InvalidQuery(f"unsupported search parameter {key!r}")
        if key in ("patient", "patient.identifier", "entity.identifier"):
            params["patient"] = _patient(value)
        elif key in ("agent", "agent.identifier"):
            params["user"] = value.split("|", 1)[-1]
        elif key == "date":
            prefix, moment = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
            if prefix in ("ge", "gt"):
                params["since"] = moment
            elif prefix in ("le", "lt"):
                params["until"] = moment
            elif prefix == "eq":
                params["since"] = params["until"] = moment
            else:
                raise InvalidQuery(f"date prefix {prefix!r} is not supported (use ge, le, eq)")
        elif key == "outcome":
            if value not in _OUTCOMES:
                raise InvalidQuery("outcome must be 0, 4, 8 or 12")
            params["outcome"] = value
        elif key == "action":
            params["action"] = value
        elif key == "_count":
            params["limit"] = value
    return params


def _search(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, items: list[tuple[str, str]]
) -> JSONResponse:
    params = _filters(items)
    query = audit_query(params)
    text = " ".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "patient")
    events = archive.audit_review.search(principal, query, f"fhir AuditEvent {text}")
    bundle: dict[str, Any] = fhir_bundle(events, archive.settings.ae_title, str(request.url))
    return JSONResponse(bundle, media_type="application/fhir+json")


@router.get("/AuditEvent")
def search_audit_events(
    request: Request, archive: ArchiveDep, principal: PrincipalDep
) -> JSONResponse:
    return _search(request, archive, principal, list(request.query_params.multi_items()))


@router.post("/AuditEvent/_search")
async def search_audit_events_posted(
    request: Request, archive: ArchiveDep, principal: PrincipalDep
) -> JSONResponse:
    form = await request.form()
    items = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    items = [(k, v) for k, v in items if k != "csrf_token"]
    return await run_in_threadpool(_search, request, archive, principal, items)
