"""Administration for the admin role: accounts and the configured DICOM peers.

Administrators see who may use the archive, never what it holds: no route here reads patient data.
Every change is an audit event.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from arkiv.accounts import Role
from arkiv.audit import Event, EventType
from arkiv.authorization import require_admin
from arkiv.counties import parse_county
from arkiv.errors import InvalidQuery
from storage.records import UserAccount
from viewer.dependencies import ArchiveDep, PrincipalDep
from viewer.templating import templates

router = APIRouter()


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    role: Role
    county: str = Field(max_length=16)
    password: str | None = Field(default=None, max_length=1024)
    display_name: str = Field(default="", max_length=128)
    hpr_number: str | None = Field(default=None, max_length=16)
    scopes: list[str] = Field(default_factory=list)


def _public(user: UserAccount) -> dict[str, Any]:
    return {
        "username": user.username,
        "role": user.role,
        "county": user.county,
        "display_name": user.display_name,
        "hpr_number": user.hpr_number,
        "scopes": list(user.scopes),
        "disabled": user.disabled,
        "locked_until": user.locked_until,
        "oidc_only": user.password_hash == "!",
    }


@router.get("/api/admin/users")
def list_users(archive: ArchiveDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    require_admin(principal)
    return [_public(u) for u in archive.index.list_users()]


@router.post("/api/admin/users", status_code=201)
def add_user(
    archive: ArchiveDep, principal: PrincipalDep, user: Annotated[NewUser, Body()]
) -> dict[str, Any]:
    require_admin(principal)
    try:
        archive.accounts.add_user(
            user.username,
            user.password,
            user.role,
            parse_county(user.county),
            display_name=user.display_name,
            hpr_number=user.hpr_number,
            scopes=frozenset(user.scopes),
        )
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None
    archive.audit.record(
        Event(
            EventType.SECURITY_ALERT,
            "C",
            principal.actor(),
            details={
                "subtype": "user created",
                "user": user.username,
                "role": user.role.value,
                "county": user.county,
            },
        )
    )
    created = archive.index.get_user(user.username)
    assert created is not None
    return _public(created)


@router.post("/api/admin/users/{username}/disable")
def disable_user(archive: ArchiveDep, principal: PrincipalDep, username: str) -> dict[str, Any]:
    require_admin(principal)
    try:
        archive.accounts.disable_user(username, by=principal)
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None
    changed = archive.index.get_user(username)
    assert changed is not None
    return _public(changed)


@router.get("/api/admin/peers")
def list_peers(archive: ArchiveDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    require_admin(principal)
    return [
        {
            "ae_title": p.ae_title,
            "county": p.county.value,
            "host": p.host,
            "port": p.port,
            "services": sorted(p.services),
        }
        for p in archive.settings.peers
    ]


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    require_admin(principal)
    return templates.TemplateResponse(
        request,
        "admin.html",
        {
            "user": principal,
            "users": [_public(u) for u in archive.index.list_users()],
            "peers": archive.settings.peers,
            "require_known": archive.settings.dicom_require_known_peers,
        },
    )
