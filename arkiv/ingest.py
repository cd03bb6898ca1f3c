"""The ingest path: the one way any object enters the archive (DESIGN: the ingest path).

1. validate (`arkiv.dicom_object`), 2. make the bytes durable in the blob store under a key built
from validated UIDs and the content hash, 3. index rows and the audit event in one transaction,
4. only then report success to the adapter, which acknowledges.

Same SOP Instance UID, same bytes: a success that stores nothing new. Same SOP Instance UID,
different bytes: the first object stays the instance; the second is kept too, as a conflict for
review (its own blob, a row in `instance_conflicts`, an audit event), and the sender is told it was
not accepted as the instance. Nothing is replaced and nothing is lost.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

from arkiv.audit import Actor, AuditLog, Event, EventType, Outcome
from arkiv.clock import now_iso
from arkiv.dicom_object import ParsedObject, parse_part10
from arkiv.errors import ArchiveUnavailable, AuditUnavailable
from storage.blobs import BlobStore
from storage.errors import StorageError
from storage.index import Index
from storage.records import BlobRef, NewConflict, NewInstance

log = logging.getLogger(__name__)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class IngestOutcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class IngestResult:
    outcome: IngestOutcome
    sop_uid: str
    study_uid: str
    patient_id: str
    patient_id_valid: bool
    message: str = ""


def blob_key(parsed: ParsedObject, sha256: str) -> str:
    """Keys from validated UIDs plus the content hash: a different object never lands on a key
    another object holds, and the same object always lands on the same key."""
    return (
        f"dicom/{parsed.study.study_uid}/{parsed.series.series_uid}/"
        f"{parsed.instance.sop_uid}.{sha256[:16]}.dcm"
    )


class IngestService:
    """Runs the ingest path; safe to call from many threads at once.

    The SHA-256 (which releases the GIL) is computed while the object is parsed. The blob is
    durable before the index transaction begins, so the database's single writer slot is held
    only for the index statements and the commit.
    """

    def __init__(self, index: Index, blobs: BlobStore, audit: AuditLog, max_pixels: int) -> None:
        self._index = index
        self._blobs = blobs
        self._audit = audit
        self._max_pixels = max_pixels
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ingest-io")

    def close(self) -> None:
        self._io.shutdown(wait=True)

    def ingest_dicom(self, data: bytes, actor: Actor) -> IngestResult:
        """Take one Part 10 object. Raises InvalidObject/UnsupportedObject (nothing stored) or
        ArchiveUnavailable (nothing acknowledged; a blob written may remain for fsck)."""
        hashing = self._io.submit(_sha256, data)
        try:
            parsed = parse_part10(data, self._max_pixels)
        finally:
            sha256 = hashing.result()
        key = blob_key(parsed, sha256)
        try:
            # Each store makes the same object twice cost one object: the filesystem finds the
            # file in place, S3 writes conditionally (one round trip, not a look-up and a write).
            self._blobs.put(key, data, sha256)
        except StorageError as exc:
            raise ArchiveUnavailable(f"the object could not be stored: {exc}") from exc
        blob = BlobRef(key=key, size=len(data), sha256=sha256)
        try:
            return self._index_object(parsed, blob, actor)
        except (StorageError, AuditUnavailable) as exc:
            raise ArchiveUnavailable(f"the object could not be indexed: {exc}") from exc

    def _index_object(self, parsed: ParsedObject, blob: BlobRef, actor: Actor) -> IngestResult:
        received_at = now_iso()
        inst = parsed.instance
        source = f"{actor.kind}:{actor.name}@{actor.address}"
        details: dict[str, object] = {
            "sop_instance_uid": inst.sop_uid,
            "sop_class_uid": inst.sop_class_uid,
            "transfer_syntax_uid": inst.transfer_syntax_uid,
            "sha256": blob.sha256,
            "size": blob.size,
        }
        if not parsed.patient.id_valid:
            details["patient_id_problem"] = parsed.patient.id_problem or "not a valid national ID"

        def stored_event(outcome: int = Outcome.SUCCESS, description: str = "") -> Event:
            return Event(
                EventType.INSTANCES_TRANSFERRED,
                "C",
                actor,
                outcome=outcome,
                outcome_description=description,
                patient_ids=(parsed.patient.patient_id,),
                study_uids=(parsed.study.study_uid,),
                object_count=1,
                details=details,
            )

        new = NewInstance(
            patient=parsed.patient,
            study=parsed.study,
            series=parsed.series,
            instance=inst,
            blob=blob,
            county=actor.county,
            source=source,
            received_at=received_at,
        )
        with self._index.transaction() as tx:
            if tx.add_instance(new):
                self._audit.record_in(tx, stored_event())
                return self._result(IngestOutcome.STORED, parsed, "stored")
            existing = tx.instance_digest(inst.sop_uid) or ""
            if existing == blob.sha256:
                description = "identical object already stored; nothing changed"
                self._audit.record_in(tx, stored_event(description=description))
                return self._result(IngestOutcome.DUPLICATE, parsed, "already stored")
            tx.add_conflict(
                NewConflict(
                    sop_uid=inst.sop_uid,
                    study_uid=parsed.study.study_uid,
                    series_uid=parsed.series.series_uid,
                    blob=blob,
                    existing_sha256=existing,
                    county=actor.county,
                    source=source,
                    received_at=received_at,
                )
            )
            message = (
                f"SOP Instance UID {inst.sop_uid} is already stored with different content; "
                "the first object is kept as the instance and this one is held for review"
            )
            details["existing_sha256"] = existing
            self._audit.record_in(tx, stored_event(Outcome.MINOR_FAILURE, message))
        log.warning("conflicting object for %s kept for review (%s)", inst.sop_uid, blob.key)
        return self._result(IngestOutcome.CONFLICT, parsed, message)

    @staticmethod
    def _result(outcome: IngestOutcome, parsed: ParsedObject, message: str) -> IngestResult:
        return IngestResult(
            outcome=outcome,
            sop_uid=parsed.instance.sop_uid,
            study_uid=parsed.study.study_uid,
            patient_id=parsed.patient.patient_id,
            patient_id_valid=parsed.patient.id_valid,
            message=message,
        )
