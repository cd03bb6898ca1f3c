"""How the services' typed errors become HTTP answers: a status and a JSON `reason`."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response

from arkiv.errors import (
    ArchiveUnavailable,
    ArkivError,
    AuditUnavailable,
    AuthenticationFailed,
    BreakGlassRequired,
    Forbidden,
    InvalidObject,
    InvalidQuery,
    NotFound,
    TooManyAttempts,
    UnsupportedObject,
)
from arkiv.photos import MediaTooLarge, UnknownPatient
from arkiv.rendering import FrameOutOfRange, ImageTooLarge, NotAnImage, RenderError
from arkiv.sandbox import PhotoRefused
from storage.errors import StorageError
from viewer.dependencies import NotSignedIn

_STATUS: list[tuple[type[Exception], int]] = [
    (TooManyAttempts, 429),
    (AuthenticationFailed, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (MediaTooLarge, 413),
    (UnknownPatient, 422),
    (PhotoRefused, 422),
    (InvalidQuery, 400),
    (InvalidObject, 400),
    (UnsupportedObject, 415),
    (AuditUnavailable, 503),
    (ArchiveUnavailable, 503),
    (FrameOutOfRange, 404),
    (ImageTooLarge, 422),
    (NotAnImage, 406),
    (RenderError, 406),
    (StorageError, 503),
]


def wants_html(request: Request) -> bool:
    """A browser navigating to a page (not a script or client calling an API)."""
    return "text/html" in request.headers.get("accept", "") and not request.url.path.startswith(
        ("/dicom-web", "/api", "/wado")
    )


def status_for(exc: Exception) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def install(app: FastAPI) -> None:
    async def handle(request: Request, exc: Exception) -> Response:
        if isinstance(exc, NotSignedIn) and wants_html(request):
            return RedirectResponse("/login", status_code=303)
        status = status_for(exc)
        headers: dict[str, str] = {"Cache-Control": "no-store"}
        if isinstance(exc, TooManyAttempts):
            headers["Retry-After"] = str(exc.retry_after)
        elif status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="arkiv", charset="UTF-8"'
        body: dict[str, object] = {"reason": str(exc)}
        if isinstance(exc, BreakGlassRequired):  # what a client needs to offer break the glass
            body["break_glass"] = {"counties": list(exc.counties)}
        return JSONResponse(body, status_code=status, headers=headers)

    async def handle_validation(request: Request, exc: Exception) -> Response:
        """Parameters FastAPI could not parse: the archive's own 400 with a readable reason."""
        problems = exc.errors() if isinstance(exc, RequestValidationError) else []
        parts = []
        for problem in problems[:5]:
            where = ".".join(str(p) for p in problem.get("loc", ()) if p not in ("query", "path"))
            parts.append(f"{where}: {problem.get('msg', 'invalid')}")
        reason = "; ".join(parts) or "invalid request"
        return JSONResponse(
            {"reason": reason}, status_code=400, headers={"Cache-Control": "no-store"}
        )

    app.add_exception_handler(RequestValidationError, handle_validation)
    app.add_exception_handler(ArkivError, handle)
    app.add_exception_handler(RenderError, handle)
    app.add_exception_handler(StorageError, handle)
