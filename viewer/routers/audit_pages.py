"""The auditor's browser UI: log search, the patient access report, the review of exceptions.

National IDs are posted in forms. A county's auditor works on their county; the joint auditor may
choose one county or all.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from arkiv.accounts import Role
from arkiv.audit_review import ROLE_NAMES
from arkiv.authorization import audit_scope
from arkiv.counties import County, organisation_name
from viewer.audit_params import audit_query
from viewer.dependencies import ArchiveDep, PrincipalDep
from viewer.templating import templates

router = APIRouter(prefix="/audit")


def _counties(role: Role) -> list[str]:
    return [c.value for c in County] if role is Role.JOINT_AUDITOR else []


@router.get("", response_class=HTMLResponse)
def audit_page(request: Request, principal: PrincipalDep) -> Response:
    audit_scope(principal, None)
    return templates.TemplateResponse(
        request,
        "audit.html",
        {"user": principal, "events": None, "form": {}, "counties": _counties(principal.role)},
    )


@router.post("", response_class=HTMLResponse)
def audit_search(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    patient: Annotated[str, Form(max_length=64)] = "",
    user: Annotated[str, Form(max_length=64)] = "",
    county: Annotated[str, Form(max_length=16)] = "",
    action: Annotated[str, Form(max_length=16)] = "",
    outcome: Annotated[str, Form(max_length=2)] = "",
    since: Annotated[str, Form(max_length=32)] = "",
    until: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    form = {
        "patient": patient,
        "user": user,
        "county": county,
        "action": action,
        "outcome": outcome,
        "since": since,
        "until": until,
    }
    query = audit_query({k: v for k, v in form.items() if v} | {"limit": "500"})
    asked = " ".join(f"{k}={v}" for k, v in sorted(form.items()) if v and k != "patient")
    events = archive.audit_review.search(principal, query, f"ui audit search {asked}")
    return templates.TemplateResponse(
        request,
        "audit.html",
        {
            "user": principal,
            "events": events,
            "form": form,
            "counties": _counties(principal.role),
        },
    )


@router.get("/patient-report", response_class=HTMLResponse)
def patient_report_form(request: Request, principal: PrincipalDep) -> Response:
    audit_scope(principal, None)
    return templates.TemplateResponse(
        request,
        "patient_report.html",
        {"user": principal, "lines": None, "patient_id": "", "counties": _counties(principal.role)},
    )


@router.post("/patient-report", response_class=HTMLResponse)
def patient_report(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    patient_id: Annotated[str, Form(min_length=1, max_length=64)],
    county: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    lines = archive.audit_review.patient_report(principal, patient_id.strip(), county or None)
    scope = audit_scope(principal, county or None)
    return templates.TemplateResponse(
        request,
        "patient_report.html",
        {
            "user": principal,
            "lines": lines,
            "patient_id": patient_id.strip(),
            "controller": organisation_name(scope) if scope else "Vestfold, Buskerud og Telemark",
            "counties": _counties(principal.role),
        },
    )


@router.get("/review", response_class=HTMLResponse)
def review_page(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, county: str = "", days: int = 7
) -> Response:
    found = archive.audit_review.review(principal, county or None, max(1, min(days, 366)))
    return templates.TemplateResponse(
        request,
        "review.html",
        {
            "user": principal,
            "review": found,
            "days": days,
            "roles": ROLE_NAMES,
            "counties": _counties(principal.role),
            "county": county,
        },
    )
