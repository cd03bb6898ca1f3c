"""The auditors' search on the index: time ranges walk only part of the log, and still find every
event in the range even when writers recorded their times slightly out of order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from arkiv import audit
from arkiv.audit import Actor, Event, EventType, Outcome
from arkiv.clock import iso
from arkiv.services import Archive
from storage.records import AuditQuery

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

pytestmark = pytest.mark.both_backends


def test_time_ranges_find_exactly_the_events_in_them(
    archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(7)
    times: list[str] = []
    for n in range(400):
        # Appended in order, stamped up to five minutes early (a writer waiting for the lock).
        moment = START + timedelta(minutes=n) - timedelta(seconds=rng.randint(0, 300))
        times.append(iso(moment))
    clock = iter(times)
    monkeypatch.setattr(audit, "now_iso", lambda: next(clock))
    actor = Actor(name="tannlege", kind="user", county="vestfold")
    for n in range(400):
        outcome = Outcome.SERIOUS_FAILURE if n % 37 == 0 else Outcome.SUCCESS
        archive.audit.record(Event(EventType.QUERY, "E", actor, outcome=outcome, query=str(n)))
    stamped = {e.seq: e.recorded_at for e in archive.index.iter_audit_events()}
    for _ in range(60):
        a, b = sorted(rng.sample(range(-20, 420), 2))
        since = iso(START + timedelta(minutes=a, seconds=rng.randint(0, 59)))
        until = iso(START + timedelta(minutes=b, seconds=rng.randint(0, 59)))
        found = archive.index.find_audit_events(AuditQuery(since=since, until=until, limit=1000))
        expected = sorted((s for s, t in stamped.items() if since <= t <= until), reverse=True)
        assert [e.seq for e in found] == expected, (since, until)
    failures = archive.index.find_audit_events(AuditQuery(min_outcome=Outcome.SERIOUS_FAILURE))
    assert [e.seq for e in failures] == sorted(
        (n + 1 for n in range(400) if n % 37 == 0), reverse=True
    )


def test_a_range_after_the_last_event_is_empty(archive: Archive) -> None:
    archive.audit.record(Event(EventType.QUERY, "E", Actor("a", "user", "vestfold")))
    later = iso(datetime.now(UTC) + timedelta(days=1))
    assert archive.index.find_audit_events(AuditQuery(since=later)) == []
    assert len(archive.index.find_audit_events(AuditQuery(until=later))) == 1


def test_patients_and_counties_of_each_event_find_it(archive: Archive) -> None:
    """Each event is filed under every patient and county it concerns (on PostgreSQL all in the
    one statement that appends it), and the chain still verifies."""
    telemark = Actor(name="tm-tannlege", kind="user", county="telemark")
    vestfold = Actor(name="vf-tannlege", kind="user", county="vestfold")
    archive.audit.record(
        Event(EventType.QUERY, "E", vestfold, patient_ids=("01017012345", "02028054321"))
    )
    archive.audit.record(
        Event(
            EventType.INSTANCES_ACCESSED,
            "R",
            telemark,
            patient_ids=("01017012345",),
            counties=("vestfold", "buskerud"),
        )
    )
    archive.audit.record(Event(EventType.USER_AUTHENTICATION, "E", telemark))

    def seqs(query: AuditQuery) -> list[int]:
        return [e.seq for e in archive.index.find_audit_events(query)]

    assert seqs(AuditQuery(patient_id="01017012345")) == [2, 1]
    assert seqs(AuditQuery(patient_id="02028054321")) == [1]
    assert seqs(AuditQuery(county="buskerud")) == [2]
    assert seqs(AuditQuery(county="vestfold")) == [2, 1]
    assert seqs(AuditQuery(county="telemark")) == [3, 2]
    assert seqs(AuditQuery(county="vestfold", cross_county=True)) == [2]
    assert archive.audit.verify().ok
