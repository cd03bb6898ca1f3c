"""Request dependencies: the archive, the caller's address and the signed-in principal.

Browsers carry a session cookie; API clients use HTTP Basic. Both end in the same `Principal`,
so every route authorizes and audits the same way.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import Depends, Request

from arkiv.accounts import Principal
from arkiv.errors import AuthenticationFailed
from arkiv.services import Archive

SESSION_COOKIE = "arkiv_session"


class NotSignedIn(AuthenticationFailed):
    """No session and no credentials: browsers are sent to the login page, APIs get 401."""


def get_archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def get_principal(request: Request, archive: Annotated[Archive, Depends(get_archive)]) -> Principal:
    address = client_address(request)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        principal = archive.accounts.session_principal(token, address)
        if principal is not None:
            return principal
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
    raise NotSignedIn("sign in first")


ArchiveDep = Annotated[Archive, Depends(get_archive)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
