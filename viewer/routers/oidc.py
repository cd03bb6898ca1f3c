"""Sign-in through OpenID Connect (HelseID): the two browser legs of `arkiv.oidc`.

`GET /auth/oidc/login` starts a sign-in and sends the browser to the provider; the pending login
(state, nonce, PKCE verifier) goes with it in a sealed cookie. `GET /auth/oidc/callback` is where
the provider sends the browser back: the answer is checked, the person linked to their account,
and a session opened. Any failure ends on the login page (or a JSON reason) with no session.

The pending-login cookie is SameSite=Lax, because the browser returns from the provider by a
cross-site top-level navigation and a Strict cookie would not come along. The session cookie the
callback sets stays Strict; for the same reason it is not sent with any request that is still
part of that cross-site navigation, so the callback answers with a page that moves on to the
home page itself (a same-site navigation) instead of a redirect, which would arrive without it.
"""

from __future__ import annotations

import html
import threading

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from arkiv.config import Settings
from arkiv.errors import Forbidden, NotFound
from arkiv.oidc import (
    PENDING_SECONDS,
    OidcClient,
    OidcError,
    OidcLoginExpired,
    OidcUnavailable,
    record_failure,
)
from viewer.dependencies import ArchiveDep, client_address
from viewer.routers.auth import home_of
from viewer.sessions import host_cookie_name, login_csrf_token, set_login_cookie, start_session
from viewer.templating import templates

router = APIRouter(prefix="/auth/oidc")

_client_lock = threading.Lock()


def pending_cookie_name(settings: Settings) -> str:
    return host_cookie_name(settings, "arkiv_oidc")


def _require_enabled(settings: Settings) -> None:
    if not settings.oidc_enabled:
        raise NotFound("sign-in with OpenID Connect is not configured")


def _client(request: Request) -> OidcClient:
    """The app's OIDC client, made on first use (discovery happens then, not at start-up, so an
    unreachable provider never keeps the archive from starting)."""
    settings: Settings = request.app.state.archive.settings
    with _client_lock:
        client: OidcClient | None = getattr(request.app.state, "oidc_client", None)
        if client is None:
            client = OidcClient(settings)
            request.app.state.oidc_client = client
    return client


@router.get("/login")
def login(request: Request, archive: ArchiveDep) -> Response:
    """Start a sign-in: push the request to the provider and send the browser there."""
    settings = archive.settings
    _require_enabled(settings)
    try:
        client = _client(request)
        url, pending = client.start()
    except OidcError as exc:
        return _failure(request, settings, exc)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        pending_cookie_name(settings),
        client.seal(pending),
        max_age=PENDING_SECONDS,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        path="/",
    )
    return response


@router.get("/callback")
def callback(request: Request, archive: ArchiveDep) -> Response:
    """The provider's answer: validate it, find the account, open a session."""
    settings = archive.settings
    _require_enabled(settings)
    address = client_address(request)
    sealed = request.cookies.get(pending_cookie_name(settings))
    if not sealed:
        # Nothing was started in this browser: no sign-in attempt to audit.
        return _failure(
            request,
            settings,
            OidcLoginExpired(
                "no sign-in is in progress in this browser (it expired, or cookies are "
                "blocked); start the sign-in again"
            ),
        )
    try:
        client = _client(request)
        pending = client.unseal(sealed)
        identity = client.finish(pending, dict(request.query_params))
    except OidcError as exc:
        record_failure(archive.audit, settings, address, exc)
        return _failure(request, settings, exc)
    try:
        principal = archive.accounts.authenticate_external(
            identity.hpr_number, identity.pid, address, identity.audit_details()
        )
    except Forbidden as exc:  # audited by authenticate_external
        return _failure(request, settings, exc)
    target = home_of(principal.role)
    response = _continue_page(target)
    start_session(request, response, archive, principal)
    _forget_pending(response, settings)
    return response


def _continue_page(target: str) -> Response:
    """A page that navigates on by itself: the navigation starts on the archive's own page, so
    the browser sends the new SameSite=Strict session cookie with it."""
    href = html.escape(target, quote=True)
    body = (
        '<!doctype html><html lang="nb"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={href}">'
        "<title>Innlogget – arkiv</title></head>"
        f'<body><p>Du er logget inn. <a href="{href}">Fortsett</a></p></body></html>'
    )
    return HTMLResponse(body, status_code=200)


def _status(exc: Exception) -> int:
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, OidcLoginExpired):
        return 400
    if isinstance(exc, OidcUnavailable):
        return 503
    return 401


def _failure(request: Request, settings: Settings, exc: Exception) -> Response:
    """The login page with the reason (browsers) or `{"reason": …}` (other clients); the pending
    login is dropped either way, so a failed answer cannot be retried with it."""
    status = _status(exc)
    reason = f"Innlogging med HelseID mislyktes: {exc}"
    response: Response
    if "text/html" in request.headers.get("accept", ""):
        token = login_csrf_token(request, settings)
        response = templates.TemplateResponse(
            request,
            "login.html",
            {"error": reason, "login_csrf": token, "oidc_enabled": settings.oidc_enabled},
            status_code=status,
        )
        set_login_cookie(response, settings, token)
    else:
        response = JSONResponse({"reason": str(exc)}, status_code=status)
    _forget_pending(response, settings)
    return response


def _forget_pending(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        pending_cookie_name(settings),
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
    )
