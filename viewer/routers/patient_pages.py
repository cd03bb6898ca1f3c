"""The patient page: a patient's whole history at a glance (studies and photos by day, with
thumbnails, the kinds of image and teeth, and the owning county), filtered by modality and tooth.

URLs carry the opaque patient key, never the national ID. The reads behind the page are the
service's (`arkiv.patient_view`), audited there; another county's patient without a grant gets
the break-the-glass page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from arkiv.errors import BreakGlassRequired, InvalidQuery
from arkiv.patient_view import TimelineStudy
from viewer.break_glass_page import break_glass_page
from viewer.dependencies import ArchiveDep, PrincipalDep
from viewer.routers.photo_pages import PhotoView, date_label, patient_view, photo_view, tooth_filter
from viewer.templating import templates

router = APIRouter()

_PHOTOS = "XC"
"""The modality filter's value for clinical photos (their DICOM modality)."""


@dataclass(frozen=True)
class DayView:
    date: str
    label: str
    studies: list[TimelineStudy]
    photos: list[PhotoView]


def _modality_filter(value: str) -> str | None:
    value = value.strip().upper()
    if not value:
        return None
    if not (value.isalpha() and len(value) <= 4):
        raise InvalidQuery(f"{value!r} er ikke en modalitet (f.eks. IO, PX, CT eller XC)")
    return value


@router.get("/patients/{patient_key}", response_class=HTMLResponse)
def patient_page(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    patient_key: int,
    modality: Annotated[str, Query(max_length=8)] = "",
    tooth: Annotated[str, Query(max_length=4)] = "",
) -> Response:
    chosen_modality = _modality_filter(modality)
    chosen_tooth = tooth_filter(tooth)
    try:
        timeline = archive.patient_view.timeline(
            principal, patient_key, chosen_modality, chosen_tooth
        )
    except BreakGlassRequired as exc:
        return break_glass_page(request, archive, principal, exc)
    days = [
        DayView(
            day.date,
            date_label(day.date),
            day.studies,
            [photo_view(p) for p in day.photos],
        )
        for day in timeline.days
    ]
    return templates.TemplateResponse(
        request,
        "patient.html",
        {
            "user": principal,
            "patient": patient_view(patient_key, timeline.patient),
            "counties": timeline.counties,
            "days": days,
            "modalities": [m for m in timeline.modalities if m != _PHOTOS] + [_PHOTOS],
            "filters": {"modality": chosen_modality or "", "tooth": chosen_tooth or ""},
        },
    )
