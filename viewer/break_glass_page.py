"""The page a clinician gets when a study or patient belongs to another county: the county named
and, when the patient is known, the break-the-glass form right there, which brings them back to
what they were opening. Scripts and API clients get the JSON 403 instead."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from arkiv.accounts import Principal
from arkiv.errors import BreakGlassRequired
from arkiv.services import Archive
from viewer.errors import wants_html
from viewer.templating import templates


def break_glass_page(
    request: Request, archive: Archive, principal: Principal, refusal: BreakGlassRequired
) -> Response:
    if not wants_html(request):
        raise refusal
    return templates.TemplateResponse(
        request,
        "break_glass_needed.html",
        {
            "user": principal,
            "counties": refusal.counties,
            "patient_key": refusal.patient_key,
            "next_url": request.url.path,
            "reasons": archive.break_glass.reasons(),
            "grant_hours": f"{archive.settings.break_glass_minutes / 60:g}",
        },
        status_code=403,
    )


def local_path(value: str) -> str | None:
    """`value` if it is a path on this site (never another origin: no scheme, no `//`)."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return None
