"""Break the glass over the API: the reason templates, and taking a grant for one patient."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body

from viewer.dependencies import ArchiveDep, PrincipalDep

router = APIRouter(prefix="/api/break-glass")


@router.get("/reasons")
def reasons(archive: ArchiveDep, principal: PrincipalDep) -> dict[str, str]:
    return archive.break_glass.reasons()


@router.get("/grants")
def grants(archive: ArchiveDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    return [asdict(g) for g in archive.break_glass.active_grants(principal)]


@router.post("", status_code=201)
def take_grant(
    archive: ArchiveDep,
    principal: PrincipalDep,
    patient_id: Annotated[str, Body(embed=True, min_length=1, max_length=64)],
    reason: Annotated[str, Body(embed=True, min_length=1, max_length=32)],
    free_text: Annotated[str, Body(embed=True, max_length=500)] = "",
) -> dict[str, Any]:
    grant = archive.break_glass.grant(principal, patient_id.strip(), reason, free_text)
    return asdict(grant)
