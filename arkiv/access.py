"""The access path: authorize, then audit, then read (DESIGN: the access path).

Every read of patient data goes through here, whatever adapter asked: the audit event is
committed before any byte is returned, and if it cannot be written the read does not happen.
What a principal may see is decided in `arkiv.authorization` and by their break-the-glass grants:
their county's studies, plus every study of a patient they hold a grant for. Each event names the
counties owning the data, so those counties' auditors see it.

Frames, thumbnails and rendered images come in bursts (a viewer scrolling a series): the first such
read of a series by a user in a window of `audit_group_seconds` is recorded, later ones in that
window are covered by it. The fact of access is never lost, only its repetition.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from io import BytesIO
from typing import Any

from arkiv.accounts import Principal
from arkiv.audit import AuditLog, Event, EventType, Outcome
from arkiv.authorization import require_image_read, require_image_search
from arkiv.break_glass import BreakGlassService
from arkiv.errors import ArchiveUnavailable, NotFound
from arkiv.rendering import RenderRequest, render
from storage.blobs import BlobStore
from storage.errors import BlobNotFound, StorageError
from storage.index import Index
from storage.records import (
    BlobRef,
    PatientSummary,
    SeriesSummary,
    StoredInstance,
    StudyQuery,
    StudySummary,
)

log = logging.getLogger(__name__)

_MAX_PATIENTS_PER_EVENT = 200


class IntegrityError(ArchiveUnavailable):
    """Stored bytes no longer match the SHA-256 recorded at ingest."""


GROUPED_PURPOSES = frozenset({"thumbnail", "rendered", "frames"})


def reach(principal: Principal, counties: Iterable[str]) -> dict[str, Any]:
    """Audit details marking data of another county, reached through a grant."""
    foreign = sorted({c for c in counties if c != principal.county.value})
    return {"break_glass": True, "foreign_counties": foreign} if foreign else {}


class AccessGroups:
    """Remembers which (user, series, purpose) reads were recorded in the current window."""

    def __init__(self, window_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._window = max(1.0, window_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, ...], int] = {}

    def first_in_window(self, key: tuple[str, ...]) -> bool:
        bucket = int(self._clock() // self._window)
        with self._lock:
            if self._seen.get(key) == bucket:
                return False
            if len(self._seen) > 50_000:
                self._seen = {k: b for k, b in self._seen.items() if b == bucket}
            self._seen[key] = bucket
            return True

    def forget(self, key: tuple[str, ...]) -> None:
        with self._lock:
            self._seen.pop(key, None)

    @property
    def window_seconds(self) -> float:
        return self._window


class AccessService:
    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        audit: AuditLog,
        break_glass: BreakGlassService,
        group_seconds: float = 60.0,
    ) -> None:
        self._index = index
        self._blobs = blobs
        self._audit = audit
        self._break_glass = break_glass
        self._groups = AccessGroups(group_seconds)

    # -- authorization ---------------------------------------------------------------------------

    def _scoped(self, principal: Principal, query: StudyQuery) -> StudyQuery:
        """Restrict a query to the principal's county and the patients they hold grants for."""
        return replace(
            query,
            county=principal.county.value,
            granted_patient_ids=self._break_glass.granted_patient_ids(principal),
        )

    _reach = staticmethod(reach)

    # -- searches --------------------------------------------------------------------------------

    def search_patients(
        self, principal: Principal, query: StudyQuery, query_text: str
    ) -> list[PatientSummary]:
        """Patients with studies the principal may see (C-FIND at the PATIENT level)."""
        require_image_search(principal)
        results = self._index.find_patients(self._scoped(principal, query))
        self._audit_query(principal, query_text, results, "patients")
        return results

    def search_studies(
        self, principal: Principal, query: StudyQuery, query_text: str
    ) -> list[StudySummary]:
        require_image_search(principal)
        results = self._index.find_studies(self._scoped(principal, query))
        self._audit_query(principal, query_text, results, "studies")
        return results

    def search_series(
        self, principal: Principal, query: StudyQuery, query_text: str
    ) -> list[SeriesSummary]:
        require_image_search(principal)
        results = self._index.find_series(self._scoped(principal, query))
        self._audit_query(principal, query_text, results, "series")
        return results

    def search_instances(
        self, principal: Principal, query: StudyQuery, query_text: str
    ) -> list[StoredInstance]:
        require_image_search(principal)
        results = self._index.find_instances(self._scoped(principal, query))
        self._audit_query(principal, query_text, results, "instances")
        return results

    def _audit_query(
        self,
        principal: Principal,
        query_text: str,
        results: (
            list[PatientSummary] | list[StudySummary] | list[SeriesSummary] | list[StoredInstance]
        ),
        level: str,
    ) -> None:
        distinct = sorted({r.patient_id for r in results})
        counties = {
            county
            for r in results
            for county in (r.counties if isinstance(r, PatientSummary) else (r.county,))
        }
        self._audit.record(
            Event(
                EventType.QUERY,
                "E",
                principal.actor(),
                patient_ids=tuple(distinct[:_MAX_PATIENTS_PER_EVENT]),
                object_count=len(results),
                query=query_text,
                counties=tuple(sorted(counties)),
                details={
                    "level": level,
                    "patients_in_result": len(distinct),
                    **self._reach(principal, counties),
                },
            )
        )

    # -- reads -----------------------------------------------------------------------------------

    def instances_for_read(
        self,
        principal: Principal,
        purpose: str,
        study_uid: str,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        transfer: bool = False,
    ) -> list[StoredInstance]:
        """Find what a read will serve and audit it; NotFound (also audited) when nothing matches.

        `purpose` names the read (metadata, retrieve, rendered, thumbnail) in the audit event;
        `transfer` marks reads that hand the objects themselves out of the archive.
        """
        require_image_read(principal)
        query = StudyQuery(
            study_uids=(study_uid,),
            series_uids=(series_uid,) if series_uid else (),
            sop_uids=(sop_uid,) if sop_uid else (),
            limit=100_000,
        )
        found = self._index.find_instances(self._scoped(principal, query))
        event_type = EventType.INSTANCES_TRANSFERRED if transfer else EventType.INSTANCES_ACCESSED
        details: dict[str, Any] = {
            "purpose": purpose,
            "series_uid": series_uid or "",
            "sop_uid": sop_uid or "",
        }
        if not found:
            self._audit.record(
                Event(
                    event_type,
                    "R",
                    principal.actor(),
                    outcome=Outcome.MINOR_FAILURE,
                    outcome_description="no such object for this user",
                    study_uids=(study_uid,),
                    details=details,
                )
            )
            raise NotFound("no such study, series or instance")
        group: tuple[str, ...] | None = None
        if purpose in GROUPED_PURPOSES:
            group = (principal.username, principal.address, purpose, study_uid, series_uid or "")
            if not self._groups.first_in_window(group):
                return found  # this series was recorded for this user in the current window
            details["grouped_seconds"] = int(self._groups.window_seconds)
        counties = {i.county for i in found}
        try:
            self._audit.record(
                Event(
                    event_type,
                    "R",
                    principal.actor(),
                    patient_ids=tuple(sorted({i.patient_id for i in found})),
                    study_uids=tuple(sorted({i.study_uid for i in found})),
                    object_count=len(found),
                    counties=tuple(sorted(counties)),
                    details={**details, **self._reach(principal, counties)},
                )
            )
        except Exception:
            if group is not None:
                self._groups.forget(group)  # not recorded, so the next read must try again
            raise
        return found

    def instances_for_transfer(
        self, principal: Principal, query: StudyQuery, destination: dict[str, Any], most: int
    ) -> list[StoredInstance]:
        """What a C-MOVE or C-GET will send, audited as a transfer to `destination` before any
        object leaves; at most `most` + 1 rows, so the caller can refuse an oversized retrieve.

        The principal's county (and grants) bound the match like any search: another county's
        instances are simply not found. An empty match is audited too (outcome minor failure).
        """
        require_image_read(principal)
        found = self._index.find_instances(self._scoped(principal, replace(query, limit=most + 1)))
        counties = {i.county for i in found}
        self._audit.record(
            Event(
                EventType.INSTANCES_TRANSFERRED,
                "R",
                principal.actor(),
                outcome=Outcome.SUCCESS if found else Outcome.MINOR_FAILURE,
                outcome_description="" if found else "nothing matched for this caller",
                patient_ids=tuple(sorted({i.patient_id for i in found}))[:_MAX_PATIENTS_PER_EVENT],
                study_uids=tuple(sorted({i.study_uid for i in found})),
                object_count=len(found),
                counties=tuple(sorted(counties)),
                details={
                    "purpose": "retrieve",
                    "destination": destination,
                    **self._reach(principal, counties),
                },
            )
        )
        return found

    def read_bytes(self, principal: Principal, instance: StoredInstance) -> bytes:
        """The stored object, whole, after checking it against the SHA-256 taken at ingest."""
        return read_verified(
            self._blobs,
            instance.blob,
            f"instance {instance.sop_uid}",
            "object",
            lambda what: self._alert(principal, instance, what),
        )

    def render(
        self, principal: Principal, instance: StoredInstance, request: RenderRequest
    ) -> bytes:
        return render(BytesIO(self.read_bytes(principal, instance)), request)

    def _alert(self, principal: Principal, instance: StoredInstance, what: str) -> None:
        log.error("integrity: %s: %s (%s)", instance.sop_uid, what, instance.blob.key)
        integrity_alert(
            self._audit,
            principal,
            what,
            patient_id=instance.patient_id,
            county=instance.county,
            study_uids=(instance.study_uid,),
            details={"sop_uid": instance.sop_uid, "blob_key": instance.blob.key},
        )


