"""Storage commitment: which objects the archive vouches for, so a modality may delete its copy.

A modality that deletes on our word must never lose an image, so an object is committed only
when all of these hold now, not merely when it was stored: the index holds it under that SOP
Instance UID with that SOP Class UID, it belongs to the asking peer's county, and its stored
bytes, read back from the blob store (file or S3 alike), still hash to the SHA-256 recorded at
ingest. Anything else is reported failed with the reason of PS3.4 J.3.2.1.2; a damaged or
missing object also raises a security alert, as a damaged object found on any read does.

The protocol (N-ACTION, N-EVENT-REPORT, associations) stays in `dicom_node.commitment`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from arkiv.access import AccessService, IntegrityError
from arkiv.accounts import Principal, Role
from arkiv.audit import AuditLog, Event, EventType, Outcome
from arkiv.errors import ArkivError, Forbidden
from storage.index import Index
from storage.records import StoredInstance, StudyQuery

log = logging.getLogger(__name__)

COMMIT_SCOPE = "commit"
LOOKUP_BATCH = 500
"""SOP Instance UIDs looked up per index query: keeps each IN list well within SQL limits."""


class FailureReason(IntEnum):
    """Failure Reason (0008,1197) values of PS3.4 J.3.2.1.2 the archive reports."""

    PROCESSING_FAILURE = 0x0110
    """The object is held but cannot be vouched for now: its bytes do not verify, are missing,
    or the store cannot be read. The modality must keep its copy."""
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    """Not in the archive, or not the asking county's (which the peer may not learn)."""
    CLASS_INSTANCE_CONFLICT = 0x0119
    """Held under this SOP Instance UID, but with another SOP Class UID."""


