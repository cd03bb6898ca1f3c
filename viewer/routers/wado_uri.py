"""WADO-URI (PS3.18 9): one object by query parameters, as DICOM or as a rendered image.

Older viewers and hospital systems link to images this way. It reads through the same access
path as WADO-RS: authorized and audited before any byte, the object checked against its SHA-256.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.responses import Response

from arkiv import transcoding
from arkiv.errors import InvalidQuery
from arkiv.rendering import OutputFormat, RenderRequest, Window
from viewer.dependencies import ArchiveDep, PrincipalDep
from viewer.media_types import DEFAULT_SYNTAX, NotAcceptable

router = APIRouter()

_KNOWN = {
    "requestType",
    "studyUID",
    "seriesUID",
    "objectUID",
    "contentType",
    "transferSyntax",
    "frameNumber",
    "rows",
    "columns",
    "windowCenter",
    "windowWidth",
    "imageQuality",
    "anonymize",
    "charset",
    "region",
    "annotation",
    "presentationUID",
    "presentationSeriesUID",
}
_MAX_SIDE = 4096
_IMAGE_TYPES = {"image/jpeg": OutputFormat.JPEG, "image/png": OutputFormat.PNG}


def _int(params: dict[str, str], name: str, low: int, high: int) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise InvalidQuery(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise InvalidQuery(f"{name} must be between {low} and {high}")
    return value


def _window(params: dict[str, str]) -> Window | None:
    center, width = params.get("windowCenter"), params.get("windowWidth")
    if center is None and width is None:
        return None
    if center is None or width is None:
        raise InvalidQuery("windowCenter and windowWidth go together")
    try:
        c, w = float(center), float(width)
    except ValueError:
        raise InvalidQuery("windowCenter and windowWidth must be numbers") from None
    if not (math.isfinite(c) and math.isfinite(w)) or w < 1:
        raise InvalidQuery("windowWidth must be a number of at least 1")
    return Window(center=c, width=w)


@router.get("/wado")
def wado_uri(request: Request, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    params = dict(request.query_params)
    unknown = sorted(set(params) - _KNOWN)
    if unknown:
        raise InvalidQuery(f"unknown WADO-URI parameter {unknown[0]}")
    if params.get("requestType") != "WADO":
        raise InvalidQuery("requestType=WADO is required")
    missing = [name for name in ("studyUID", "seriesUID", "objectUID") if not params.get(name)]
    if missing:
        raise InvalidQuery(f"{missing[0]} is required")
    content_type = params.get("contentType", "image/jpeg").split(",")[0].strip().lower()
    study, series, sop = params["studyUID"], params["seriesUID"], params["objectUID"]
    if content_type == "application/dicom":
        return _dicom(request, archive, principal, params, study, series, sop)
    output = _IMAGE_TYPES.get(content_type)
    if output is None:
        raise InvalidQuery("contentType must be image/jpeg, image/png or application/dicom")
    if "transferSyntax" in params:
        raise InvalidQuery("transferSyntax applies to contentType=application/dicom only")
    rows = _int(params, "rows", 1, _MAX_SIDE)
    columns = _int(params, "columns", 1, _MAX_SIDE)
    viewport: tuple[int, int] | None = None
    if rows is not None or columns is not None:
        side = rows or columns or 1
        viewport = (columns or side, rows or side)
    render_request = RenderRequest(
        frame=_int(params, "frameNumber", 1, 1_000_000) or 1,
        window=_window(params),
        viewport=viewport,
        output=output,
        quality=_int(params, "imageQuality", 1, 100) or 90,
    )
    [inst] = archive.access.instances_for_read(principal, "rendered", study, series, sop)
    body = archive.access.render(principal, inst, render_request)
    return Response(body, media_type=output.value)


def _dicom(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    params: dict[str, str],
    study: str,
    series: str,
    sop: str,
) -> Response:
    """The object itself, in Explicit VR Little Endian unless `transferSyntax` names another
    (PS3.18 9.1.2.2.3); `*` is not a WADO-URI value, so the stored syntax is asked for by UID."""
    if any(name in params for name in ("rows", "columns", "windowCenter", "windowWidth")):
        raise InvalidQuery("rows, columns and window apply to rendered images only")
    syntax = params.get("transferSyntax") or DEFAULT_SYNTAX
    [inst] = archive.access.instances_for_read(
        principal, "retrieve", study, series, sop, transfer=True
    )
    if not transcoding.can_transcode(inst.transfer_syntax_uid, syntax, bool(inst.rows)):
        raise NotAcceptable(
            f"the object is stored as {inst.transfer_syntax_uid} and cannot be sent as {syntax}"
        )
    data = transcoding.transcode(archive.access.read_bytes(principal, inst), syntax)
    return Response(data, media_type="application/dicom")
