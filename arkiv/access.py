"""The access path: authorize, then audit, then read (DESIGN: the access path).

Every read of patient data goes through here, whatever adapter asked: the audit event is
committed before any byte is returned, and if it cannot be written the read does not happen.
A clinician sees the studies their own county owns; other roles read no images.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from io import BytesIO

from arkiv.accounts import Principal, Role
from arkiv.audit import AuditLog, Event, EventType, Outcome
from arkiv.errors import ArchiveUnavailable, Forbidden, NotFound
from arkiv.rendering import RenderRequest, render
from storage.blobs import BlobStore
from storage.errors import BlobNotFound, StorageError
from storage.index import Index
from storage.records import (
    AuditEvent,
    AuditQuery,
    SeriesSummary,
    StoredInstance,
    StudyQuery,
    StudySummary,
)

log = logging.getLogger(__name__)

_MAX_PATIENTS_PER_EVENT = 200


class IntegrityError(ArchiveUnavailable):
    """Stored bytes no longer match the SHA-256 recorded at ingest."""


class AccessService:
    def __init__(self, index: Index, blobs: BlobStore, audit: AuditLog) -> None:
        self._index = index
        self._blobs = blobs
        self._audit = audit

    # -- authorization ---------------------------------------------------------------------------

    @staticmethod
    def _scoped(principal: Principal, query: StudyQuery) -> StudyQuery:
        """Restrict a query to what the principal may see; refuse roles that read no images."""
        if principal.role is not Role.CLINICIAN:
            raise Forbidden(f"the {principal.role.value} role does not give access to images")
        return replace(query, county=principal.county.value)

    # -- searches --------------------------------------------------------------------------------

    def search_studies(
        self, principal: Principal, query: StudyQuery, query_text: str
    ) -> list[StudySummary]:
        results = self._index.find_studies(self._scoped(principal, query))
        self._audit_query(principal, query_text, [s.patient_id for s in results], "studies")
        return results

    def search_series(
        self, principal: Principal, query: StudyQuery, query_text: str
    ) -> list[SeriesSummary]:
        results = self._index.find_series(self._scoped(principal, query))
        self._audit_query(principal, query_text, [s.patient_id for s in results], "series")
        return results

    def search_instances(
        self, principal: Principal, query: StudyQuery, query_text: str
    ) -> list[StoredInstance]:
        results = self._index.find_instances(self._scoped(principal, query))
        self._audit_query(principal, query_text, [i.patient_id for i in results], "instances")
        return results

    def _audit_query(
        self, principal: Principal, query_text: str, patient_ids: list[str], level: str
    ) -> None:
        distinct = sorted(set(patient_ids))
        self._audit.record(
            Event(
                EventType.QUERY,
                "E",
                principal.actor(),
                patient_ids=tuple(distinct[:_MAX_PATIENTS_PER_EVENT]),
                object_count=len(patient_ids),
                query=query_text,
                details={"level": level, "patients_in_result": len(distinct)},
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
        query = StudyQuery(
            study_uids=(study_uid,),
            series_uids=(series_uid,) if series_uid else (),
            sop_uids=(sop_uid,) if sop_uid else (),
            limit=100_000,
        )
        found = self._index.find_instances(self._scoped(principal, query))
        event_type = EventType.INSTANCES_TRANSFERRED if transfer else EventType.INSTANCES_ACCESSED
        details = {"purpose": purpose, "series_uid": series_uid or "", "sop_uid": sop_uid or ""}
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
        self._audit.record(
            Event(
                event_type,
                "R",
                principal.actor(),
                patient_ids=tuple(sorted({i.patient_id for i in found})),
                study_uids=tuple(sorted({i.study_uid for i in found})),
                object_count=len(found),
                details=details,
            )
        )
        return found

    def read_bytes(self, principal: Principal, instance: StoredInstance) -> bytes:
        """The stored object, whole, after checking it against the SHA-256 taken at ingest."""
        try:
            data = self._blobs.read(instance.blob.key)
        except BlobNotFound as exc:
            self._alert(principal, instance, "stored object is missing from the blob store")
            raise IntegrityError(f"instance {instance.sop_uid} is missing from storage") from exc
        except StorageError as exc:
            raise ArchiveUnavailable(f"cannot read instance {instance.sop_uid}: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != instance.blob.sha256:
            self._alert(principal, instance, "stored object does not match its SHA-256")
            raise IntegrityError(
                f"instance {instance.sop_uid} failed its integrity check and was not served"
            )
        return data

    def render(
        self, principal: Principal, instance: StoredInstance, request: RenderRequest
    ) -> bytes:
        return render(BytesIO(self.read_bytes(principal, instance)), request)

    def _alert(self, principal: Principal, instance: StoredInstance, what: str) -> None:
        log.error("integrity: %s: %s (%s)", instance.sop_uid, what, instance.blob.key)
        self._audit.record(
            Event(
                EventType.SECURITY_ALERT,
                "E",
                principal.actor(),
                outcome=Outcome.SERIOUS_FAILURE,
                outcome_description=what,
                patient_ids=(instance.patient_id,),
                study_uids=(instance.study_uid,),
                object_count=1,
                details={"sop_uid": instance.sop_uid, "blob_key": instance.blob.key},
            )
        )

    # -- the audit log itself --------------------------------------------------------------------

    def audit_events(
        self, principal: Principal, query: AuditQuery, query_text: str
    ) -> list[AuditEvent]:
        """Auditors read their county's log; reading it is itself an audit event."""
        if principal.role is not Role.AUDITOR:
            raise Forbidden("only auditors may read the audit log")
        scoped = replace(query, county=principal.county.value)
        self._audit.record(
            Event(
                EventType.AUDIT_LOG_USED,
                "R",
                principal.actor(),
                patient_ids=(query.patient_id,) if query.patient_id else (),
                query=query_text,
            )
        )
        return self._index.find_audit_events(scoped)
