"""The access path for photos and video: authorize, audit, then read (DESIGN: the access path).

A photo belongs to the county whose clinic took it. A clinician sees their own county's photos
of a patient, and every county's once they hold a break-the-glass grant for that patient, just as
with X-rays. Each read is audited before any byte is returned. Thumbnails come by the dozen when
a gallery opens and a video player asks for many ranges while it plays, so those reads are
grouped like frame reads (`arkiv.access.AccessGroups`): the first in a window is recorded.
"""

from __future__ import annotations

import logging
from typing import Any

from arkiv.access import AccessGroups, integrity_alert, reach, read_verified
from arkiv.accounts import Principal, Role
from arkiv.audit import AuditLog, Event, EventType, Outcome
from arkiv.authorization import require_image_read
from arkiv.break_glass import BreakGlassService
from arkiv.errors import ArchiveUnavailable, BreakGlassRequired, NotFound
from storage.blobs import BlobStore
from storage.errors import StorageError
from storage.index import Index
from storage.records import BlobRef, PatientRecord, PhotoQuery, PhotoRecord

log = logging.getLogger(__name__)

GROUPED = frozenset({"thumbnail", "web", "video"})
"""Reads that come in bursts; "original" (a download) and "compare" are each recorded."""


class PhotoAccess:
    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        audit: AuditLog,
        break_glass: BreakGlassService,
        groups: AccessGroups,
    ) -> None:
        self._index = index
        self._blobs = blobs
        self._audit = audit
        self._break_glass = break_glass
        self._groups = groups

    def patient_in_reach(self, principal: Principal, patient: PatientRecord) -> None:
        """Raise unless the principal's county holds data of this patient or they hold a grant.

        A clinician is told which counties hold the patient, so that they can break the glass;
        anyone else is told only that there is no such patient."""
        if patient.patient_id in self._break_glass.granted_patient_ids(principal):
            return
        counties = self._index.photos.patient_counties(patient.pk)
        if principal.county.value in counties:
            return
        if principal.role is Role.CLINICIAN and counties:
            raise BreakGlassRequired(
                "this patient's records belong to another county; take extended access "
                "(break the glass) with a reason first",
                tuple(sorted(counties)),
                patient.pk,
            )
        raise NotFound("no such patient")

    def gallery(
        self,
        principal: Principal,
        patient_pk: int,
        category: str | None = None,
        tooth: int | None = None,
    ) -> tuple[PatientRecord, list[PhotoRecord]]:
        """A patient's photos the principal may see, audited as one query."""
        require_image_read(principal)
        patient = self._index.photos.patient(patient_pk)
        if patient is None:
            raise NotFound("no such patient")
        self.patient_in_reach(principal, patient)
        granted = self._break_glass.granted_patient_ids(principal)
        found = self._index.photos.find(
            PhotoQuery(
                patient_pk=patient_pk,
                county=principal.county.value,
                granted_patient_ids=granted,
                category=category,
                tooth=tooth,
            )
        )
        counties = {p.county for p in found} | {principal.county.value}
        self._audit.record(
            Event(
                EventType.QUERY,
                "E",
                principal.actor(),
                patient_ids=(patient.patient_id,),
                object_count=len(found),
                query=f"photo gallery category={category or '*'} tooth={tooth or '*'}",
                counties=tuple(sorted(counties)),
                details={"level": "photos", **reach(principal, counties)},
            )
        )
        return patient, found

    def photo_for_read(self, principal: Principal, photo_id: str, purpose: str) -> PhotoRecord:
        """One photo, after its read is audited (grouped for thumbnails, renditions, video)."""
        require_image_read(principal)
        photo = self._index.photos.get(photo_id) if _is_photo_id(photo_id) else None
        if photo is not None and not self._visible(principal, photo):
            photo = None
        details: dict[str, Any] = {"purpose": f"photo {purpose}", "photo_id": photo_id}
        transfer = purpose == "original"
        event_type = EventType.INSTANCES_TRANSFERRED if transfer else EventType.INSTANCES_ACCESSED
        if photo is None:
            self._audit.record(
                Event(
                    event_type,
                    "R",
                    principal.actor(),
                    outcome=Outcome.MINOR_FAILURE,
                    outcome_description="no such photo for this user",
                    details=details,
                )
            )
            raise NotFound("no such photo")
        group: tuple[str, ...] | None = None
        if purpose in GROUPED:
            scope = str(photo.patient_pk) if purpose == "thumbnail" else photo.photo_id
            group = (principal.username, principal.address, f"photo {purpose}", scope)
            if not self._groups.first_in_window(group):
                return photo
            details["grouped_seconds"] = int(self._groups.window_seconds)
        try:
            self._audit.record(
                Event(
                    event_type,
                    "R",
                    principal.actor(),
                    patient_ids=(photo.patient_id,),
                    study_uids=(photo.facts.study_uid,),
                    object_count=1,
                    counties=(photo.county,),
                    details={**details, **reach(principal, {photo.county})},
                )
            )
        except Exception:
            if group is not None:
                self._groups.forget(group)
            raise
        return photo

    def read(self, principal: Principal, photo: PhotoRecord, role: str) -> bytes:
        """A stored rendition, whole, checked against the SHA-256 taken at upload."""
        blob = self._blob(photo, role)
        return read_verified(
            self._blobs,
            blob,
            f"photo {photo.photo_id}",
            "photo rendition",
            lambda what: self._alert(principal, photo, blob, what),
        )

    def read_range(self, photo: PhotoRecord, role: str, start: int, length: int) -> bytes:
        """Part of a stored rendition (a video seek). A part cannot be checked against the whole
        file's SHA-256; `arkiv fsck --scrub` checks the stored bytes at rest instead."""
        blob = self._blob(photo, role)
        try:
            return self._blobs.read_range(blob.key, start, length)
        except StorageError as exc:
            raise ArchiveUnavailable(f"cannot read photo {photo.photo_id}: {exc}") from exc

    def _visible(self, principal: Principal, photo: PhotoRecord) -> bool:
        return (
            photo.county == principal.county.value
            or photo.patient_id in self._break_glass.granted_patient_ids(principal)
        )

    @staticmethod
    def _blob(photo: PhotoRecord, role: str) -> BlobRef:
        blob = photo.blobs.get(role)
        if blob is None:
            raise NotFound(f"photo {photo.photo_id} has no {role}")
        return blob

    def _alert(self, principal: Principal, photo: PhotoRecord, blob: BlobRef, what: str) -> None:
        log.error("integrity: photo %s: %s (%s)", photo.photo_id, what, blob.key)
        integrity_alert(
            self._audit,
            principal,
            what,
            patient_id=photo.patient_id,
            county=photo.county,
            study_uids=(),
            details={"photo_id": photo.photo_id, "blob_key": blob.key},
        )


def _is_photo_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)
