"""Who may do what: the one place that turns a role, a county and grants into permissions.

Every service asks here before it reads; adapters never decide on their own. A clinician reads the
patients their county owns plus those they hold a break-the-glass grant for; a service account
reads its county within its scopes; auditors read the audit log (their county, or all counties
for the joint auditor); an administrator manages accounts and sees no images.
"""

from __future__ import annotations

from arkiv.accounts import Principal, Role
from arkiv.counties import parse_county
from arkiv.errors import Forbidden, InvalidQuery


def require_image_search(principal: Principal) -> None:
    """Searching patients and studies (QIDO-RS, the patient search page)."""
    _require_clinician_or_scope(principal, "search", "search for patients")


def require_image_read(principal: Principal) -> None:
    """Reading images and their metadata (WADO-RS, thumbnails, the viewer)."""
    _require_clinician_or_scope(principal, "retrieve", "read images")


def require_store(principal: Principal) -> None:
    """Storing objects over HTTP (STOW-RS, photo upload)."""
    _require_clinician_or_scope(principal, "store", "store objects")


def _require_clinician_or_scope(principal: Principal, scope: str, what: str) -> None:
    """Clinicians may do all three; a service account what its scopes name."""
    if principal.role is Role.CLINICIAN:
        return
    if principal.role is Role.SERVICE and scope in principal.scopes:
        return
    raise Forbidden(_refusal(principal, what))


def require_break_glass(principal: Principal) -> None:
    """Only a clinician, signed in as a person, may take access to another county's patient."""
    if principal.role is not Role.CLINICIAN:
        raise Forbidden(_refusal(principal, "take extended access (break the glass)"))


def audit_scope(principal: Principal, requested: str | None) -> str | None:
    """The county whose audit events this principal may read; None means all counties.

    A county auditor always gets their own county, whatever they asked for; asking for another
    county is refused so that a mistake is visible rather than silently narrowed.
    """
    if requested:
        try:
            requested = parse_county(requested).value
        except ValueError as exc:
            raise InvalidQuery(str(exc)) from None
    if principal.role is Role.JOINT_AUDITOR:
        return requested or None
    if principal.role is Role.AUDITOR:
        if requested and requested != principal.county.value:
            raise Forbidden(
                f"auditors of {principal.county.value} read only their own county's audit log"
            )
        return principal.county.value
    raise Forbidden(_refusal(principal, "read the audit log"))


def require_admin(principal: Principal) -> None:
    if principal.role is not Role.ADMIN:
        raise Forbidden(_refusal(principal, "manage users and configuration"))


def _refusal(principal: Principal, what: str) -> str:
    if principal.role is Role.SERVICE:
        return f"this service account's scopes do not allow it to {what}"
    return f"the {principal.role.value} role may not {what}"
