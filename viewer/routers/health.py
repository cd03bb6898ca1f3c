"""Liveness and readiness, without authentication: for load balancers and the operator."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from storage.errors import StorageError
from viewer.dependencies import ArchiveDep

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(archive: ArchiveDep) -> JSONResponse:
    try:
        archive.check_ready()
    except StorageError as exc:
        return JSONResponse({"status": "not ready", "reason": str(exc)}, status_code=503)
    return JSONResponse({"status": "ready"})
