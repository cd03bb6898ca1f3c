"""DICOMweb WADO-RS (PS3.18 10.4): retrieve, metadata, rendered and thumbnail.

Every route goes through `arkiv.access`, which authorizes and writes the audit event before any
data leaves. Retrieve sends the stored bytes as they were received, one object at a time, each
checked against its SHA-256 first: a single damaged object is a 503, never served.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from arkiv.accounts import Principal
from arkiv.errors import InvalidQuery
from arkiv.rendering import OutputFormat, RenderRequest, Window
from arkiv.services import Archive
from storage.records import StoredInstance
from viewer import dicom_json
from viewer.dependencies import ArchiveDep, PrincipalDep
from viewer.dicomweb_http import base_url, json_response
from viewer.multipart import multipart_stream, new_boundary

router = APIRouter(prefix="/dicom-web")

_THUMBNAIL_SIZE = 128
_MAX_VIEWPORT = 4096


# -- WADO-RS retrieve ------------------------------------------------------------------------------


def _check_accept(request: Request) -> None:
    """We serve the stored object in its stored transfer syntax, as multipart/related DICOM."""
    accept = request.headers.get("accept", "").strip()
    if not accept or accept in ("*/*", "multipart/related", "multipart/*"):
        return
    acceptable = False
    for item in accept.split(","):
        media, *params = [p.strip() for p in item.split(";")]
        options = {
            k.strip().lower(): v.strip().strip('"')
            for k, _, v in (p.partition("=") for p in params)
        }
        if media not in ("multipart/related", "*/*", "multipart/*"):
            continue
        if options.get("type", "application/dicom") != "application/dicom":
            continue
        acceptable = True
    if not acceptable:
        raise InvalidQuery(
            'only multipart/related; type="application/dicom" is served for retrieve'
        )


def _retrieve(
    request: Request,
    archive: Archive,
    principal: Principal,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str | None,
) -> Response:
    _check_accept(request)
    found = archive.access.instances_for_read(
        principal, "retrieve", study_uid, series_uid, sop_uid, transfer=True
    )
    first = archive.access.read_bytes(principal, found[0])  # a bad object fails before any byte
    boundary = new_boundary()
    parts = [_verified_part(archive, principal, inst) for inst in found[1:]]
    return StreamingResponse(
        multipart_stream([lambda: iter((first,)), *parts], "application/dicom", boundary),
        media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


def _verified_part(
    archive: Archive, principal: Principal, inst: StoredInstance
) -> Callable[[], Iterator[bytes]]:
    """One object at a time, each checked against its SHA-256 before any of it is sent; a
    mismatch later in a study ends the response before its closing boundary."""

    def chunks() -> Iterator[bytes]:
        yield archive.access.read_bytes(principal, inst)

    return chunks


@router.get("/studies/{study_uid}")
def retrieve_study(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study_uid: str
) -> Response:
    return _retrieve(request, archive, principal, study_uid, None, None)


@router.get("/studies/{study_uid}/series/{series_uid}")
def retrieve_series(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study_uid: str,
    series_uid: str,
) -> Response:
    return _retrieve(request, archive, principal, study_uid, series_uid, None)


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}")
def retrieve_instance(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
) -> Response:
    return _retrieve(request, archive, principal, study_uid, series_uid, sop_uid)


# -- metadata --------------------------------------------------------------------------------------


def _metadata(
    request: Request,
    archive: Archive,
    principal: Principal,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str | None,
) -> Response:
    found = archive.access.instances_for_read(principal, "metadata", study_uid, series_uid, sop_uid)
    base = base_url(request)
    return json_response(
        [dicom_json.metadata_json(i, base, json.loads(i.metadata_json)) for i in found]
    )


@router.get("/studies/{study_uid}/metadata")
def study_metadata(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study_uid: str
) -> Response:
    return _metadata(request, archive, principal, study_uid, None, None)


@router.get("/studies/{study_uid}/series/{series_uid}/metadata")
def series_metadata(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study_uid: str,
    series_uid: str,
) -> Response:
    return _metadata(request, archive, principal, study_uid, series_uid, None)


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata")
def instance_metadata(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
) -> Response:
    return _metadata(request, archive, principal, study_uid, series_uid, sop_uid)


# -- rendered and thumbnail ------------------------------------------------------------------------


def _output(request: Request, accept_param: str | None) -> OutputFormat:
    accept = (accept_param or request.headers.get("accept", "")).lower()
    if "image/png" in accept and "image/jpeg" not in accept.split("image/png")[0]:
        return OutputFormat.PNG
    if not accept or "image/jpeg" in accept or "*/*" in accept or "image/*" in accept:
        return OutputFormat.JPEG
    raise InvalidQuery("rendered images are available as image/jpeg or image/png")


def _window(value: str | None) -> Window | None:
    if not value:
        return None
    parts = value.split(",")
    try:
        center, width = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise InvalidQuery("window must be center,width[,function]") from None
    if not (math.isfinite(center) and math.isfinite(width)) or width < 1:
        raise InvalidQuery("window centre must be a number and width a number of at least 1")
    return Window(center=center, width=width)


def _viewport(value: str | None) -> tuple[int, int] | None:
    """`viewport=width,height` (PS3.18 8.3.5.1.3); one side alone bounds both."""
    if not value:
        return None
    try:
        sizes = [int(v) for v in value.split(",")[:2] if v.strip()]
    except ValueError:
        raise InvalidQuery("viewport must be width,height") from None
    if not sizes or min(sizes) < 1 or max(sizes) > _MAX_VIEWPORT:
        raise InvalidQuery(f"viewport sides must be between 1 and {_MAX_VIEWPORT}")
    return (sizes[0], sizes[-1])


RenderParams = Annotated[str | None, Query()]


def _rendered(
    request: Request,
    archive: Archive,
    principal: Principal,
    purpose: str,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str | None,
    frame: int,
    window: str | None,
    viewport: str | None,
    quality: int | None,
    accept: str | None,
    default_size: int | None,
) -> Response:
    output = _output(request, accept)
    render_request = RenderRequest(
        frame=frame,
        window=_window(window),
        max_size=default_size,
        viewport=_viewport(viewport),
        output=output,
        quality=quality if quality and 1 <= quality <= 100 else 90,
    )
    found = archive.access.instances_for_read(principal, purpose, study_uid, series_uid, sop_uid)
    image = _representative(found)
    body = archive.access.render(principal, image, render_request)
    return Response(body, media_type=output.value)


def _representative(found: list[StoredInstance]) -> StoredInstance:
    """The image that stands for a study or series: the first one that has pixels."""
    for inst in found:
        if inst.rows:
            return inst
    return found[0]


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered")
def instance_rendered(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    window: RenderParams = None,
    viewport: RenderParams = None,
    quality: int | None = None,
    accept: RenderParams = None,
) -> Response:
    return _rendered(
        request,
        archive,
        principal,
        "rendered",
        study_uid,
        series_uid,
        sop_uid,
        1,
        window,
        viewport,
        quality,
        accept,
        None,
    )


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame}/rendered")
def frame_rendered(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame: int,
    window: RenderParams = None,
    viewport: RenderParams = None,
    quality: int | None = None,
    accept: RenderParams = None,
) -> Response:
    if frame < 1:
        raise InvalidQuery("frame numbers start at 1")
    return _rendered(
        request,
        archive,
        principal,
        "rendered",
        study_uid,
        series_uid,
        sop_uid,
        frame,
        window,
        viewport,
        quality,
        accept,
        None,
    )


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/thumbnail")
def instance_thumbnail(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    viewport: RenderParams = None,
    accept: RenderParams = None,
) -> Response:
    return _rendered(
        request,
        archive,
        principal,
        "thumbnail",
        study_uid,
        series_uid,
        sop_uid,
        1,
        None,
        viewport,
        None,
        accept,
        _THUMBNAIL_SIZE,
    )


@router.get("/studies/{study_uid}/series/{series_uid}/thumbnail")
def series_thumbnail(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study_uid: str,
    series_uid: str,
    viewport: RenderParams = None,
    accept: RenderParams = None,
) -> Response:
    return _rendered(
        request,
        archive,
        principal,
        "thumbnail",
        study_uid,
        series_uid,
        None,
        1,
        None,
        viewport,
        None,
        accept,
        _THUMBNAIL_SIZE,
    )


@router.get("/studies/{study_uid}/thumbnail")
def study_thumbnail(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study_uid: str,
    viewport: RenderParams = None,
    accept: RenderParams = None,
) -> Response:
    return _rendered(
        request,
        archive,
        principal,
        "thumbnail",
        study_uid,
        None,
        None,
        1,
        None,
        viewport,
        None,
        accept,
        _THUMBNAIL_SIZE,
    )
