"""The FastAPI application factory: routers, error mapping, security headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from arkiv.services import Archive
from arkiv.transcoding import TranscodeError
from viewer import errors
from viewer.dependencies import csrf_guard
from viewer.media_types import NotAcceptable
from viewer.metrics import registry_for
from viewer.ohif import mount_ohif
from viewer.routers import (
    admin,
    audit_api,
    audit_pages,
    auth,
    break_glass_api,
    dicomweb,
    drain,
    fhir,
    health,
    oidc,
    pages,
    patient_admin,
    patient_pages,
    photo_pages,
    photos,
    qido,
    stow,
    study_viewer,
    wado_uri,
)
from viewer.routers.drain import count_requests

_STATIC = Path(__file__).parent / "static"


def create_app(archive: Archive) -> FastAPI:
    app = FastAPI(
        title="arkiv",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        dependencies=[Depends(csrf_guard)],
    )
    app.state.archive = archive
    app.state.metrics = registry_for(archive)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(drain.router)
    count_requests(app, archive)
    app.include_router(auth.router)
    app.include_router(oidc.router)
    app.include_router(qido.router)
    app.include_router(dicomweb.router)
    app.include_router(stow.router)
    app.include_router(wado_uri.router)
    app.include_router(photos.router)
    app.include_router(photo_pages.router)
    app.add_exception_handler(NotAcceptable, _not_acceptable)
    app.add_exception_handler(TranscodeError, _not_acceptable)
    app.include_router(audit_api.router)
    app.include_router(audit_pages.router)
    app.include_router(fhir.router)
    app.include_router(break_glass_api.router)
    app.include_router(admin.router)
    app.include_router(patient_admin.router)
    app.include_router(pages.router)
    app.include_router(study_viewer.router)
    app.include_router(patient_pages.router)
    if archive.settings.ohif_dir:
        mount_ohif(app, Path(archive.settings.ohif_dir))
    hsts = archive.settings.web_tls
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        # same-origin, not no-referrer: under no-referrer browsers send `Origin: null` with a
        # form's POST, which the CSRF guard must refuse; other sites still get no referrer.
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'; "
            "form-action 'self'; base-uri 'none'; object-src 'none'",
        )
        if not request.url.path.startswith("/static"):
            response.headers.setdefault("Cache-Control", "no-store")
        if hsts:
            response.headers.setdefault(
                "Strict-Transport-Security", "max-age=31536000; includeSubDomains"
            )
        return response

    if archive.settings.cors_origins:
        _allow_cross_origin(app, archive.settings.cors_origins)
    return app


async def _not_acceptable(request: Request, exc: Exception) -> Response:
    """No representation the client accepts can be made (406), with the reason why."""
    return JSONResponse(
        {"reason": str(exc)}, status_code=406, headers={"Cache-Control": "no-store"}
    )


def _allow_cross_origin(app: FastAPI, origins: tuple[str, ...]) -> None:
    """CORS for viewers served from another origin (a clinic's own OHIF). Added last, so it runs
    first: preflight requests are answered before authentication, as browsers send them without
    credentials; the actual requests are still authenticated and audited like any other."""
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_credentials=True,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Accept", "Content-Type", "If-None-Match"],
        expose_headers=["Content-Type", "Content-Encoding", "ETag", "Warning", "Location"],
        max_age=600,
    )


def create_health_app(archive: Archive) -> FastAPI:
    """Only /healthz, /readyz, /metrics and the drain, for a node that runs `arkiv dicom` alone:
    its load balancer and monitoring need to know whether it can keep what modalities send, the
    operator's rolling restart needs to drain it, and nothing else may be served there (no
    patient data, no sign-in)."""
    app = FastAPI(title="arkiv node health", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.archive = archive
    app.state.metrics = registry_for(archive)
    app.include_router(health.router)
    app.include_router(drain.router)
    count_requests(app, archive)
    return app
