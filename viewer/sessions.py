"""Browser sessions: the cookie that carries them and the CSRF token that guards their forms.

The cookie holds a random token (the server keeps only its hash), is `__Host-` prefixed with
Secure, HttpOnly and SameSite=Strict, and is replaced at every sign-in. Forms carry the session's
CSRF token; the login form, which has no session yet, uses a signed double-submit cookie.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request, Response

from arkiv.accounts import Principal
from arkiv.config import Settings
from arkiv.services import Archive


def host_cookie_name(settings: Settings, name: str) -> str:
    """`__Host-` prefixed (Secure, this host only, path /) unless secure cookies are off."""
    return f"__Host-{name}" if settings.secure_cookies else name


def session_cookie_name(settings: Settings) -> str:
    return host_cookie_name(settings, "arkiv_session")


def login_cookie_name(settings: Settings) -> str:
    return host_cookie_name(settings, "arkiv_login")


def _set_strict_cookie(
    response: Response, settings: Settings, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        max_age=max_age,
        path="/",
    )


def start_session(
    request: Request, response: Response, archive: Archive, principal: Principal
) -> None:
    """Open a new server-side session for a signed-in principal and set its cookie.

    Any session cookie the browser brought is ended first: a new id at every sign-in.
    """
    settings = archive.settings
    old = request.cookies.get(session_cookie_name(settings))
    if old:
        archive.accounts.end_session(old)
    token = archive.accounts.open_session(principal)
    max_age = int(settings.session_hours * 3600)
    _set_strict_cookie(response, settings, session_cookie_name(settings), token, max_age)
    response.delete_cookie(login_cookie_name(settings), path="/", secure=settings.secure_cookies)


def end_session_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        session_cookie_name(settings),
        path="/",
        secure=settings.secure_cookies,
        httponly=True,
        samesite="strict",
    )


def login_csrf_token(request: Request, settings: Settings) -> str:
    """The token the login form carries: the one in the browser's login cookie, or a new one."""
    return request.cookies.get(login_cookie_name(settings)) or secrets.token_urlsafe(32)


def set_login_cookie(response: Response, settings: Settings, token: str) -> None:
    """The cookie half of the login form's double-submit token."""
    _set_strict_cookie(response, settings, login_cookie_name(settings), token, 3600)


def login_csrf_ok(request: Request, settings: Settings, submitted: str) -> bool:
    expected = request.cookies.get(login_cookie_name(settings), "")
    return bool(expected) and hmac.compare_digest(expected, submitted)
