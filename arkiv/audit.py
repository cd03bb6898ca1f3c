"""The audit log: append-only and hash-chained.

Each event's hash is SHA-256 over a canonical encoding (sorted-key, compact UTF-8 JSON) of all its
fields, its sequence number and the previous event's hash. Editing, deleting or reordering a row
breaks the chain at that row; truncating the tail shows against the chain head. Events are written
in the same transaction as what they record (ingest) or before the data is read (access): if the
event cannot be written, the action does not happen.

Event identifiers are DICOM PS3.15 A.5.3 codes (DCM coding scheme).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from arkiv.clock import now_iso
from arkiv.errors import AuditUnavailable
from storage.errors import StorageError
from storage.index import CHAIN_GENESIS, Index, IndexTransaction
from storage.records import AuditEvent, NewAuditEvent


class EventType(Enum):
    """PS3.15 audit event IDs: (code, meaning)."""

    APPLICATION_ACTIVITY = ("110100", "Application Activity")
    AUDIT_LOG_USED = ("110101", "Audit Log Used")
    BEGIN_TRANSFERRING = ("110102", "Begin Transferring DICOM Instances")
    INSTANCES_ACCESSED = ("110103", "DICOM Instances Accessed")
    INSTANCES_TRANSFERRED = ("110104", "DICOM Instances Transferred")
    EXPORT = ("110106", "Export")
    IMPORT = ("110107", "Import")
    PATIENT_RECORD = ("110110", "Patient Record")
    QUERY = ("110112", "Query")
    SECURITY_ALERT = ("110113", "Security Alert")
    USER_AUTHENTICATION = ("110114", "User Authentication")

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def meaning(self) -> str:
        return self.value[1]


class Outcome:
    """EventOutcomeIndicator values of PS3.15."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    SERIOUS_FAILURE = 8
    MAJOR_FAILURE = 12


@dataclass(frozen=True)
class Actor:
    """Who acted: a signed-in user, a DICOM application entity, or the archive itself."""

    name: str
    kind: str  # "user", "dicom-ae", "system"
    county: str
    address: str = ""
    role: str = ""


@dataclass(frozen=True)
class Event:
    """An event as the services describe it, before it is given its place in the chain."""

    type: EventType
    action: str  # C, R, U, D, E
    actor: Actor
    outcome: int = Outcome.SUCCESS
    outcome_description: str = ""
    patient_ids: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    object_count: int = 0
    query: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    counties: tuple[str, ...] = ()
    """Counties owning the data touched; the actor's county is always added."""


def canonical_bytes(seq: int, prev_hash: str, event: NewAuditEvent | AuditEvent) -> bytes:
    """The exact bytes an event's hash covers; any change to a stored field changes them."""
    document = {
        "seq": seq,
        "prev_hash": prev_hash,
        "recorded_at": event.recorded_at,
        "event_id": event.event_id,
        "event_name": event.event_name,
        "action": event.action,
        "outcome": event.outcome,
        "outcome_description": event.outcome_description,
        "actor": event.actor,
        "actor_kind": event.actor_kind,
        "actor_role": event.actor_role,
        "county": event.county,
        "source_address": event.source_address,
        "patient_ids": list(event.patient_ids),
        "study_uids": list(event.study_uids),
        "object_count": event.object_count,
        "query": event.query,
        "details": event.details,
    }
    if event.counties:  # absent from events written before counties were recorded
        document["counties"] = list(event.counties)
    return json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8"
    )


def chain_hash(prev_hash: str, seq: int, event: NewAuditEvent | AuditEvent) -> str:
    return hashlib.sha256(canonical_bytes(seq, prev_hash, event)).hexdigest()


def to_record(event: Event) -> NewAuditEvent:
    """The stored form of an event, stamped now, before it is given its place in the chain."""
    return NewAuditEvent(
        recorded_at=now_iso(),
        event_id=event.type.code,
        event_name=event.type.meaning,
        action=event.action,
        outcome=event.outcome,
        outcome_description=event.outcome_description,
        actor=event.actor.name,
        actor_kind=event.actor.kind,
        actor_role=event.actor.role,
        county=event.actor.county,
        source_address=event.actor.address,
        patient_ids=tuple(p for p in event.patient_ids if p),
        study_uids=tuple(event.study_uids),
        object_count=event.object_count,
        query=event.query,
        details=dict(event.details),
        counties=tuple(sorted({event.actor.county, *(c for c in event.counties if c)})),
    )


