"""The audit benchmark at toy sizes, so that its code cannot rot between the runs that matter.

No timings are checked here (the machine is shared); what is checked is that each section runs,
counts what it claims to count, and that the bulk loader writes exactly the rows the archive's
own append path writes, so that the searches it times run on a log like the real one.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from arkiv.audit import Actor, Event, EventType, Outcome, chain_hash
from arkiv.config import Settings
from arkiv.services import Archive
from bench import audit as bench
from storage.audit_bulk import bulk_append_audit
from storage.index import json_strings
from storage.records import AuditEvent, NewAuditEvent

pytestmark = pytest.mark.timeout(600)


def _quiet(_text: str) -> None:
    pass


def _rows(database: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(database) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()


def _as_new(event: AuditEvent) -> NewAuditEvent:
    fields = {k: v for k, v in vars(event).items() if k not in ("seq", "prev_hash", "hash")}
    return NewAuditEvent(**fields)


def test_json_strings_match_json_dumps() -> None:
    for values in [(), ("01017012345",), ("vestfold", "telemark"), ('a"b', "æøå", "x\\y")]:
        assert json_strings(values) == json.dumps(list(values))


def test_bulk_loader_writes_the_rows_the_archive_writes(tmp_path: Path) -> None:
    """Events appended one by one by the product, then the same events bulk-loaded elsewhere:
    every row of every audit table, the chain head and the set of indexes are the same."""
    actor = Actor("tannlege1", "user", "vestfold", "10.0.0.1", "clinician")
    real = Archive(Settings(data_dir=tmp_path / "real"))
    for n in range(25):
        real.audit.record(
            Event(
                EventType.INSTANCES_ACCESSED if n % 3 else EventType.QUERY,
                "R",
                actor,
                outcome=Outcome.MINOR_FAILURE if n == 7 else Outcome.SUCCESS,
                patient_ids=(f"0101701234{n % 4}", f"0202802345{n % 3}")[: 1 + n % 2],
                study_uids=(f"1.2.3.{n}",),
                object_count=n,
                query="PatientName=Ødegård*" if n == 4 else "",
                details={"purpose": "thumbnail", "n": n, "nested": {"b": [1, 2], "a": "ø"}},
                counties=("telemark",) if n % 5 == 0 else (),
            )
        )
    events = [_as_new(e) for e in real.index.iter_audit_events()]
    head = real.index.audit_head()
    real.close()

    loaded_url = Settings(data_dir=tmp_path / "loaded").index_url
    result = bulk_append_audit(loaded_url, iter(events), chain_hash, batch_size=7)
    assert (result.events, result.first_seq, result.last_seq) == (25, 1, 25)
    assert result.head_hash == head[1]

    real_db, loaded_db = tmp_path / "real/index.sqlite3", tmp_path / "loaded/index.sqlite3"
    for table in ("audit_events", "audit_patients", "audit_counties", "audit_chain_head"):
        assert _rows(loaded_db, table) == _rows(real_db, table), table
    schema = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    with sqlite3.connect(real_db) as a, sqlite3.connect(loaded_db) as b:
        assert a.execute(schema).fetchall() == b.execute(schema).fetchall()
        assert b.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    loaded = Archive(Settings(data_dir=tmp_path / "loaded"))
    try:
        loaded.audit.record(Event(EventType.APPLICATION_ACTIVITY, "E", actor))  # appends after
        report = loaded.audit.verify()
    finally:
        loaded.close()
    assert report.ok and report.checked == 26


def test_synthetic_log_is_ordered_and_exact() -> None:
    log = bench.SyntheticLog(3000, seed=7, patients=400, clinicians=30)
    events = list(log.events())
    assert len(events) == 3000 == log.stats.events
    times = [e.recorded_at for e in events]
    assert times == sorted(times)
    assert all(e.county in e.counties and list(e.counties) == sorted(e.counties) for e in events)
    assert {"110103", "110104", "110112"} <= set(log.stats.by_type)
    again = bench.SyntheticLog(3000, seed=7, patients=400, clinicians=30)
    assert [e.recorded_at for e in again.events()] == times  # deterministic for a seed


def test_append_cost(tmp_path: Path) -> None:
    cost = bench.bench_append(tmp_path, events=5, rounds=1)
    assert cost.events == 5 and cost.own_transaction_ms > 0 and cost.in_transaction_ms > 0
    assert not (tmp_path / "append").exists()


def test_ingest_and_reads_with_and_without_audit(tmp_path: Path) -> None:
    images = bench.tiny_images(6, patients=2)
    runs = bench.bench_ingest(images, 2, tmp_path, report=_quiet)
    assert [(r.repetition, r.audited) for r in runs] == [
        (1, True),
        (1, False),
        (2, True),
        (2, False),
    ]
    assert all(r.audit_events == (6 if r.audited else 0) for r in runs)
    assert all(len(r.latencies_ms) == 6 for r in runs)
    summary = bench.summarize_ingest(runs)
    assert summary["objects"] == 6 and summary["with_audit_objects_per_s"] > 0

    reads = bench.bench_reads(images, 1, tmp_path, max_reads=4, report=_quiet)
    assert {(r.case, r.audited) for r in reads} == {
        (case, audited) for case in bench.READ_CASES for audited in (True, False)
    }
    for r in reads:
        assert r.operations == 4
        if not r.audited:
            assert r.audit_events == 0
        elif r.case == "thumbnail, grouped":
            assert r.audit_events <= 2  # one per series, and only if a window ended meanwhile
        else:
            assert r.audit_events == 4
    rows = bench.summarize_reads(reads)
    assert [row["case"] for row in rows] == list(bench.READ_CASES)


def test_verify_and_search_on_a_cached_log(tmp_path: Path) -> None:
    log = bench.ensure_log(4000, 11, tmp_path / "cache", tmp_path, report=_quiet)
    assert not log.reused and log.manifest["events"] == 4000
    again = bench.ensure_log(4000, 11, tmp_path / "cache", tmp_path, report=_quiet)
    assert again.reused and again.data_dir == log.data_dir

    runs = bench.bench_verify(log, 1, report=_quiet)
    assert runs[0].ok and runs[0].events == 4000

    results = bench.bench_search(log, cold=1, warm=1, slow_ms=0.0, report=_quiet)
    assert len(results) == len(bench.search_cases(log.manifest))
    by_patient = results[0]
    assert by_patient.rows > 0 and by_patient.plans  # slow_ms=0: every search gets its plan
    assert any("SCAN" in line or "SEARCH" in line for line in by_patient.plans[0]["plan"])
    # the searches were audited into the log (110101), and the chain is still whole
    assert bench.bench_verify(log, 1, report=_quiet)[0].events > 4000


def test_command_line_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "audit.json"
    argv = [
        "--image-sets", "tiny", "--tiny", "3", "--reads", "2", "--repeat", "1",
        "--events", "1500", "--verify-events", "1500", "--verify-repeat", "1",
        "--cold", "1", "--warm", "1", "--cache-dir", str(tmp_path / "cache"),
        "--tmp-dir", str(tmp_path / "tmp"), "--json", str(out),
    ]  # fmt: skip
    assert bench.main(argv) == 0
    doc = json.loads(out.read_text())
    assert {"ingest", "reads", "verify", "search"} <= set(doc)
    assert doc["verify"]["runs"][0]["ok"]
