"""The FastAPI application factory: routers, error mapping, security headers."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from arkiv.config import ConfigError
from arkiv.services import Archive
from arkiv.transcoding import TranscodeError
from viewer import errors
from viewer.dependencies import csrf_guard
from viewer.media_types import NotAcceptable
from viewer.metrics import registry_for
from viewer.routers import (
    admin,
    audit_api,
    audit_pages,
    auth,
    break_glass_api,
    dicomweb,
    fhir,
    health,
    oidc,
    pages,
    qido,
    stow,
    wado_uri,
)

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
    app.include_router(auth.router)
    app.include_router(oidc.router)
    app.include_router(qido.router)
    app.include_router(dicomweb.router)
    app.include_router(stow.router)
    app.include_router(wado_uri.router)
    app.add_exception_handler(NotAcceptable, _not_acceptable)
    app.add_exception_handler(TranscodeError, _not_acceptable)
    app.include_router(audit_api.router)
    app.include_router(audit_pages.router)
    app.include_router(fhir.router)
    app.include_router(break_glass_api.router)
    app.include_router(admin.router)
    app.include_router(pages.router)
    if archive.settings.ohif_dir:
        _serve_ohif(app, Path(archive.settings.ohif_dir))
    hsts = archive.settings.web_tls
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
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


_OHIF_CSP = (
    "default-src 'self'; script-src 'self' {scripts} 'wasm-unsafe-eval'; "
    "worker-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'self'; object-src 'none'"
)


def _serve_ohif(app: FastAPI, root: Path) -> None:
    """OHIF at /ohif/, same-origin, so its DICOMweb requests carry the session cookie and go
    through the same authorization and audit as every other read (no CORS, no second login).

    A path without a file name extension is the single-page app's own route (`/ohif/viewer?…`)
    and gets index.html; a missing file is a 404, not a page where a script was expected.

    OHIF's own CSP, as tight as the study list and the stack viewer run with (tests/test_ohif.py
    fails on any CSP violation): the page's two inline boot scripts by hash only, no eval;
    WebAssembly codecs (`'wasm-unsafe-eval'`); inline styles (React and OHIF's UI kit set them);
    data: images (its icons). Image decoding runs in workers from this origin, and a worker obeys
    the CSP of its own script's response: the JPEG 2000 codec (an Emscripten build) evaluates
    strings, so scripts are served with `'unsafe-eval'`, which binds only workers (no document
    obeys a script's CSP), and a worker has no access to the page."""
    index = root / "index.html"
    if not index.is_file():
        raise ConfigError(f"ohif_dir {root} has no index.html: point it at an OHIF build's dist")
    inline = re.findall(r"<script>(.*?)</script>", index.read_text(encoding="utf-8"), re.S)
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in inline
    )
    page = {"Content-Security-Policy": _OHIF_CSP.format(scripts=hashes)}
    scripts = {"Content-Security-Policy": _OHIF_CSP.format(scripts="'unsafe-eval'")}

    @app.get("/ohif/{path:path}", include_in_schema=False)
    def ohif(path: str) -> Response:
        parts = [part for part in path.split("/") if part]
        if any(part in (".", "..") for part in parts):
            return Response("not found", status_code=404, media_type="text/plain")
        target = root.joinpath(*parts)
        if target.is_file() and target != index:
            return FileResponse(target, headers=scripts if target.suffix == ".js" else page)
        if parts and "." in parts[-1] and target != index:
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(index, headers=page)


def create_health_app(archive: Archive) -> FastAPI:
    """Only /healthz, /readyz and /metrics, for a node that runs `arkiv dicom` alone: its load
    balancer and monitoring need to know whether it can keep what modalities send, and nothing
    else may be served there (no patient data, no sign-in)."""
    app = FastAPI(title="arkiv node health", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.archive = archive
    app.state.metrics = registry_for(archive)
    app.include_router(health.router)
    return app
