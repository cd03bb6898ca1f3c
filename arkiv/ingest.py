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
from collections.abc import Callable
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
from storage.records import BlobRef, NewConflict, NewInstance, NewPhoto, PhotoFacts

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


SOURCE_LENGTH = 200
"""The index's source column; a longer origin keeps its end (the file name, the study UID)."""


def _source(actor: Actor, origin: str) -> str:
    """Who sent an object, or, for an imported one, where it was found."""
    if not origin:
        return f"{actor.kind}:{actor.name}@{actor.address}"[:SOURCE_LENGTH]
    source = f"import:{origin}"
    if len(source) <= SOURCE_LENGTH:
        return source
    return "import:…" + origin[-(SOURCE_LENGTH - len("import:…")) :]


def blob_key(parsed: ParsedObject, sha256: str) -> str:
    """Keys from validated UIDs plus the content hash: a different object never lands on a key
    another object holds, and the same object always lands on the same key."""
    return (
        f"dicom/{parsed.study.study_uid}/{parsed.series.series_uid}/"
        f"{parsed.instance.sop_uid}.{sha256[:16]}.dcm"
    )


StoredListener = Callable[[ParsedObject, bytes, Actor], None]
"""Told of each new object after it is stored (`IngestService.on_stored`)."""


def media_key(photo_id: str, role: str, sha256: str, extension: str) -> str:
    """Keys of a photo's renditions: from its id (derived from its content), the role and the
    content hash, never from a client's file name."""
    return f"media/{photo_id[:2]}/{photo_id}/{role}.{sha256[:16]}.{extension}"


