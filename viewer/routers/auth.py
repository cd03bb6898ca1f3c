"""Sign-in and sign-out for browsers: a form, a server-side session, an HttpOnly cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from arkiv.errors import AuthenticationFailed, TooManyAttempts
from viewer.dependencies import SESSION_COOKIE, ArchiveDep, PrincipalDep, client_address
from viewer.templating import templates

router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return templates.TemplateResponse(request, "login.html", {"error": ""})


@router.post("/login")
def login(
    request: Request,
    archive: ArchiveDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
) -> Response:
    try:
        principal = archive.accounts.authenticate(username, password, client_address(request))
    except TooManyAttempts as exc:
        return templates.TemplateResponse(
            request,
            "login.html",
            {"error": str(exc)},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
        )
    except AuthenticationFailed:
        return templates.TemplateResponse(
            request, "login.html", {"error": "Feil brukernavn eller passord."}, status_code=401
        )
    token = archive.accounts.open_session(principal)
    target = "/audit" if principal.role.value == "auditor" else "/"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=int(archive.settings.session_hours * 3600),
        path="/",
    )
    return response


@router.post("/logout")
def logout(request: Request, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        archive.accounts.close_session(token, principal)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