@dataclass(frozen=True)
class ObjectReference:
    """One item of a Referenced SOP Sequence."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class FailedObject:
    reference: ObjectReference
    reason: FailureReason
    explanation: str
    """For the log and the audit event; the modality gets only the reason code."""


@dataclass(frozen=True)
class CommitmentResult:
    transaction_uid: str
    committed: tuple[ObjectReference, ...]
    failed: tuple[FailedObject, ...]
    patient_ids: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    """Of the committed objects, for the audit event."""

    @property
    def all_committed(self) -> bool:
        return not self.failed


def require_commit(principal: Principal) -> None:
    """Only a service account (a configured DICOM peer) with the commit scope may ask."""
    if principal.role is Role.SERVICE and COMMIT_SCOPE in principal.scopes:
        return
    raise Forbidden("this account's scopes do not allow it to request storage commitment")


class CommitmentService:
    def __init__(self, index: Index, access: AccessService, audit: AuditLog) -> None:
        self._index = index
        self._access = access
        self._audit = audit

    def check(
        self, principal: Principal, transaction_uid: str, references: Sequence[ObjectReference]
    ) -> CommitmentResult:
        """Decide, object by object, what is committed, and audit the answer.

        The answer is audited before it is returned, so before the modality hears it (no audit,
        no answer). If that audit cannot be written, nothing is vouched for: every object is
        returned failed (processing failure), which keeps the modality's copies.
        """
        require_commit(principal)
        held = self._lookup(principal, [r.sop_instance_uid for r in references])
        committed: list[ObjectReference] = []
        failed: list[FailedObject] = []
        verified: dict[str, FailedObject | None] = {}
        for reference in references:
            instance = held.get(reference.sop_instance_uid)
            if instance is None:
                failed.append(
                    FailedObject(
                        reference,
                        FailureReason.NO_SUCH_OBJECT_INSTANCE,
                        "not held for this county",
                    )
                )
                continue
            if instance.sop_class_uid != reference.sop_class_uid:
                failed.append(
                    FailedObject(
                        reference,
                        FailureReason.CLASS_INSTANCE_CONFLICT,
                        f"held with SOP class {instance.sop_class_uid}",
                    )
                )
                continue
            if instance.sop_uid not in verified:
                verified[instance.sop_uid] = self._verify(principal, instance, reference)
            problem = verified[instance.sop_uid]
            if problem is None:
                committed.append(reference)
            else:
                failed.append(problem)
        good = [held[r.sop_instance_uid] for r in committed]
        result = CommitmentResult(
            transaction_uid=transaction_uid,
            committed=tuple(committed),
            failed=tuple(failed),
            patient_ids=tuple(sorted({i.patient_id for i in good})),
            study_uids=tuple(sorted({i.study_uid for i in good})),
        )
        try:
            self._audit_result(principal, result, {i.county for i in good})
        except Exception:
            log.exception("storage commitment %s could not be audited", transaction_uid)
            return _none_committed(result, "the answer could not be audited")
        return result

    def record_undelivered(
        self, principal: Principal, result: CommitmentResult, reason: str
    ) -> None:
        """Audit that the N-EVENT-REPORT never reached the modality: it still holds its copies
        and must ask again; an operator reading the log sees which transaction is open."""
        self._audit.record(
            Event(
                EventType.INSTANCES_ACCESSED,
                "R",
                principal.actor(),
                outcome=Outcome.MINOR_FAILURE,
                outcome_description=f"storage commitment report not delivered: {reason}",
                patient_ids=result.patient_ids,
                study_uids=result.study_uids,
                object_count=len(result.committed),
                details={
                    "purpose": "storage commitment report",
                    "transaction_uid": result.transaction_uid,
                    "delivered": False,
                },
            )
        )

    def _lookup(self, principal: Principal, sop_uids: Sequence[str]) -> dict[str, StoredInstance]:
        """The instances of the principal's county under these SOP Instance UIDs.

        Scoped by county in the query itself: an object of another county is "no such object"
        for this peer, so commitment cannot be used to learn what other counties hold.
        """
        unique = sorted(set(sop_uids))
        found: dict[str, StoredInstance] = {}
        for batch in _batches(unique, LOOKUP_BATCH):
            query = StudyQuery(
                sop_uids=tuple(batch), county=principal.county.value, limit=len(batch) + 1
            )
            for instance in self._index.find_instances(query):
                found[instance.sop_uid] = instance
        return found

    def _verify(
        self, principal: Principal, instance: StoredInstance, reference: ObjectReference
    ) -> FailedObject | None:
        """None if the stored bytes hash to the recorded SHA-256 now, else why not.

        An instance with a different object kept under its SOP Instance UID for review (a
        conflict at ingest) is not vouched for either: the asking modality's copy may be that
        other object, so it must keep it until someone has resolved the conflict.
        """
        if self._index.conflict_count(instance.sop_uid):
            return FailedObject(
                reference,
                FailureReason.PROCESSING_FAILURE,
                "another object under this SOP Instance UID awaits review",
            )
        try:
            # The access path's verified read: the same check, and the same Security Alert
            # for a damaged or missing object, as any read of it would raise.
            self._access.read_bytes(principal, instance)
        except IntegrityError as exc:
            return FailedObject(reference, FailureReason.PROCESSING_FAILURE, str(exc))
        except ArkivError as exc:
            log.error("storage commitment: cannot verify %s: %s", instance.sop_uid, exc)
            return FailedObject(
                reference, FailureReason.PROCESSING_FAILURE, f"cannot verify now: {exc}"
            )
        return None

    def _audit_result(
        self, principal: Principal, result: CommitmentResult, counties: set[str]
    ) -> None:
        """The commitment answer as PS3.15 110103 DICOM Instances Accessed, action R.

        Not 110104 (Instances Transferred): no object leaves the archive, and the transfer in
        was audited at import. What happens here is that the archive reads each stored object
        to verify it and tells the peer which it holds, which is an access of those instances;
        the details name the purpose, the transaction and each object's fate, so an auditor can
        tell which images a modality was allowed to delete on the archive's word.
        """
        outcome = Outcome.SUCCESS if result.all_committed else Outcome.MINOR_FAILURE
        details: dict[str, Any] = {
            "purpose": "storage commitment",
            "transaction_uid": result.transaction_uid,
            "committed": [r.sop_instance_uid for r in result.committed],
            "failed": [
                {
                    "sop_uid": f.reference.sop_instance_uid,
                    "reason": f"0x{int(f.reason):04X}",
                    "explanation": f.explanation,
                }
                for f in result.failed
            ],
        }
        self._audit.record(
            Event(
                EventType.INSTANCES_ACCESSED,
                "R",
                principal.actor(),
                outcome=outcome,
                outcome_description=(
                    "" if result.all_committed else f"{len(result.failed)} not committed"
                ),
                patient_ids=result.patient_ids,
                study_uids=result.study_uids,
                object_count=len(result.committed),
                details=details,
                counties=tuple(sorted(counties)),
            )
        )


def _none_committed(result: CommitmentResult, why: str) -> CommitmentResult:
    every = [*result.committed, *(f.reference for f in result.failed)]
    return CommitmentResult(
        transaction_uid=result.transaction_uid,
        committed=(),
        failed=tuple(FailedObject(r, FailureReason.PROCESSING_FAILURE, why) for r in every),
    )


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
