"""The clinician's photo pages: a patient's photo and video gallery, the upload form, and a
before/after comparison.

The pages are rendered on the server from the photo service, so every read (the gallery with its
filters, each photo compared) is authorized and audited before the page is sent; JavaScript only
adds interaction (selection, drag and drop with upload progress, synchronised zoom). URLs carry
the opaque patient key and photo ids, never a national ID.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from arkiv.authorization import require_image_read, require_store
from arkiv.errors import BreakGlassRequired, InvalidQuery
from arkiv.photos import CATEGORIES
from arkiv.teeth import is_valid_tooth
from storage.records import PhotoRecord
from viewer.break_glass_page import break_glass_page
from viewer.dependencies import ArchiveDep, PrincipalDep
from viewer.templating import templates

router = APIRouter()


class PatientLike(Protocol):
    """What the pages show of the patient the gallery service names (its `PatientInfo`)."""

    @property
    def patient_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def birth_date(self) -> str: ...
    @property
    def county(self) -> str: ...


@dataclass(frozen=True)
class PatientView:
    key: int
    patient_id: str
    name: str
    birth_date: str
    county: str


@dataclass(frozen=True)
class PhotoView:
    """One photo or video as the templates show it: labels made here, not in Jinja."""

    photo_id: str
    patient_key: int
    patient_id: str
    kind: str
    category: str
    category_label: str
    teeth: str
    day: str
    day_label: str
    time: str
    note: str
    filename: str
    width: int
    height: int
    duration: str

    @property
    def caption(self) -> str:
        parts = [self.category_label]
        if self.teeth:
            parts.append(f"tann {self.teeth}")
        parts.append(f"{self.day_label} {self.time}".strip())
        return " · ".join(part for part in parts if part)


def date_label(iso: str) -> str:
    """ "2026-11-20" or "20261120" as Norwegians write it: 20.11.2026."""
    digits = iso.replace("-", "")[:8]
    if len(digits) == 8 and digits.isdigit():
        return f"{digits[6:8]}.{digits[4:6]}.{digits[0:4]}"
    return iso


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = round(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


def photo_view(record: PhotoRecord) -> PhotoView:
    """The one place that reads a `PhotoRecord` for the pages."""
    facts = record.facts
    day = facts.taken_at[:10]
    return PhotoView(
        photo_id=facts.photo_id,
        patient_key=record.patient_pk,
        patient_id=record.patient_id,
        kind=facts.kind,
        category=facts.category,
        category_label=CATEGORIES.get(facts.category, facts.category),
        teeth=" ".join(str(t) for t in facts.teeth),
        day=day,
        day_label=date_label(day),
        time=facts.taken_at[11:16],
        note=facts.note,
        filename=facts.filename,
        width=facts.width,
        height=facts.height,
        duration=_duration(facts.duration_seconds),
    )


def patient_view(key: int, patient: PatientLike) -> PatientView:
    return PatientView(
        key=key,
        patient_id=patient.patient_id,
        name=patient.name.replace("^", ", ").strip(", "),
        birth_date=date_label(patient.birth_date),
        county=patient.county.capitalize(),
    )


def _timeline(photos: list[PhotoView]) -> OrderedDict[str, list[PhotoView]]:
    """Photos grouped by capture day, newest day first; within a day, in the order taken."""
    days: OrderedDict[str, list[PhotoView]] = OrderedDict()
    for photo in sorted(photos, key=lambda p: p.day, reverse=True):
        days.setdefault(photo.day, []).append(photo)
    for group in days.values():
        group.sort(key=lambda p: p.time)
    return days


def _category_filter(value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    if value not in CATEGORIES:
        raise InvalidQuery(f"ukjent kategori {value!r}; velg en av {', '.join(CATEGORIES)}")
    return value


def tooth_filter(value: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit() or not is_valid_tooth(int(value)):
        raise InvalidQuery(f"{value!r} er ikke et tannummer (FDI, f.eks. 11 eller 36)")
    return int(value)


@router.get("/patients/{patient_pk}/photos", response_class=HTMLResponse)
def gallery_page(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    patient_pk: int,
    category: Annotated[str, Query(max_length=32)] = "",
    tooth: Annotated[str, Query(max_length=4)] = "",
) -> Response:
    """A patient's photos and videos on a timeline. The filters go to the service, so what was
    asked for is what the audit event records."""
    chosen_category = _category_filter(category)
    chosen_tooth = tooth_filter(tooth)
    try:
        patient, records = archive.photos.gallery(
            principal, patient_pk, category=chosen_category, tooth=chosen_tooth
        )
    except BreakGlassRequired as exc:  # another county's patient: offer the glass, as elsewhere
        return break_glass_page(request, archive, principal, exc)
    photos = [photo_view(record) for record in records]
    return templates.TemplateResponse(
        request,
        "photo_gallery.html",
        {
            "user": principal,
            "patient": patient_view(patient_pk, patient),
            "days": _timeline(photos),
            "count": len(photos),
            "categories": CATEGORIES,
            "filters": {"category": chosen_category or "", "tooth": chosen_tooth or ""},
        },
    )


@router.get("/photos/upload", response_class=HTMLResponse)
def upload_page(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    patient: int | None = None,
) -> Response:
    """The upload form. `?patient=<key>` names the patient by key; the national ID the form
    needs is looked up through the (audited) gallery read, never taken from the URL."""
    require_store(principal)
    shown: PatientView | None = None
    if patient is not None:
        info, _ = archive.photos.gallery(principal, patient)
        shown = patient_view(patient, info)
    return templates.TemplateResponse(
        request,
        "photo_upload.html",
        {"user": principal, "patient": shown, "categories": CATEGORIES},
    )


@router.get("/photos/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    a: Annotated[str, Query(max_length=32)] = "",
    b: Annotated[str, Query(max_length=32)] = "",
    photo: Annotated[list[str] | None, Query(max_length=32)] = None,
) -> Response:
    """Two photos side by side, the earlier on the left. Each is read through the service
    (audited as a comparison) before the page is sent. `photo=…&photo=…` is what the gallery's
    form sends when JavaScript is off."""
    ids = [value for value in (a, b) if value] or list(photo or [])
    if len(ids) != 2:
        raise InvalidQuery("velg to bilder å sammenligne")
    require_image_read(principal)
    records = [archive.photos.photo_for_read(principal, pid, purpose="compare") for pid in ids]
    pair = sorted((photo_view(record) for record in records), key=lambda p: (p.day, p.time))
    return templates.TemplateResponse(
        request,
        "photo_compare.html",
        {
            "user": principal,
            "pair": pair,
            "same_patient": pair[0].patient_key == pair[1].patient_key,
        },
    )
