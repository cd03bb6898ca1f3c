"""Draining a node over HTTP, for the operator's rolling restart (`arkiv cluster restart`):
`POST /node/drain` starts it, `GET /node/drain` says whether open work is done. Both need the
bearer token in `drain_token_file`; without one configured they answer 404. /readyz reports
503 "draining" from the moment draining starts, so load balancers move on (see arkiv.drain).
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from arkiv.drain import DrainStatus
from arkiv.services import Archive
from viewer.dependencies import ArchiveDep

router = APIRouter()

DRAIN_PATH = "/node/drain"


def _refusal(request: Request, archive: Archive) -> JSONResponse | None:
    """None when the request carries the configured token; else the answer to give."""
    token_file = archive.settings.drain_token_file
    if not token_file:
        return JSONResponse(
            {"reason": "draining over HTTP is off on this node: set drain_token_file"},
            status_code=404,
        )
    try:
        expected = Path(token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        return JSONResponse(
            {"reason": f"the drain token file cannot be read: {exc.strerror}"}, status_code=503
        )
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(token.strip().encode(), expected.encode())
    ):
        return JSONResponse(
            {"reason": "a drain needs the node's drain token as a bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer realm="arkiv node"'},
        )
    return None


def _as_json(status: DrainStatus) -> dict[str, Any]:
    return {"draining": status.draining, "drained": status.drained, "in_flight": status.in_flight}


@router.post(DRAIN_PATH, status_code=202)
def start_drain(request: Request, archive: ArchiveDep) -> Response:
    refusal = _refusal(request, archive)
    if refusal is not None:
        return refusal
    return JSONResponse(_as_json(archive.drain.start()), status_code=202)


@router.get(DRAIN_PATH)
def drain_status(request: Request, archive: ArchiveDep) -> Response:
    refusal = _refusal(request, archive)
    if refusal is not None:
        return refusal
    return JSONResponse(_as_json(archive.drain.status()))


def count_requests(app: FastAPI, archive: Archive) -> None:
    """Count the requests in flight (the drain's own excepted), for a drain to wait on."""
    lock = threading.Lock()
    in_flight = 0

    def count() -> int:
        with lock:
            return in_flight

    archive.drain.add_probe("web requests", count)

    @app.middleware("http")
    async def counted(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        nonlocal in_flight
        if request.url.path == DRAIN_PATH:
            return await call_next(request)
        with lock:
            in_flight += 1
        try:
            return await call_next(request)
        finally:
            with lock:
                in_flight -= 1
