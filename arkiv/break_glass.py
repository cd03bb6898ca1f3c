"""Break the glass (utvidet tilgang): a clinician opens another county's patient, with a reason.

The reason is one of the configured templates (the text a patient is shown when they ask who saw
their images) plus optional free text for the auditor. The grant covers one patient for a limited
time, is itself a Security Alert audit event (110113, Emergency Override Started) concerning the
patient's owning counties, so their auditors see it on their review page.
"""

from __future__ import annotations

from datetime import timedelta

from arkiv.accounts import Principal
from arkiv.audit import AuditLog, Event, EventType, Outcome
from arkiv.authorization import require_break_glass
from arkiv.clock import iso, utc_now
from arkiv.config import Settings
from arkiv.errors import AuditUnavailable, InvalidQuery, NotFound
from storage.errors import StorageError
from storage.index import Index
from storage.records import BreakGlassGrant

MAX_FREE_TEXT = 500
EMERGENCY_OVERRIDE_STARTED = "110127 Emergency Override Started"


class BreakGlassService:
    def __init__(self, index: Index, audit: AuditLog, settings: Settings) -> None:
        self._index = index
        self._audit = audit
        self._settings = settings

    def reasons(self) -> dict[str, str]:
        return dict(self._settings.break_glass_reasons)

    def active_grants(self, principal: Principal) -> list[BreakGlassGrant]:
        return self._index.active_grants(principal.username, iso(utc_now()))

    def granted_patient_ids(self, principal: Principal) -> tuple[str, ...]:
        return tuple(sorted({g.patient_id for g in self.active_grants(principal)}))

    def other_counties(self, principal: Principal, patient_id: str) -> tuple[str, ...]:
        """Counties other than the user's that hold studies of this patient."""
        own = principal.county.value
        return tuple(c for c in self._index.patient_counties(patient_id) if c != own)

    def grant(
        self, principal: Principal, patient_id: str, reason_code: str, free_text: str = ""
    ) -> BreakGlassGrant:
        """Open one patient's studies in all counties to this clinician for a limited time."""
        require_break_glass(principal)
        reasons = self.reasons()
        if reason_code not in reasons:
            raise InvalidQuery(
                f"unknown reason {reason_code!r}; choose one of {', '.join(sorted(reasons))}"
            )
        free_text = free_text.strip()
        if len(free_text) > MAX_FREE_TEXT or not free_text.isprintable():
            raise InvalidQuery(f"free text must be at most {MAX_FREE_TEXT} printable characters")
        if not patient_id or len(patient_id) > 64:
            raise InvalidQuery("patient ID must be 1 to 64 characters")
        owners = tuple(self._index.patient_counties(patient_id))
        if not owners:
            raise NotFound("no patient with this ID in the archive")
        if set(owners) == {principal.county.value}:
            raise InvalidQuery("this patient is in your own county; no extended access is needed")
        now = utc_now()
        expires = now + timedelta(minutes=self._settings.break_glass_minutes)
        event = Event(
            EventType.SECURITY_ALERT,
            "E",
            principal.actor(),
            outcome=Outcome.SUCCESS,
            outcome_description=f"extended access: {reasons[reason_code]}",
            patient_ids=(patient_id,),
            counties=owners,
            details={
                "subtype": EMERGENCY_OVERRIDE_STARTED,
                "purpose_of_use": "ETREAT" if reason_code == "akutt" else "TREAT",
                "reason_code": reason_code,
                "reason": reasons[reason_code],
                "free_text": free_text,
                "expires_at": iso(expires),
            },
        )
        try:
            with self._index.transaction() as tx:
                recorded = self._audit.record_in(tx, event)
                grant = tx.add_grant(
                    principal.username,
                    principal.county.value,
                    patient_id,
                    reason_code,
                    free_text,
                    iso(now),
                    iso(expires),
                    recorded.seq,
                )
        except StorageError as exc:
            raise AuditUnavailable(f"extended access could not be recorded: {exc}") from exc
        return grant
