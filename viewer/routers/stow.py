"""DICOMweb STOW-RS (PS3.18 10.5): store instances sent as multipart/related application/dicom.

Each part goes through the same ingest as a C-STORE, so an object stored over HTTP is indexed,
checksummed and audited exactly like one from a modality. The answer says, per instance, what
was stored and what failed with which reason (PS3.18 10.5.3): 200 when all were stored, 202 when
some failed, 409 when none were stored.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydicom import dcmread
from starlette.concurrency import run_in_threadpool

from arkiv.accounts import Principal
from arkiv.authorization import require_store
from arkiv.errors import ArchiveUnavailable, InvalidObject, UnsupportedObject
from arkiv.ingest import IngestOutcome
from arkiv.services import Archive
from viewer.dependencies import ArchiveDep, PrincipalDep
from viewer.dicomweb_http import DICOM_JSON, base_url
from viewer.media_types import parse_accept
from viewer.multipart import Part, boundary_of, parse_multipart
from viewer.stow_outcomes import (
    CANNOT_UNDERSTAND,
    DATA_SET_DOES_NOT_MATCH,
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    SOP_CLASS_NOT_SUPPORTED,
    Outcome,
)
from viewer.stow_wic import store_json_and_bulk

router = APIRouter(prefix="/dicom-web")


class PayloadTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it grows past `limit` rather than after."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _identify(data: bytes) -> tuple[str, str, str]:
    """(SOP Class, SOP Instance, Study Instance UID) as far as they can be read."""
    try:
        ds = dcmread(BytesIO(data), stop_before_pixels=True, force=True)
        return (
            str(ds.get("SOPClassUID", "")),
            str(ds.get("SOPInstanceUID", "")),
            str(ds.get("StudyInstanceUID", "")),
        )
    except Exception:  # anything unreadable is reported with empty UIDs
        return ("", "", "")


_PREAMBLE = bytes(128)


def _as_part10(data: bytes) -> bytes:
    """The part as a Part 10 file with its 128-byte preamble.

    Clients that write datasets built in memory (dicomweb-client with pydicom, for one) often
    send the file meta group without the preamble, or without `DICM`. What follows is the
    same object, so the archive adds what is missing and keeps a canonical file, rather than
    refusing an image a clinic's tool sent in good faith.
    """
    if data[128:132] == b"DICM":
        return data
    if data[:4] == b"DICM":
        return _PREAMBLE + data
    if data[:2] == b"\x02\x00":  # the file meta group (0002,xxxx) straight away
        return _PREAMBLE + b"DICM" + data
    return data


def _store_one(archive: Archive, principal: Principal, part: Part, study: str | None) -> Outcome:
    data = _as_part10(part.body)
    sop_class, sop_uid, study_uid = _identify(data)
    media = parse_accept(part.content_type)
    if part.content_type and (not media or media[0].media_type != "application/dicom"):
        return Outcome(
            sop_class, sop_uid, study_uid, SOP_CLASS_NOT_SUPPORTED, "part is not application/dicom"
        )
    if study is not None and study_uid != study:
        return Outcome(
            sop_class,
            sop_uid,
            study_uid,
            DATA_SET_DOES_NOT_MATCH,
            f"instance belongs to study {study_uid or '(none)'}, not {study}",
        )
    try:
        result = archive.ingest.ingest_dicom(data, principal.actor())
    except UnsupportedObject as exc:
        return Outcome(sop_class, sop_uid, study_uid, SOP_CLASS_NOT_SUPPORTED, str(exc))
    except InvalidObject as exc:
        return Outcome(sop_class, sop_uid, study_uid, CANNOT_UNDERSTAND, str(exc))
    except ArchiveUnavailable as exc:
        return Outcome(sop_class, sop_uid, study_uid, OUT_OF_RESOURCES, str(exc))
    if result.outcome is IngestOutcome.CONFLICT:
        return Outcome(
            sop_class, sop_uid, study_uid, DUPLICATE_SOP_INSTANCE, result.message or "conflict"
        )
    return Outcome(sop_class, result.sop_uid, result.study_uid)


def _uid(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _answer(outcomes: list[Outcome], base: str, study: str | None) -> dict[str, Any]:
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    answer: dict[str, Any] = {}
    if study is not None:
        answer["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{study}"]}
    if failed:
        answer["00081198"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": _uid(o.sop_class_uid),
                    "00081155": _uid(o.sop_uid),
                    "00081197": {"vr": "US", "Value": [o.failure]},
                }
                for o in failed
            ],
        }
    if stored:
        answer["00081199"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": _uid(o.sop_class_uid),
                    "00081155": _uid(o.sop_uid),
                    "00081190": {"vr": "UR", "Value": [f"{base}/studies/{o.study_uid}"]},
                }
                for o in stored
            ],
        }
    return answer


def _status(outcomes: list[Outcome]) -> int:
    failures = sum(o.failure is not None for o in outcomes)
    if failures == 0:
        return 200
    return 409 if failures == len(outcomes) else 202


async def _stow(
    request: Request, archive: Archive, principal: Principal, study: str | None
) -> Response:
    require_store(principal)
    content_type = request.headers.get("content-type", "")
    ranges = parse_accept(content_type)
    media = ranges[0] if ranges else None
    if media is None or media.media_type != "multipart/related":
        return _refuse(415, 'STOW-RS takes multipart/related; type="application/dicom"')
    if media.part_type not in (None, "application/dicom", "application/dicom+json"):
        return _refuse(
            415,
            f"parts of type {media.part_type} are not accepted; send application/dicom, or "
            "application/dicom+json with the image as bulk data",
        )
    try:
        body = await _read_body(request, archive.settings.stow_max_bytes)
    except PayloadTooLarge:
        return _refuse(413, f"the request is larger than {archive.settings.stow_max_bytes} bytes")
    parts = parse_multipart(body, boundary_of(content_type))
    if not parts:
        return _refuse(400, "the request holds no instances")
    if media.part_type == "application/dicom+json":
        outcomes = await run_in_threadpool(store_json_and_bulk, archive, principal, parts)
    else:
        outcomes = [
            await run_in_threadpool(_store_one, archive, principal, part, study) for part in parts
        ]
    return JSONResponse(
        _answer(outcomes, base_url(request), study),
        status_code=_status(outcomes),
        media_type=DICOM_JSON,
    )


def _refuse(status: int, reason: str) -> Response:
    return JSONResponse({"reason": reason}, status_code=status)


@router.post("/studies")
async def store_instances(
    request: Request, archive: ArchiveDep, principal: PrincipalDep
) -> Response:
    return await _stow(request, archive, principal, None)


@router.post("/studies/{study_uid}")
async def store_study_instances(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study_uid: str
) -> Response:
    return await _stow(request, archive, principal, study_uid)
