"""What auditors do with the log: search it, answer a patient, review exceptions, export.

Every use of the log is itself an audit event (110101 Audit Log Used), written before the answer
is given. A county's auditor sees the events that concern their county: those of its own users and
those touching data it owns (another county's clinician breaking the glass to one of its patients).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta

from arkiv.accounts import Principal, Role
from arkiv.audit import AuditLog, Event, EventType
from arkiv.authorization import audit_scope
from arkiv.break_glass import EMERGENCY_OVERRIDE_STARTED
from arkiv.clock import iso, utc_now
from arkiv.config import Settings
from arkiv.counties import County, organisation_name
from storage.index import Index
from storage.records import AuditEvent, AuditQuery, UserVolume

_READ_EVENTS = frozenset({"110103", "110104", "110106", "110112"})
_REPORT_LIMIT = 20_000
_REVIEW_LIMIT = 500
_EXPORT_PAGE = 5000

ROLE_NAMES = {
    Role.CLINICIAN.value: "Tannhelsepersonell",
    Role.SERVICE.value: "Fagsystem",
    Role.AUDITOR.value: "Personvernombud",
    Role.JOINT_AUDITOR.value: "Personvernombud (felles)",
    Role.ADMIN.value: "Systemadministrator",
}

_WHAT = {
    "110103": "Så på bilder",
    "110104": "Hentet ut bilder",
    "110106": "Eksporterte bilder",
    "110112": "Søkte opp pasienten",
    "110113": "Tok utvidet tilgang",
}


@dataclass(frozen=True)
class PatientAccess:
    """One line of the report a patient receives: who, when, from which organisation, why."""

    when: str
    who: str
    role: str
    organisation: str
    what: str
    reason: str
    """The reason template of a break-the-glass access; free text is never shown here."""


@dataclass(frozen=True)
class Review:
    """Exceptions an auditor must look at: extended access, cross-county reads, heavy users."""

    break_glass: list[AuditEvent]
    cross_county: list[AuditEvent]
    heavy_users: list[UserVolume]
    threshold: int


class AuditReviewService:
    def __init__(self, index: Index, audit: AuditLog, settings: Settings) -> None:
        self._index = index
        self._audit = audit
        self._settings = settings

    def _used(
        self,
        principal: Principal,
        county: str | None,
        what: str,
        query_text: str,
        patient_id: str | None = None,
    ) -> None:
        self._audit.record(
            Event(
                EventType.AUDIT_LOG_USED,
                "R",
                principal.actor(),
                patient_ids=(patient_id,) if patient_id else (),
                query=query_text,
                counties=(county,) if county else tuple(c.value for c in County),
                details={"use": what},
            )
        )

    def search(self, principal: Principal, query: AuditQuery, query_text: str) -> list[AuditEvent]:
        county = audit_scope(principal, query.county)
        self._used(principal, county, "search", query_text, query.patient_id)
        return self._index.find_audit_events(replace(query, county=county))

    def export(
        self, principal: Principal, query: AuditQuery, query_text: str, fmt: str
    ) -> Iterator[AuditEvent]:
        """All matching events, oldest first, for an export file (the export itself audited)."""
        county = audit_scope(principal, query.county)
        self._used(principal, county, f"export {fmt}", query_text, query.patient_id)
        return self._iter(replace(query, county=county))

    def _iter(self, query: AuditQuery) -> Iterator[AuditEvent]:
        """Oldest first, page by page on the sequence number, up to the head as it was when the
        export began (events appended meanwhile belong to the next export)."""
        head, _ = self._index.audit_head()
        last = 0
        while True:
            batch = self._index.find_audit_events(
                replace(
                    query,
                    after_seq=last,
                    through_seq=head,
                    oldest_first=True,
                    limit=_EXPORT_PAGE,
                    offset=0,
                )
            )
            yield from batch
            if len(batch) < _EXPORT_PAGE:
                return
            last = batch[-1].seq

    def patient_report(
        self, principal: Principal, patient_id: str, county: str | None = None
    ) -> list[PatientAccess]:
        """Who has looked at this patient's images (innsyn i logg), oldest first."""
        scope = audit_scope(principal, county)
        self._used(principal, scope, "patient access report", "", patient_id)
        events = self._index.find_audit_events(
            AuditQuery(patient_id=patient_id, county=scope, limit=_REPORT_LIMIT)
        )
        lines: list[PatientAccess] = []
        for event in reversed(events):
            if event.event_id not in _READ_EVENTS and not _is_break_glass(event):
                continue
            if event.action == "C" or event.actor_kind not in ("user", "service"):
                continue
            reason = str(event.details.get("reason", "")) if _is_break_glass(event) else ""
            what = _WHAT.get(event.event_id, event.event_name)
            if event.details.get("break_glass") and event.event_id != "110113":
                what += " (utvidet tilgang)"
            lines.append(
                PatientAccess(
                    when=event.recorded_at,
                    who=event.actor,
                    role=ROLE_NAMES.get(event.actor_role, event.actor_role),
                    organisation=organisation_name(event.county),
                    what=what,
                    reason=reason,
                )
            )
        return lines

    def review(self, principal: Principal, county: str | None = None, days: int = 7) -> Review:
        scope = audit_scope(principal, county)
        self._used(principal, scope, "review", f"days={days}")
        since = iso(utc_now() - timedelta(days=days))
        alerts = self._index.find_audit_events(
            AuditQuery(county=scope, event_id="110113", since=since, limit=_REVIEW_LIMIT)
        )
        found: dict[int, AuditEvent] = {}
        for county in [scope] if scope else [c.value for c in County]:
            for event in self._index.find_audit_events(
                AuditQuery(county=county, cross_county=True, since=since, limit=_REVIEW_LIMIT)
            ):
                if event.event_id in _READ_EVENTS and event.actor_kind in ("user", "service"):
                    found[event.seq] = event
        crossing = [found[seq] for seq in sorted(found, reverse=True)][:_REVIEW_LIMIT]
        threshold = self._settings.review_volume_threshold
        return Review(
            break_glass=[e for e in alerts if _is_break_glass(e)],
            cross_county=crossing,
            heavy_users=self._index.user_volumes(scope, since, threshold),
            threshold=threshold,
        )


def _is_break_glass(event: AuditEvent) -> bool:
    return event.event_id == "110113" and event.details.get("subtype") == EMERGENCY_OVERRIDE_STARTED