def read_verified(
    blobs: BlobStore, blob: BlobRef, subject: str, kind: str, alert: Callable[[str], None]
) -> bytes:
    """`blob`'s bytes, whole, after checking them against the SHA-256 recorded when they were
    stored. Missing or different bytes are reported through `alert` (a Security Alert) and never
    served; `subject` ("instance …", "photo …") and `kind` ("object") name them in messages."""
    try:
        data = blobs.read(blob.key)
    except BlobNotFound as exc:
        alert(f"stored {kind} is missing from the blob store")
        raise IntegrityError(f"{subject} is missing from storage") from exc
    except StorageError as exc:
        raise ArchiveUnavailable(f"cannot read {subject}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != blob.sha256:
        alert(f"stored {kind} does not match its SHA-256")
        raise IntegrityError(f"{subject} failed its integrity check and was not served")
    return data


def integrity_alert(
    audit: AuditLog,
    principal: Principal,
    what: str,
    *,
    patient_id: str,
    county: str,
    study_uids: tuple[str, ...],
    details: dict[str, Any],
) -> None:
    """The Security Alert (serious failure) recorded when stored bytes are missing or changed."""
    audit.record(
        Event(
            EventType.SECURITY_ALERT,
            "E",
            principal.actor(),
            outcome=Outcome.SERIOUS_FAILURE,
            outcome_description=what,
            patient_ids=(patient_id,),
            study_uids=study_uids,
            object_count=1,
            counties=(county,),
            details=details,
        )
    )