@dataclass(frozen=True)
class VerifyReport:
    """The result of walking the chain. `broken_at` is the first event that does not verify."""

    checked: int
    head_seq: int
    broken_at: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


class AuditLog:
    """Writes events into the chain and verifies the chain."""

    def __init__(self, index: Index) -> None:
        self._index = index

    def record(self, event: Event) -> AuditEvent:
        """Write one event in its own transaction; raise AuditUnavailable if it cannot be kept."""
        try:
            with self._index.transaction() as tx:
                return self.record_in(tx, event)
        except StorageError as exc:
            raise AuditUnavailable(f"audit event could not be written: {exc}") from exc

    def record_in(self, tx: IndexTransaction, event: Event) -> AuditEvent:
        """Write an event inside a caller's transaction, so both commit or neither does."""
        return tx.append_audit(to_record(event), chain_hash)

    def verify(
        self,
        until: int | None = None,
        *,
        anchors: Mapping[int, str] | None = None,
        after: tuple[int, str] = (0, CHAIN_GENESIS),
    ) -> VerifyReport:
        """Walk the chain in sequence order and name the first event that does not fit.

        The chain alone cannot catch an intruder who rewrites the tail and the head together,
        so the walk can be held against hashes from outside the database:

        - `until`: stop after event `until`, which must exist, instead of comparing the end with
          the head row (the log as it was when a checkpoint of that size was signed; events
          appended since are not its business).
        - `anchors`: sequence number → hash signed in a checkpoint. An event whose hash differs
          was rewritten together with everything after it; a log that ends before an anchor was
          cut short, whatever its head row says.
        - `after`: start behind an event already verified, `(seq, hash)`, so that periodic
          signing reads only what was appended since the last checkpoint.
        """
        anchors = anchors or {}
        required = max(until or 0, max(anchors, default=0))
        start_seq, prev_hash = after
        expected_seq = start_seq + 1
        last_anchor = start_seq
        checked = 0
        head_seq, head_hash = self._index.audit_head()
        for stored in self._index.iter_audit_events(after=start_seq):
            if until is not None and stored.seq > until:
                break
            if stored.seq != expected_seq:
                return VerifyReport(
                    checked,
                    head_seq,
                    expected_seq,
                    f"event {expected_seq} is missing (next stored event is {stored.seq})",
                )
            if stored.prev_hash != prev_hash:
                return VerifyReport(
                    checked,
                    head_seq,
                    stored.seq,
                    f"event {stored.seq} does not link to event {stored.seq - 1} "
                    "(rows were deleted, inserted or reordered)",
                )
            if chain_hash(prev_hash, stored.seq, stored) != stored.hash:
                return VerifyReport(
                    checked,
                    head_seq,
                    stored.seq,
                    f"event {stored.seq} was altered: its content no longer matches its hash",
                )
            signed = anchors.get(stored.seq)
            if signed is not None:
                if signed != stored.hash:
                    return VerifyReport(
                        checked,
                        head_seq,
                        stored.seq,
                        f"event {stored.seq} is not the event signed in the checkpoint of size "
                        f"{stored.seq}: events {last_anchor + 1} to {stored.seq} were edited, "
                        "deleted or reordered and the hashes recomputed",
                    )
                last_anchor = stored.seq
            prev_hash = stored.hash
            expected_seq += 1
            checked += 1
        end = expected_seq - 1
        if end < required:
            return VerifyReport(
                checked,
                head_seq,
                end + 1,
                f"the log ends at event {end} but a signed checkpoint covers {required} events "
                "(events were removed and the rest rewritten to hide it)",
            )
        if until is None and (end != head_seq or prev_hash != head_hash):
            return VerifyReport(
                checked,
                head_seq,
                end + 1,
                f"the log ends at event {end} but its head records event {head_seq} "
                "(events were removed from the end)",
            )
        return VerifyReport(checked, head_seq)
