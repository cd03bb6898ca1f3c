"""Patient record conflicts for administrators: the list, and forms to merge, split, accept and
undo (`arkiv.reconciliation`). The joint auditor may look; only administrators change.

Forms post with the session's CSRF token like every other form; a refused change comes back to
the page with the reason, and nothing was changed.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from arkiv.accounts import Role
from arkiv.counties import County, parse_county
from arkiv.errors import ArkivError, Forbidden, InvalidQuery
from arkiv.reconciliation import (
    ChangeResult,
    NewRecord,
    require_reconciliation,
    require_reconciliation_view,
)
from viewer.dependencies import ArchiveDep, PrincipalDep
from viewer.templating import templates

router = APIRouter()

PAGE = "/admin/patients/conflicts"
PAGE_LIMIT = 200
"""Conflicts shown on the page at once (an import of an old archive can make thousands); the
county filter and `arkiv patients conflicts --json` reach the rest."""


def _county(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return parse_county(value).value
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None


@router.get("/api/admin/patients/conflicts")
def conflicts_json(
    archive: ArchiveDep, principal: PrincipalDep, county: str | None = None
) -> list[dict[str, Any]]:
    require_reconciliation_view(principal)
    found = archive.reconciliation.conflicts(principal.actor(), _county(county))
    return [c.as_json() for c in found]


@router.get("/api/admin/patients/changes")
def changes_json(
    archive: ArchiveDep, principal: PrincipalDep, limit: int = 50
) -> list[dict[str, Any]]:
    require_reconciliation_view(principal)
    return [
        {
            "change": c.id,
            "kind": c.kind,
            "record": c.patient_pk,
            "target": c.target_pk,
            "study_uids": list(c.study_uids),
            "undoes": c.undoes,
            "undone_by": c.undone_by,
            "actor": c.actor,
            "made_at": c.made_at,
        }
        for c in archive.reconciliation.changes(min(max(limit, 1), 500))
    ]


@router.get(PAGE, response_class=HTMLResponse)
def conflicts_page(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    county: str | None = None,
    done: str = "",
    error: str = "",
) -> Response:
    require_reconciliation_view(principal)
    chosen = _county(county)
    found = archive.reconciliation.conflicts(principal.actor(), chosen, PAGE_LIMIT)
    return templates.TemplateResponse(
        request,
        "patient_conflicts.html",
        {
            "user": principal,
            "conflicts": found,
            "changes": archive.reconciliation.changes(50),
            "counties": [c.value for c in County],
            "county": chosen or "",
            "may_change": principal.role is Role.ADMIN,
            "limited": len(found) >= PAGE_LIMIT,
            "done": done[:300],
            "error": error[:500],
        },
    )


def _back(result: ChangeResult | None = None, error: str = "") -> Response:
    query = {"error": error} if error else {"done": result.message if result else ""}
    return RedirectResponse(f"{PAGE}?{urlencode(query)}", status_code=303)


def _attempt(action: Any) -> Response:
    try:
        result: ChangeResult = action()
    except Forbidden:
        raise
    except ArkivError as exc:
        return _back(error=str(exc))
    return _back(result)


@router.post("/admin/patients/merge")
def merge(
    archive: ArchiveDep,
    principal: PrincipalDep,
    source: Annotated[str, Form(max_length=80)],
    into: Annotated[str, Form(max_length=80)],
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    require_reconciliation(principal)
    return _attempt(lambda: archive.reconciliation.merge(principal.actor(), source, into, reason))


@router.post("/admin/patients/split")
def split(
    archive: ArchiveDep,
    principal: PrincipalDep,
    source: Annotated[str, Form(max_length=80)],
    study: Annotated[list[str], Form()],
    into: Annotated[str, Form(max_length=80)] = "",
    new_id: Annotated[str, Form(max_length=64)] = "",
    issuer: Annotated[str, Form(max_length=64)] = "",
    name: Annotated[str, Form(max_length=324)] = "",
    birth_date: Annotated[str, Form(max_length=8)] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    require_reconciliation(principal)
    new = NewRecord(new_id, issuer, name, birth_date) if new_id.strip() else None
    target = into.strip() or None
    return _attempt(
        lambda: archive.reconciliation.split(principal.actor(), source, study, target, new, reason)
    )


@router.post("/admin/patients/accept")
def accept(
    archive: ArchiveDep,
    principal: PrincipalDep,
    record: Annotated[str, Form(max_length=80)],
    name: Annotated[str | None, Form(max_length=324)] = None,
    birth_date: Annotated[str | None, Form(max_length=8)] = None,
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    require_reconciliation(principal)
    return _attempt(
        lambda: archive.reconciliation.accept(principal.actor(), record, name, birth_date, reason)
    )


@router.post("/admin/patients/undo")
def undo(
    archive: ArchiveDep,
    principal: PrincipalDep,
    change: Annotated[int, Form()],
    reason: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    require_reconciliation(principal)
    return _attempt(lambda: archive.reconciliation.undo(principal.actor(), change, reason))
