"""Liveness, readiness and metrics, without authentication: for load balancers, monitoring and
the operator. None of them says anything about a patient."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from storage.errors import StorageError
from viewer.dependencies import ArchiveDep

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(archive: ArchiveDep) -> JSONResponse:
    if archive.drain.draining:  # before a planned restart: send new work elsewhere
        return JSONResponse({"status": "draining"}, status_code=503)
    try:
        archive.check_ready()
    except StorageError as exc:
        return JSONResponse({"status": "not ready", "reason": str(exc)}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
def metrics(request: Request) -> Response:
    body = generate_latest(request.app.state.metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
