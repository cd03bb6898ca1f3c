"""DICOMweb WADO-RS (PS3.18 10.4): retrieve, metadata, frames, bulk data, rendered and thumbnail.

Every route goes through `arkiv.access`, which authorizes and writes the audit event before any
data leaves. Retrieve sends each object checked against its SHA-256 first (a single damaged
object is a 503, never served), in its stored transfer syntax when the client accepts that
(`transfer-syntax=*`), else transcoded losslessly to the syntax asked for (406 when impossible).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydicom.uid import UID

from arkiv import transcoding
from arkiv.accounts import Principal
from arkiv.errors import InvalidQuery
from arkiv.frames import PIXEL_DATA, bulk_value, extract_frames, parse_frame_list
from arkiv.rendering import OutputFormat, RenderRequest, Window
from arkiv.services import Archive
from storage.records import StoredInstance
from viewer import dicom_json
from viewer.caching import cache_headers, etag_for, not_modified
from viewer.dependencies import ArchiveDep, PrincipalDep
from viewer.dicomweb_http import base_url, dicom_json_response
from viewer.media_types import (
    ANY_SYNTAX,
    FRAME_MEDIA_TYPES,
    NotAcceptable,
    dicom_transfer_syntax,
    frame_choice,
)
from viewer.multipart import multipart_stream, new_boundary, typed_multipart_stream

router = APIRouter(prefix="/dicom-web")

_THUMBNAIL_SIZE = 128
_MAX_VIEWPORT = 4096
_OCTET = "application/octet-stream"


# -- WADO-RS retrieve ------------------------------------------------------------------------------


def _retrieve(
    request: Request,
    archive: Archive,
    principal: Principal,
    study_uid: str,
    series_uid: str | None,
    sop_uid: str | None,
) -> Response:
    syntax = dicom_transfer_syntax(request.headers.get("accept", ""))
    found = archive.access.instances_for_read(
        principal, "retrieve", study_uid, series_uid, sop_uid, transfer=True
    )
    for inst in found:  # refuse before the first byte rather than break off a study midway
        if syntax != ANY_SYNTAX and not transcoding.can_transcode(
            inst.transfer_syntax_uid, syntax, has_pixels=bool(inst.rows)
        ):
            raise NotAcceptable(
                f"instance {inst.sop_uid} is stored as {inst.transfer_syntax_uid} and cannot be "
                f"sent as {syntax}; ask with transfer-syntax=* for it as stored"
            )
    first = _in_syntax(archive.access.read_bytes(principal, found[0]), syntax)
    boundary = new_boundary()
    parts = [_verified_part(archive, principal, inst, syntax) for inst in found[1:]]
    part_type = "application/dicom"
    if syntax != ANY_SYNTAX:
        part_type = f"application/dicom; transfer-syntax={syntax}"
    return StreamingResponse(
        multipart_stream([lambda: iter((first,)), *parts], part_type, boundary),
        media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


def _in_syntax(data: bytes, syntax: str) -> bytes:
    """The stored bytes, or a lossless copy in `syntax` (the bytes unchanged when already in it)."""
    if syntax == ANY_SYNTAX:
        return data
    try:
        return transcoding.transcode(data, syntax)
    except transcoding.TranscodeError as exc:
        raise NotAcceptable(str(exc)) from exc


def _verified_part(
    archive: Archive, principal: Principal, inst: StoredInstance, syntax: str
) -> Callable[[], Iterator[bytes]]:
    """One object at a time, each checked against its SHA-256 before any of it is sent; a
    mismatch later in a study ends the response before its closing boundary."""

    def chunks() -> Iterator[bytes]:
        yield _in_syntax(archive.access.read_bytes(principal, inst), syntax)

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
    """The full stored DICOM JSON of each instance, BulkDataURIs made absolute."""
    found = archive.access.instances_for_read(principal, "metadata", study_uid, series_uid, sop_uid)
    base = base_url(request)
    etag = etag_for(found, "metadata", base)
    unchanged = not_modified(request, etag)
    if unchanged is not None:
        return unchanged
    payload = [_with_pixel_reference(i, base) for i in found]
    return dicom_json_response(request, payload, cache_headers(etag))


def _with_pixel_reference(inst: StoredInstance, base: str) -> dict[str, object]:
    """The stored metadata, plus a BulkDataURI for the pixel data (PS3.18 F.2.6): the index
    keeps metadata without pixels, and clients that load pixels by reference need the link."""
    stored = dicom_json.metadata_json(inst, base, json.loads(inst.metadata_json))
    if inst.rows and f"{PIXEL_DATA:08X}" not in stored:
        url = f"{base}/studies/{inst.study_uid}/series/{inst.series_uid}/instances/{inst.sop_uid}"
        vr = "OB" if UID(inst.transfer_syntax_uid).is_compressed else "OW"
        stored[f"{PIXEL_DATA:08X}"] = {"vr": vr, "BulkDataURI": f"{url}/bulkdata/{PIXEL_DATA:08X}"}
    return stored


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


RenderParam = Annotated[str | None, Query()]


@dataclass(frozen=True)
class ImageOptions:
    """The rendering parameters of PS3.18 8.3.5.1 as a route receives them (one dependency,
    so every rendered and thumbnail route takes the same ones)."""

    window: str | None
    viewport: str | None
    quality: int | None
    accept: str | None


def image_options(
    window: RenderParam = None,
    viewport: RenderParam = None,
    quality: int | None = None,
    accept: RenderParam = None,
) -> ImageOptions:
    return ImageOptions(window, viewport, quality, accept)


ImageOptionsDep = Annotated[ImageOptions, Depends(image_options)]


@dataclass(frozen=True)
class Target:
    """What a rendered or thumbnail URL names: a study, series, instance or frame."""

    study_uid: str
    series_uid: str | None = None
    sop_uid: str | None = None
    frame: int = 1


def _rendered(
    request: Request,
    archive: Archive,
    principal: Principal,
    target: Target,
    options: ImageOptions,
    thumbnail: bool = False,
) -> Response:
    """A rendered image or a thumbnail (no larger than 128 pixels, in the stored window)."""
    if target.frame < 1:
        raise InvalidQuery("frame numbers start at 1")
    output = _output(request, options.accept)
    quality = None if thumbnail else options.quality
    render_request = RenderRequest(
        frame=target.frame,
        window=None if thumbnail else _window(options.window),
        max_size=_THUMBNAIL_SIZE if thumbnail else None,
        viewport=_viewport(options.viewport),
        output=output,
        quality=quality if quality and 1 <= quality <= 100 else 90,
    )
    purpose = "thumbnail" if thumbnail else "rendered"
    found = archive.access.instances_for_read(
        principal, purpose, target.study_uid, target.series_uid, target.sop_uid
    )
    image = _representative(found)
    etag = etag_for([image], purpose, render_request)
    unchanged = not_modified(request, etag)
    if unchanged is not None:
        return unchanged
    body = archive.access.render(principal, image, render_request)
    return Response(body, media_type=output.value, headers=cache_headers(etag))


def _representative(found: list[StoredInstance]) -> StoredInstance:
    """The image that stands for a study or series: the first one that has pixels."""
    for inst in found:
        if inst.rows:
            return inst
    return found[0]


_INSTANCE = "/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"


@router.get("/studies/{study_uid}/rendered")
def study_rendered(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    options: ImageOptionsDep,
    study_uid: str,
) -> Response:
    return _rendered(request, archive, principal, Target(study_uid), options)


@router.get("/studies/{study_uid}/series/{series_uid}/rendered")
def series_rendered(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    options: ImageOptionsDep,
    study_uid: str,
    series_uid: str,
) -> Response:
    return _rendered(request, archive, principal, Target(study_uid, series_uid), options)


@router.get(_INSTANCE + "/rendered")
def instance_rendered(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    options: ImageOptionsDep,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
) -> Response:
    target = Target(study_uid, series_uid, sop_uid)
    return _rendered(request, archive, principal, target, options)


@router.get(_INSTANCE + "/frames/{frame}/rendered")
def frame_rendered(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    options: ImageOptionsDep,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame: int,
) -> Response:
    target = Target(study_uid, series_uid, sop_uid, frame)
    return _rendered(request, archive, principal, target, options)


@router.get("/studies/{study_uid}/thumbnail")
def study_thumbnail(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    options: ImageOptionsDep,
    study_uid: str,
) -> Response:
    return _rendered(request, archive, principal, Target(study_uid), options, thumbnail=True)


@router.get("/studies/{study_uid}/series/{series_uid}/thumbnail")
def series_thumbnail(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    options: ImageOptionsDep,
    study_uid: str,
    series_uid: str,
) -> Response:
    target = Target(study_uid, series_uid)
    return _rendered(request, archive, principal, target, options, thumbnail=True)


@router.get(_INSTANCE + "/thumbnail")
def instance_thumbnail(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    options: ImageOptionsDep,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
) -> Response:
    target = Target(study_uid, series_uid, sop_uid)
    return _rendered(request, archive, principal, target, options, thumbnail=True)


@router.get(_INSTANCE + "/frames/{frame}/thumbnail")
def frame_thumbnail(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    options: ImageOptionsDep,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame: int,
) -> Response:
    target = Target(study_uid, series_uid, sop_uid, frame)
    return _rendered(request, archive, principal, target, options, thumbnail=True)


# -- frames and bulk data --------------------------------------------------------------------------


def _frames_response(
    request: Request,
    archive: Archive,
    principal: Principal,
    inst: StoredInstance,
    numbers: list[int],
) -> Response:
    choice = frame_choice(request.headers.get("accept", ""), inst.transfer_syntax_uid)
    data = archive.access.read_bytes(principal, inst)
    frames = extract_frames(data, numbers, decode=not choice.as_stored)
    if frames.encapsulated:
        media = FRAME_MEDIA_TYPES.get(frames.transfer_syntax_uid, _OCTET)
        part_type = f"{media}; transfer-syntax={frames.transfer_syntax_uid}"
    else:
        media = _OCTET
        part_type = f"{_OCTET}; transfer-syntax={frames.transfer_syntax_uid}"
    boundary = new_boundary()
    parts = [(part_type, _chunk(frame)) for frame in frames.frames]
    return StreamingResponse(
        typed_multipart_stream(parts, boundary),
        media_type=f'multipart/related; type="{media}"; boundary={boundary}',
    )


def _chunk(data: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: iter((data,))


def _one_instance(
    archive: Archive, principal: Principal, purpose: str, study: str, series: str, sop: str
) -> StoredInstance:
    found = archive.access.instances_for_read(principal, purpose, study, series, sop)
    return found[0]


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/{frame_list}")
def retrieve_frames(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    frame_list: str,
) -> Response:
    numbers = parse_frame_list(frame_list)
    inst = _one_instance(archive, principal, "frames", study_uid, series_uid, sop_uid)
    return _frames_response(request, archive, principal, inst, numbers)


@router.get("/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/bulkdata/{tag}")
def retrieve_bulkdata(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    tag: str,
) -> Response:
    """The value a BulkDataURI in the metadata points at; pixel data comes as its frames."""
    inst = _one_instance(archive, principal, "bulkdata", study_uid, series_uid, sop_uid)
    if tag.upper() == f"{PIXEL_DATA:08X}":
        return _frames_response(request, archive, principal, inst, list(range(1, inst.frames + 1)))
    accept = request.headers.get("accept", "")
    if accept and not any(
        kind in accept for kind in ("application/octet-stream", "*/*", "multipart/related")
    ):
        raise NotAcceptable(
            "bulk data is served as multipart/related; type=application/octet-stream"
        )
    value = bulk_value(archive.access.read_bytes(principal, inst), tag)
    boundary = new_boundary()
    return StreamingResponse(
        multipart_stream([_chunk(value)], _OCTET, boundary),
        media_type=f'multipart/related; type="{_OCTET}"; boundary={boundary}',
    )
