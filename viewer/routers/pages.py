"""The clinician's browser UI: patient search (with break-the-glass when the patient belongs to
another county), a patient's studies with thumbnails, one image with window/level and zoom.
National IDs are posted, never put in URLs."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from arkiv.accounts import Principal, Role
from arkiv.authorization import require_image_search
from arkiv.errors import InvalidQuery, NotFound
from arkiv.services import Archive
from storage.records import PatientRecord, SeriesSummary, StudyQuery, StudySummary
from viewer.break_glass_page import local_path
from viewer.dependencies import ArchiveDep, PrincipalDep
from viewer.routers.auth import home_of
from viewer.templating import templates

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def home(request: Request, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    if principal.role is not Role.CLINICIAN and home_of(principal.role) != "/":
        return RedirectResponse(home_of(principal.role), status_code=303)
    require_image_search(principal)
    recent = archive.patient_view.recent(principal)
    return _search_page(request, archive, principal, None, {}, recent=recent)


def _search_page(
    request: Request,
    archive: Archive,
    principal: Principal,
    patients: OrderedDict[str, list[StudySummary]] | None,
    form: dict[str, str],
    series: dict[str, list[SeriesSummary]] | None = None,
    error: str = "",
    offer: tuple[str, tuple[str, ...]] | None = None,
    status_code: int = 200,
    recent: list[PatientRecord] | None = None,
) -> Response:
    return templates.TemplateResponse(
        request,
        "search.html",
        {
            "user": principal,
            "patients": patients,
            "series": series or {},
            "form": form,
            "error": error,
            "offer": offer,
            "reasons": archive.break_glass.reasons(),
            "grant_hours": f"{archive.settings.break_glass_minutes / 60:g}",
            "grants": archive.break_glass.active_grants(principal),
            "recent": recent,
            "patient_keys": {
                patient_id: archive.photos.patient_key(patient_id) for patient_id in patients or {}
            },
        },
        status_code=status_code,
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
    return _search(request, archive, principal, form)


def _search(
    request: Request, archive: Archive, principal: Principal, form: dict[str, str]
) -> Response:
    require_image_search(principal)
    patient_id, name = form.get("patient_id", ""), form.get("name", "")
    birth = form.get("birth_date", "").replace("-", "").strip()
    if birth and (len(birth) != 8 or not birth.isdigit()):
        raise InvalidQuery("fødselsdato må skrives ÅÅÅÅ-MM-DD")
    if not (patient_id.strip() or name.strip() or birth):
        return _search_page(
            request,
            archive,
            principal,
            None,
            form,
            error="Skriv fødselsnummer, navn eller fødselsdato.",
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
    offer = None
    exact = patient_id.strip()
    if exact and "*" not in exact and "?" not in exact and principal.role is Role.CLINICIAN:
        granted = archive.break_glass.granted_patient_ids(principal)
        others = archive.break_glass.other_counties(principal, exact)
        if others and exact not in granted:
            offer = (exact, others)
    return _search_page(request, archive, principal, patients, form, series, offer=offer)


@router.post("/break-glass", response_class=HTMLResponse)
def break_glass(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    patient_id: Annotated[str, Form(max_length=64)] = "",
    patient_key: Annotated[int | None, Form()] = None,
    reason: Annotated[str, Form(max_length=32)] = "",
    free_text: Annotated[str, Form(max_length=500)] = "",
    next_url: Annotated[str, Form(alias="next", max_length=500)] = "",
) -> Response:
    """Take extended access to one patient (named by national ID from the search, or by key
    from the page that refused), then go back to that page, or show the patient's studies in
    all counties."""
    chosen = patient_id.strip()
    if not chosen and patient_key is not None:
        patient = archive.index.photos.patient(patient_key)
        chosen = patient.patient_id if patient else ""
    try:
        archive.break_glass.grant(principal, chosen, reason, free_text)
    except (InvalidQuery, NotFound) as exc:
        return _search_page(
            request,
            archive,
            principal,
            None,
            {"patient_id": patient_id},
            error=str(exc),
            status_code=400,
        )
    back = local_path(next_url)
    if back:
        return RedirectResponse(back, status_code=303)
    return _search(request, archive, principal, {"patient_id": chosen})
