"""The photo and video API (`/api/photos`): upload, a patient's gallery, renditions, and video
served in ranges so that a browser can seek without downloading the whole file.

Every read goes through `PhotoService.photo_for_read`, which audits it before a byte is sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile

from arkiv.errors import InvalidObject, NotFound
from arkiv.photos import MediaTooLarge, PhotoForm, UploadedFile
from storage.records import PhotoRecord
from viewer.caching import cache_headers, not_modified
from viewer.dependencies import ArchiveDep, PrincipalDep
from viewer.photo_json import patient_json, photo_json

router = APIRouter(prefix="/api")

MAX_FILES = 50
RANGE_CHUNK = 4 * 1024 * 1024
"""The most one range answer carries: a player asking `bytes=0-` gets the start and asks on."""
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@router.post("/photos")
async def upload(request: Request, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    settings = archive.settings
    limit = max(settings.video_max_bytes, settings.photo_max_bytes) + 1024 * 1024
    length = request.headers.get("content-length")
    if length is None:  # the size limit is checked before anything is read
        return JSONResponse({"reason": "send the upload with a Content-Length"}, status_code=411)
    if not length.isdigit() or int(length) > limit:
        raise MediaTooLarge(f"the upload is larger than the archive takes ({limit / 1e6:.0f} MB)")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidObject("send the photos as multipart/form-data")
    async with request.form(max_files=MAX_FILES, max_fields=20) as form:
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        uploads = [v for k, v in form.multi_items() if k == "file" and isinstance(v, UploadFile)]
        files = [
            UploadedFile(
                data=await item.read(),
                declared_type=item.content_type or "",
                filename=item.filename or "",
            )
            for item in uploads
        ]
    photo_form = PhotoForm(
        patient_id=fields.get("patient_id", ""),
        category=fields.get("category", ""),
        teeth=fields.get("teeth", ""),
        note=fields.get("note", "")[:2000],
        taken_at=fields.get("taken_at", ""),
    )
    if not photo_form.patient_id.strip():
        raise InvalidObject("patient_id (the patient's national ID) is required")
    stored = await run_in_threadpool(archive.photos.upload, principal, files, photo_form)
    status = 200 if all(item.duplicate for item in stored) else 201
    return JSONResponse(
        {"photos": [photo_json(item.record, item.duplicate) for item in stored]},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


@router.get("/patients/{patient_key}/photos")
def gallery(
    archive: ArchiveDep,
    principal: PrincipalDep,
    patient_key: int,
    category: Annotated[str | None, Query(max_length=32)] = None,
    tooth: Annotated[int | None, Query(ge=11, le=85)] = None,
) -> JSONResponse:
    patient, photos = archive.photos.gallery(principal, patient_key, category or None, tooth)
    return JSONResponse(
        {"patient": patient_json(patient), "photos": [photo_json(p) for p in photos]},
        headers={"Cache-Control": "no-store"},
    )


@router.post("/photos/search")
def search(
    archive: ArchiveDep,
    principal: PrincipalDep,
    patient_id: Annotated[str, Form(max_length=64)],
    category: Annotated[str | None, Form(max_length=32)] = None,
    tooth: Annotated[int | None, Form(ge=11, le=85)] = None,
) -> JSONResponse:
    """A patient's photos by national ID, posted so that the ID stays out of URLs and logs."""
    key = archive.photos.patient_key(patient_id.strip())
    if key is None:
        raise NotFound("no such patient")
    return gallery(archive, principal, key, category, tooth)


@router.get("/photos/{photo_id}")
def photo(archive: ArchiveDep, principal: PrincipalDep, photo_id: str) -> JSONResponse:
    found = archive.photos.photo_for_read(principal, photo_id, "metadata")
    return JSONResponse(photo_json(found), headers={"Cache-Control": "no-store"})


@router.get("/photos/{photo_id}/thumbnail")
def thumbnail(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, photo_id: str
) -> Response:
    return _rendition(request, archive, principal, photo_id, "thumbnail")


@router.get("/photos/{photo_id}/web")
def web(request: Request, archive: ArchiveDep, principal: PrincipalDep, photo_id: str) -> Response:
    return _rendition(request, archive, principal, photo_id, "web")


@router.get("/photos/{photo_id}/original")
def original(archive: ArchiveDep, principal: PrincipalDep, photo_id: str) -> Response:
    found = archive.photos.photo_for_read(principal, photo_id, "original")
    data = archive.photos.access.read(principal, found, "original")
    name = f"{found.photo_id}.{found.original.key.rsplit('.', 1)[-1]}"
    return Response(
        data,
        media_type=found.facts.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/photos/{photo_id}/video")
def video(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, photo_id: str
) -> Response:
    found = archive.photos.photo_for_read(principal, photo_id, "video")
    if found.facts.kind != "video":
        raise InvalidObject("this is a photo, not a video; use /web or /original")
    size = found.original.size
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, no-cache"}
    asked = request.headers.get("range")
    if asked is None:
        return StreamingResponse(
            _chunks(archive, found, 0, size),
            media_type=found.facts.media_type,
            headers={**headers, "Content-Length": str(size)},
        )
    span = _byte_range(asked, size)
    if span is None:
        return Response(
            status_code=416,
            headers={**headers, "Content-Range": f"bytes */{size}"},
        )
    start, end = span
    data = archive.photos.access.read_range(found, "original", start, end - start + 1)
    return Response(
        data,
        status_code=206,
        media_type=found.facts.media_type,
        headers={**headers, "Content-Range": f"bytes {start}-{start + len(data) - 1}/{size}"},
    )


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The first byte and the last (inclusive) of a single `bytes=` range (RFC 9110 14.1.2),
    at most RANGE_CHUNK long; None when it cannot be satisfied."""
    match = _RANGE.match(header.strip())
    if match is None or size == 0:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        start = max(0, size - int(last))
        end = size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, start + RANGE_CHUNK - 1)


def _chunks(archive: ArchiveDep, found: PhotoRecord, start: int, size: int) -> Iterator[bytes]:
    for offset in range(start, size, RANGE_CHUNK):
        yield archive.photos.access.read_range(found, "original", offset, RANGE_CHUNK)


def _rendition(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, photo_id: str, role: str
) -> Response:
    found = archive.photos.photo_for_read(principal, photo_id, role)
    etag = f'"{found.blobs[role].sha256[:40]}"'
    cached = not_modified(request, etag)
    if cached is not None:
        return cached
    data = archive.photos.access.read(principal, found, role)
    return Response(data, media_type="image/jpeg", headers=cache_headers(etag))
