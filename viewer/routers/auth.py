"""Sign-in and sign-out for browsers: a form, a server-side session, a `__Host-` cookie.

The login form is guarded by a double-submit token (there is no session yet to tie it to);
a successful sign-in always gets a new session id, and signing out ends the session on the server.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from arkiv.accounts import Role
from arkiv.errors import AuthenticationFailed, TooManyAttempts
from viewer.dependencies import ArchiveDep, PrincipalDep, client_address, csrf_token
from viewer.sessions import (
    end_session_cookie,
    login_csrf_ok,
    login_csrf_token,
    session_cookie_name,
    set_login_cookie,
    start_session,
)
from viewer.templating import templates

router = APIRouter()

_HOME = {
    Role.CLINICIAN: "/",
    Role.AUDITOR: "/audit",
    Role.JOINT_AUDITOR: "/audit",
    Role.ADMIN: "/admin",
    Role.SERVICE: "/",
}


def home_of(role: Role) -> str:
    return _HOME.get(role, "/")


def _login_page(
    request: Request,
    archive: ArchiveDep,
    error: str = "",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    token = login_csrf_token(request, archive.settings)
    response = templates.TemplateResponse(
        request,
        "login.html",
        {"error": error, "login_csrf": token},
        status_code=status_code,
        headers=headers,
    )
    set_login_cookie(response, archive.settings, token)
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, archive: ArchiveDep) -> Response:
    return _login_page(request, archive)


@router.post("/login")
def login(
    request: Request,
    archive: ArchiveDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    if not login_csrf_ok(request, archive.settings, csrf_token):
        return _login_page(request, archive, "Skjemaet var utløpt. Prøv igjen.", status_code=403)
    try:
        principal = archive.accounts.authenticate(username, password, client_address(request))
    except TooManyAttempts as exc:
        return _login_page(
            request, archive, str(exc), 429, headers={"Retry-After": str(exc.retry_after)}
        )
    except AuthenticationFailed:
        return _login_page(request, archive, "Feil brukernavn eller passord.", 401)
    response = RedirectResponse(home_of(principal.role), status_code=303)
    start_session(request, response, archive, principal)
    return response


@router.post("/logout")
def logout(request: Request, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    token = request.cookies.get(session_cookie_name(archive.settings))
    if token:
        archive.accounts.close_session(token, principal)
    response = RedirectResponse("/login", status_code=303)
    end_session_cookie(response, archive.settings)
    response.headers["Clear-Site-Data"] = '"cache", "storage"'
    return response


@router.get("/api/session")
def current_session(request: Request, principal: PrincipalDep) -> dict[str, object]:
    """Who is signed in, and the CSRF token scripts send as `X-CSRF-Token` with changes."""
    return {
        "username": principal.username,
        "role": principal.role.value,
        "county": principal.county.value,
        "auth_method": principal.auth_method,
        "csrf_token": csrf_token(request),
    }
