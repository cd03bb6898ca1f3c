"""The audit log for auditors: search by patient, user, action, outcome and time."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request

from arkiv.errors import InvalidQuery
from storage.records import AuditQuery
from viewer.dependencies import ArchiveDep, PrincipalDep

router = APIRouter(prefix="/api")

_FILTERS = {"patient", "user", "action", "outcome", "since", "until", "limit", "offset"}


def audit_query(params: dict[str, str]) -> AuditQuery:
    unknown = set(params) - _FILTERS
    if unknown:
        raise InvalidQuery(f"unknown audit filter(s): {', '.join(sorted(unknown))}")
    try:
        outcome = int(params["outcome"]) if params.get("outcome") else None
        limit = int(params.get("limit") or 100)
        offset = int(params.get("offset") or 0)
    except ValueError:
        raise InvalidQuery("outcome, limit and offset must be whole numbers") from None
    if not 1 <= limit <= 1000 or offset < 0:
        raise InvalidQuery("limit must be 1 to 1000 and offset not negative")
    return AuditQuery(
        patient_id=params.get("patient") or None,
        actor=params.get("user") or None,
        event_id=params.get("action") or None,
        outcome=outcome,
        since=params.get("since") or None,
        until=params.get("until") or None,
        limit=limit,
        offset=offset,
    )


@router.get("/audit")
def search_audit(
    request: Request, archive: ArchiveDep, principal: PrincipalDep
) -> list[dict[str, Any]]:
    query = audit_query(dict(request.query_params))
    text = str(request.url.query)
    events = archive.audit_review.search(principal, query, text)
    return [asdict(e) for e in events]
