"""Strong ETags and conditional answers for metadata and rendered images (RFC 9110 8.8.3, 13.1.2).

A stored object never changes under its SHA-256, so the hashes of what an answer is made from,
plus the parameters that shape it, determine its bytes: the ETag is a hash of exactly that, and
is known before anything is read or rendered. A 304 is still authorized and audited, because
`instances_for_read` runs first: knowing the copy in the browser's cache is still current is
itself a read of the patient's record (it is grouped per series like other rendered reads).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from fastapi import Request
from fastapi.responses import Response

from storage.records import StoredInstance

REVALIDATE = "private, no-cache"
"""Browsers may keep the answer but must ask again (with If-None-Match) before using it."""


def etag_for(instances: Iterable[StoredInstance], *shape: object) -> str:
    digest = hashlib.sha256()
    for inst in instances:
        digest.update(inst.sop_uid.encode() + b"\0" + inst.blob.sha256.encode() + b"\n")
    digest.update(repr(shape).encode())
    return f'"{digest.hexdigest()[:40]}"'


def not_modified(request: Request, etag: str) -> Response | None:
    """304 with no body when the client's If-None-Match names `etag` (or `*`)."""
    header = request.headers.get("if-none-match", "")
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    if etag in tags or "*" in tags:
        return Response(status_code=304, headers=cache_headers(etag))
    return None


def cache_headers(etag: str) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": REVALIDATE, "Vary": "Accept, Accept-Encoding"}
