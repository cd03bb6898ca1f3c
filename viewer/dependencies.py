"""Request dependencies: the archive, the caller's address, the signed-in principal, CSRF.

Browsers carry a session cookie; API clients use HTTP Basic. Both end in the same `Principal`,
so every route authorizes and audits the same way. Requests that change something and ride on a
session cookie must also carry that session's CSRF token (form field or `X-CSRF-Token` header)
and, when the browser names an origin, come from this origin.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Annotated

from fastapi import Depends, Request

from arkiv.accounts import Principal, SessionState
from arkiv.errors import AuthenticationFailed, Forbidden
from arkiv.services import Archive
from viewer.sessions import session_cookie_name

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class NotSignedIn(AuthenticationFailed):
    """No session and no credentials: browsers are sent to the login page, APIs get 401."""


class CsrfRejected(Forbidden):
    """A cookie-authenticated request that changes something came without its form token."""


def get_archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def session_state(request: Request, archive: Archive) -> SessionState | None:
    """The live session behind the request's cookie, looked up once per request."""
    if hasattr(request.state, "session"):
        cached: SessionState | None = request.state.session
        return cached
    token = request.cookies.get(session_cookie_name(archive.settings))
    state = archive.accounts.session(token, client_address(request)) if token else None
    request.state.session = state
    return state


def get_principal(request: Request, archive: Annotated[Archive, Depends(get_archive)]) -> Principal:
    address = client_address(request)
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise AuthenticationFailed("malformed Basic credentials") from exc
        username, sep, password = decoded.partition(":")
        if not sep:
            raise AuthenticationFailed("malformed Basic credentials")
        return archive.accounts.authenticate_basic(username, password, address)
    state = session_state(request, archive)
    if state is not None:
        return state.principal
    raise NotSignedIn("sign in first")


async def csrf_guard(request: Request) -> None:
    """Refuse cross-site and token-less changes made with a session cookie.

    Requests with Basic credentials carry no ambient authority a foreign page could borrow, so
    they pass; so do safe methods. The login form has its own double-submit check.
    """
    if request.method not in _UNSAFE or request.url.path == "/login":
        return
    if request.headers.get("authorization"):
        return
    archive = get_archive(request)
    origin = request.headers.get("origin")
    if origin and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise CsrfRejected("cross-site request refused")
    state = session_state(request, archive)
    if state is None:
        return  # not signed in: the route's own authentication answers
    submitted = request.headers.get(CSRF_HEADER, "")
    if not submitted and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        submitted = value if isinstance(value, str) else ""
    if not submitted or not hmac.compare_digest(submitted, state.csrf_token):
        raise CsrfRejected("the form is missing its security token or it has expired; reload")


def csrf_token(request: Request) -> str:
    """The token a page puts into its forms (empty when there is no session)."""
    state: SessionState | None = getattr(request.state, "session", None)
    return state.csrf_token if state else ""


ArchiveDep = Annotated[Archive, Depends(get_archive)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
