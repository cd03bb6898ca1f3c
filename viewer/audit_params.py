"""Turning an auditor's filters (query string, form or FHIR search) into an `AuditQuery`.

Times may be given as dates (`2026-11-26`) or UTC instants; a date as upper bound means the
whole day. Unknown filters are refused rather than ignored, so a typo never widens a search.
"""

from __future__ import annotations

import re

from arkiv.counties import parse_county
from arkiv.errors import InvalidQuery
from storage.records import AuditQuery

FILTERS = frozenset(
    {"patient", "user", "county", "action", "outcome", "since", "until", "limit", "offset"}
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?Z?$")
_EVENT_CODE = re.compile(r"^1101\d\d$")


def bound(value: str, upper: bool) -> str:
    """A date or instant as the string the log's `recorded_at` compares against."""
    value = value.strip()
    if _DATE.match(value):
        return f"{value}T23:59:59.999999Z" if upper else f"{value}T00:00:00.000000Z"
    if _INSTANT.match(value):
        return value if value.endswith("Z") else f"{value}Z"
    raise InvalidQuery(f"time {value!r} must be YYYY-MM-DD or YYYY-MM-DDThh:mm:ssZ (UTC)")


def audit_query(params: dict[str, str], max_limit: int = 1000) -> AuditQuery:
    unknown = set(params) - FILTERS
    if unknown:
        raise InvalidQuery(f"unknown audit filter(s): {', '.join(sorted(unknown))}")
    try:
        outcome = int(params["outcome"]) if params.get("outcome") else None
        limit = int(params.get("limit") or 100)
        offset = int(params.get("offset") or 0)
    except ValueError:
        raise InvalidQuery("outcome, limit and offset must be whole numbers") from None
    if not 1 <= limit <= max_limit or offset < 0:
        raise InvalidQuery(f"limit must be 1 to {max_limit} and offset not negative")
    if outcome is not None and outcome not in (0, 4, 8, 12):
        raise InvalidQuery("outcome must be 0, 4, 8 or 12 (PS3.15 EventOutcomeIndicator)")
    action = (params.get("action") or "").strip().upper()
    event_id = action_letter = None
    if action:
        if _EVENT_CODE.match(action):
            event_id = action
        elif action in ("C", "R", "U", "D", "E"):
            action_letter = action
        else:
            raise InvalidQuery("action must be a PS3.15 event code (1101xx) or C, R, U, D, E")
    county = params.get("county") or None
    if county:
        try:
            county = parse_county(county).value
        except ValueError as exc:
            raise InvalidQuery(str(exc)) from None
    return AuditQuery(
        patient_id=(params.get("patient") or "").strip() or None,
        actor=(params.get("user") or "").strip() or None,
        county=county,
        event_id=event_id,
        action=action_letter,
        outcome=outcome,
        since=bound(params["since"], upper=False) if params.get("since") else None,
        until=bound(params["until"], upper=True) if params.get("until") else None,
        limit=limit,
        offset=offset,
    )
