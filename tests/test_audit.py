"""The audit log: append-only in the database, hash-chained, and `arkiv audit verify` names the
first event that was edited, deleted, reordered or cut off."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from arkiv.audit import Actor, Event, EventType, Outcome
from arkiv.config import Settings
from arkiv.services import Archive

ACTOR = Actor(
    name="tannlege1", kind="user", county="vestfold", address="127.0.0.1", role="clinician"
)


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[Path]:
    """A data directory whose log holds ten events."""
    data = tmp_path / "data"
    archive = Archive(Settings(data_dir=data))
    for number in range(10):
        archive.audit.record(
            Event(
                EventType.INSTANCES_ACCESSED,
                "R",
                ACTOR,
                patient_ids=(f"P{number}",),
                study_uids=(f"1.2.3.{number}",),
                object_count=1,
                details={"purpose": "rendered", "n": number},
            )
        )
    archive.close()
    yield data


def _verify(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arkiv.cli", "audit", "verify", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _tamper(data: Path, *statements: str) -> None:
    """What an intruder with write access to the database file could do: drop the guards."""
    db = sqlite3.connect(data / "index.sqlite3")
    for trigger in (
        "audit_events_no_update",
        "audit_events_no_delete",
        "audit_patients_no_delete",
        "audit_chain_head_no_delete",
    ):
        db.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def test_intact_log_verifies(logged: Path) -> None:
    result = _verify(logged)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "intact: 10 events" in result.stdout


def test_database_refuses_updates_and_deletes(logged: Path) -> None:
    db = sqlite3.connect(logged / "index.sqlite3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit_events SET actor = 'someone' WHERE seq = 3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit_events WHERE seq = 3")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit_chain_head")
    # Grants and checkpoints are evidence too: once written, never changed.
    db.execute(
        "INSERT INTO audit_checkpoints (seq, head_hash, signed_at, key_id, note) "
        "VALUES (1, 'h', 't', 'k', 'n')"
    )
    db.execute(
        "INSERT INTO break_glass_grants (username, user_county, patient_id, reason_code, "
        "reason_text, granted_at, expires_at, audit_seq) "
        "VALUES ('u', 'vestfold', 'p', 'akutt', '', 't', 't', 1)"
    )
    for table, change in (
        ("audit_counties", "county = 'telemark'"),
        ("audit_checkpoints", "head_hash = 'x'"),
        ("break_glass_grants", "expires_at = '9999'"),
    ):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(f"UPDATE {table} SET {change}")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(f"DELETE FROM {table}")
    db.close()


def test_edited_event_is_named(logged: Path) -> None:
    _tamper(logged, "UPDATE audit_events SET actor = 'someone-else' WHERE seq = 4")
    result = _verify(logged)
    assert result.returncode == 1
    assert "BROKEN at event 4" in result.stdout
    assert "altered" in result.stdout


def test_edited_details_are_named(logged: Path) -> None:
    _tamper(logged, 'UPDATE audit_events SET details = \'{"n": 6, "purpose": "x"}\' WHERE seq = 7')
    assert "BROKEN at event 7" in _verify(logged).stdout


def test_deleted_event_is_named(logged: Path) -> None:
    _tamper(
        logged, "DELETE FROM audit_patients WHERE seq = 5", "DELETE FROM audit_events WHERE seq = 5"
    )
    result = _verify(logged)
    assert result.returncode == 1
    assert "BROKEN at event 5" in result.stdout
    assert "missing" in result.stdout


def test_deleted_and_renumbered_events_are_named(logged: Path) -> None:
    """Closing the gap by renumbering does not help: the links no longer match."""
    _tamper(
        logged,
        "DELETE FROM audit_patients",
        "DELETE FROM audit_events WHERE seq = 5",
        *[f"UPDATE audit_events SET seq = {n - 1} WHERE seq = {n}" for n in range(6, 11)],
        "UPDATE audit_chain_head SET seq = 9",
    )
    result = _verify(logged)
    assert result.returncode == 1
    assert "BROKEN at event 5" in result.stdout


def test_reordered_events_are_named(logged: Path) -> None:
    _tamper(
        logged,
        "DELETE FROM audit_patients",
        "UPDATE audit_events SET seq = -1 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 6",
        "UPDATE audit_events SET seq = 6 WHERE seq = -1",
    )
    result = _verify(logged)
    assert result.returncode == 1
    assert "BROKEN at event 3" in result.stdout


def test_truncated_tail_is_named(logged: Path) -> None:
    _tamper(
        logged,
        "DELETE FROM audit_patients WHERE seq >= 9",
        "DELETE FROM audit_events WHERE seq >= 9",
    )
    result = _verify(logged)
    assert result.returncode == 1
    assert "BROKEN at event 9" in result.stdout
    assert "removed from the end" in result.stdout


def test_chain_survives_concurrent_writers(tmp_path: Path) -> None:
    """Appenders in many threads line up on the chain head: no gaps, no forks."""
    import threading

    archive = Archive(Settings(data_dir=tmp_path / "data"))

    def write(worker: int) -> None:
        for n in range(25):
            archive.audit.record(
                Event(
                    EventType.QUERY,
                    "E",
                    ACTOR,
                    outcome=Outcome.SUCCESS,
                    query=f"worker {worker} query {n}",
                )
            )

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = archive.audit.verify()
    archive.close()
    assert report.ok, report.reason
    assert report.checked == 100
