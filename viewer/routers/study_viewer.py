"""The clinician's image viewer: the page of a study, and the one JSON document it loads.

The page is a shell for `viewer.js` (a canvas renderer of our own: the server decodes every
transfer syntax to native pixels, so the browser needs no codecs and the strict CSP holds; see
docs/ARCHITECTURE.md). Opening it is audited as a study-page read, after the same reach check as
any read, so another county's study answers with the break-the-glass page, not an empty viewer.
The document (`/api/studies/{uid}/viewer`) carries everything the page needs before the pixels.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from arkiv.accounts import Principal
from arkiv.dicom_object import is_valid_uid
from arkiv.errors import BreakGlassRequired, NotFound
from arkiv.services import Archive
from viewer.break_glass_page import break_glass_page
from viewer.dependencies import ArchiveDep, PrincipalDep
from viewer.i18n import language, messages, translate
from viewer.templating import templates

router = APIRouter()


def _uid(value: str) -> str:
    if not is_valid_uid(value):
        raise NotFound("no such study, series or instance")
    return value


def _viewer_page(
    request: Request,
    archive: Archive,
    principal: Principal,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
) -> Response:
    lang = language(request)
    try:
        archive.access.instances_for_read(principal, "study page", study_uid, series_uid, sop_uid)
    except NotFound:
        try:
            archive.study_view.offer_break_glass(principal, study_uid)
        except BreakGlassRequired as exc:
            return break_glass_page(request, archive, principal, exc)
        raise
    return templates.TemplateResponse(
        request,
        "viewer.html",
        {
            "user": principal,
            "study_uid": study_uid,
            "initial_image": sop_uid or "",
            "doc_url": f"/api/studies/{study_uid}/viewer",
            "lang": lang,
            "messages": messages(lang, "viewer."),
        },
    )


@router.get("/studies/{study_uid}", response_class=HTMLResponse)
def study_page(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study_uid: str
) -> Response:
    return _viewer_page(request, archive, principal, _uid(study_uid))


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
    """One image of a study: the same viewer, opened on that image."""
    return _viewer_page(
        request, archive, principal, _uid(study_uid), _uid(series_uid), _uid(sop_uid)
    )


@router.get("/api/studies/{study_uid}/viewer")
def study_document(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study_uid: str
) -> dict[str, Any]:
    """Everything the viewer needs before the pixels, in one answer (audited as one read)."""
    document = archive.study_view.study_document(principal, _uid(study_uid))
    lang = language(request)
    for slot in document["slots"]:
        slot["label"] = translate(lang, slot["label_key"])
    return document
