"""The browser UI: patient search, a patient's studies with thumbnails, one image with
window/level and zoom, and the auditor's log search. National IDs are posted, never put in URLs."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from arkiv.dicom_object import is_valid_uid
from arkiv.errors import InvalidQuery, NotFound
from storage.records import AuditQuery, SeriesSummary, StudyQuery, StudySummary
from viewer.dependencies import ArchiveDep, PrincipalDep
from viewer.routers.audit_api import audit_query
from viewer.templating import templates

router = APIRouter()


def _uid(value: str) -> str:
    if not is_valid_uid(value):
        raise NotFound("no such study, series or instance")
    return value


@router.get("/", response_class=HTMLResponse)
def home(request: Request, principal: PrincipalDep) -> Response:
    return templates.TemplateResponse(
        request, "search.html", {"user": principal, "patients": None, "form": {}}
    )


@router.post("/search", response_class=HTMLResponse)
def search(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    patient_id: Annotated[str, Form(max_length=64)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    birth_date: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    form = {"patient_id": patient_id, "name": name, "birth_date": birth_date}
    birth = birth_date.replace("-", "").strip()
    if birth and (len(birth) != 8 or not birth.isdigit()):
        raise InvalidQuery("fødselsdato må skrives ÅÅÅÅ-MM-DD")
    if not (patient_id.strip() or name.strip() or birth):
        return templates.TemplateResponse(
            request,
            "search.html",
            {
                "user": principal,
                "patients": None,
                "form": form,
                "error": "Skriv fødselsnummer, navn eller fødselsdato.",
            },
        )
    pattern = name.strip()
    if pattern and "*" not in pattern and "?" not in pattern:
        pattern = f"*{pattern}*"
    query = StudyQuery(
        patient_id=patient_id.strip() or None,
        patient_name=pattern or None,
        birth_date=birth or None,
        limit=200,
    )
    asked = json.dumps({k: v for k, v in form.items() if v}, ensure_ascii=False, sort_keys=True)
    studies = archive.access.search_studies(principal, query, f"ui patient search {asked}")
    patients: OrderedDict[str, list[StudySummary]] = OrderedDict()
    for study in studies:
        patients.setdefault(study.patient_id, []).append(study)
    series: dict[str, list[SeriesSummary]] = {}
    if studies:
        uids = tuple(s.study_uid for s in studies)
        for item in archive.access.search_series(
            principal,
            replace(StudyQuery(), study_uids=uids, limit=1000),
            "ui series of the studies found",
        ):
            series.setdefault(item.study_uid, []).append(item)
    return templates.TemplateResponse(
        request,
        "search.html",
        {"user": principal, "patients": patients, "series": series, "form": form},
    )


@router.get("/studies/{study_uid}", response_class=HTMLResponse)
def study_page(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study_uid: str
) -> Response:
    found = archive.access.instances_for_read(principal, "study page", _uid(study_uid))
    by_series: OrderedDict[str, list[object]] = OrderedDict()
    for inst in found:
        by_series.setdefault(inst.series_uid, []).append(inst)
    return templates.TemplateResponse(
        request,
        "study.html",
        {
            "user": principal,
            "study_uid": study_uid,
            "series": by_series,
            "patient_id": found[0].patient_id,
        },
    )


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}", response_class=HTMLResponse
)
def image_page(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
) -> Response:
    found = archive.access.instances_for_read(
        principal, "image page", _uid(study_uid), _uid(series_uid), _uid(sop_uid)
    )
    return templates.TemplateResponse(
        request, "image.html", {"user": principal, "instance": found[0]}
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, principal: PrincipalDep) -> Response:
    return templates.TemplateResponse(
        request, "audit.html", {"user": principal, "events": None, "form": {}}
    )


@router.post("/audit", response_class=HTMLResponse)
def audit_search(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    patient: Annotated[str, Form(max_length=64)] = "",
    user: Annotated[str, Form(max_length=64)] = "",
    action: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    form = {"patient": patient, "user": user, "action": action}
    query: AuditQuery = audit_query({k: v for k, v in form.items() if v})
    events = archive.audit_review.search(principal, query, "ui audit search")
    return templates.TemplateResponse(
        request, "audit.html", {"user": principal, "events": events, "form": form}
    )