@dataclass(frozen=True)
class PhotoIngest:
    """A photo or video checked and prepared by `arkiv.photos`, ready to be made durable."""

    facts: PhotoFacts
    patient_pk: int
    patient_id: str
    county: str
    renditions: dict[str, tuple[bytes, str]]
    """Role ("original", "thumbnail", "web") → (bytes, file extension)."""
    dicom: bytes | None
    """The DICOM wrapper (Part 10), indexed as an instance in the same transaction."""
    details: dict[str, object]
    """What the audit event records about the upload beyond the ids."""
    origin: str = ""
    """Where an imported photo was found (see `IngestService.ingest_dicom`)."""


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
        self._listeners: list[StoredListener] = []

    def close(self) -> None:
        self._io.shutdown(wait=True)

    def ingest_dicom(self, data: bytes, actor: Actor, origin: str = "") -> IngestResult:
        """Take one Part 10 object. Raises InvalidObject/UnsupportedObject (nothing stored) or
        ArchiveUnavailable (nothing acknowledged; a blob written may remain for fsck).

        `origin` says where an object that did not come from `actor` itself was found (an
        imported file's path, the old PACS and study it was pulled from): it becomes the
        instance's source in the index and is recorded in full in the audit event."""
        hashing = self._io.submit(_sha256, data)
        try:
            # an old archive's object without any patient ID is kept, for an admin to file
            parsed = parse_part10(data, self._max_pixels, allow_missing_patient_id=bool(origin))
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
            result = self._index_object(parsed, blob, actor, origin)
        except (StorageError, AuditUnavailable) as exc:
            raise ArchiveUnavailable(f"the object could not be indexed: {exc}") from exc
        if result.outcome is IngestOutcome.STORED:
            for listener in self._listeners:
                try:
                    listener(parsed, data, actor)
                except Exception:  # the object is stored and acknowledged whatever follows
                    log.exception("after storing %s", parsed.instance.sop_uid)
        return result

    def on_stored(self, listener: StoredListener) -> None:
        """Call `listener` after each new DICOM object is durable and indexed (not for
        duplicates or conflicts). A listener's failure is logged, never the sender's problem:
        the object was already kept."""
        self._listeners.append(listener)

    def ingest_photo(self, photo: PhotoIngest, actor: Actor) -> IngestOutcome:
        """Make a photo's renditions and its DICOM wrapper durable, then index the photo, the
        wrapper and the audit event in one transaction. DUPLICATE when this patient already has
        this very original in this county (nothing new is indexed; the event says so)."""
        facts = photo.facts
        blobs: dict[str, BlobRef] = {}
        wrapper: tuple[ParsedObject, BlobRef] | None = None
        digests = {role: _sha256(data) for role, (data, _ext) in photo.renditions.items()}
        original_sha256 = digests["original"]
        source = _source(actor, photo.origin)
        details = {**photo.details, "photo_id": facts.photo_id, "sha256": original_sha256}
        if photo.origin:
            details["source"] = photo.origin

        def event(description: str = "") -> Event:
            return Event(
                EventType.INSTANCES_TRANSFERRED,
                "C",
                actor,
                outcome_description=description,
                patient_ids=(photo.patient_id,),
                study_uids=(facts.study_uid,),
                object_count=1,
                details=details,
            )

        duplicate = "identical photo already stored; nothing changed"
        try:
            # The id comes from the content: a photo already indexed under it is this photo, and
            # nothing is written (a wrapper made from a different form would be left over).
            if self._index.photos.get(facts.photo_id) is not None:
                self._audit.record(event(duplicate))
                return IngestOutcome.DUPLICATE
        except (StorageError, AuditUnavailable) as exc:
            raise ArchiveUnavailable(f"the photo could not be checked: {exc}") from exc
        try:
            for role, (data, extension) in photo.renditions.items():
                sha256 = digests[role]
                key = media_key(facts.photo_id, role, sha256, extension)
                self._blobs.put(key, data, sha256)
                blobs[role] = BlobRef(key=key, size=len(data), sha256=sha256)
            if photo.dicom is not None:
                sha256 = _sha256(photo.dicom)
                parsed = parse_part10(photo.dicom, self._max_pixels)
                key = blob_key(parsed, sha256)
                self._blobs.put(key, photo.dicom, sha256)
                wrapper = (parsed, BlobRef(key=key, size=len(photo.dicom), sha256=sha256))
        except StorageError as exc:
            raise ArchiveUnavailable(f"the photo could not be stored: {exc}") from exc
        received_at = now_iso()
        try:
            with self._index.transaction() as tx:
                if tx.photo_by_content(photo.patient_pk, photo.county, original_sha256):
                    # Uploaded twice at the same moment: the other upload's rows stand, and the
                    # wrapper written here is left for `arkiv fsck` to report.
                    self._audit.record_in(tx, event(duplicate))
                    return IngestOutcome.DUPLICATE
                if wrapper is not None:
                    parsed, blob = wrapper
                    tx.add_instance(self._new_instance(parsed, blob, actor, received_at, source))
                tx.add_photo(
                    NewPhoto(
                        facts=facts,
                        patient_pk=photo.patient_pk,
                        county=photo.county,
                        blobs=blobs,
                        uploaded_by=actor.name,
                        source=source,
                        received_at=received_at,
                    )
                )
                self._audit.record_in(tx, event())
        except (StorageError, AuditUnavailable) as exc:
            raise ArchiveUnavailable(f"the photo could not be indexed: {exc}") from exc
        return IngestOutcome.STORED

    @staticmethod
    def _new_instance(
        parsed: ParsedObject, blob: BlobRef, actor: Actor, received_at: str, source: str
    ) -> NewInstance:
        return NewInstance(
            patient=parsed.patient,
            study=parsed.study,
            series=parsed.series,
            instance=parsed.instance,
            blob=blob,
            county=actor.county,
            source=source,
            received_at=received_at,
        )

    def _index_object(
        self, parsed: ParsedObject, blob: BlobRef, actor: Actor, origin: str
    ) -> IngestResult:
        received_at = now_iso()
        inst = parsed.instance
        source = _source(actor, origin)
        details: dict[str, object] = {
            "sop_instance_uid": inst.sop_uid,
            "sop_class_uid": inst.sop_class_uid,
            "transfer_syntax_uid": inst.transfer_syntax_uid,
            "sha256": blob.sha256,
            "size": blob.size,
        }
        if origin:
            details["source"] = origin
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

        new = self._new_instance(parsed, blob, actor, received_at, source)
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
