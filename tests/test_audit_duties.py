"""The audit duties in one process per index: the lease they are held under, failover when the
holder stops or dies, and the forwarding cursor that moves with them.

Leases are tried on the embedded SQLite file and on a real PostgreSQL (the session's server,
a database per test); the end-to-end test runs two `arkiv web` processes on PostgreSQL and MinIO
and kills the one signing checkpoints.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from arkiv.audit import Event, EventType
from arkiv.audit_checkpoint import (
    CHECKPOINT_DIR,
    NoteVerifier,
    key_id,
    load_or_create_signing_key,
    verify_stored_checkpoints,
)
from arkiv.audit_duties import LEASE_NAME, AuditDuties
from arkiv.config import Settings
from arkiv.services import Archive
from storage.index import Index
from storage.leases import PostgresLease, open_lease, this_process
from tests.conftest import backend_settings, free_port
from tests.servers import PostgresServer
from tests.test_audit_syslog import (
    CLINICIAN,
    Pki,
    Rsyslog,
    _seq_of,
    cursor_seq,
    make_pki,
)

REPO = Path(__file__).resolve().parent.parent
ARKIV = [sys.executable, "-m", "arkiv.cli"]
RETRY = 0.1
"""The lease retry interval of the in-process tests, in seconds."""


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.05)


@pytest.fixture(params=["sqlite", "postgresql"])
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An index URL: an SQLite file, or a fresh database on the session's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'index.sqlite3'}"
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    database = postgres.create_database()
    try:
        yield postgres.url(database)
    finally:
        postgres.drop_database(database)


@pytest.fixture
def index(index_url: str) -> Iterator[Index]:
    opened = Index(index_url)
    try:
        yield opened
    finally:
        opened.close()


# -- leases ----------------------------------------------------------------------------------------


def test_two_leases_on_one_index_exactly_one_is_held(index: Index) -> None:
    with index.lease(LEASE_NAME) as first, index.lease(LEASE_NAME) as second:
        assert first.held()
        assert not second.held()
        assert first.held(), "the holder keeps it"
        assert not second.held()
        holder = second.holder()
        assert holder and this_process().startswith(holder)
        with index.lease("another-role") as other:
            assert other.held(), "leases of other names are independent"


def test_the_holders_release_lets_the_other_take_it(index: Index) -> None:
    first, second = index.lease(LEASE_NAME), index.lease(LEASE_NAME)
    try:
        assert first.held() and not second.held()
        first.release()
        assert second.held()
        assert not first.held(), "the old holder does not take it back while it is held"
        second.close()
        assert first.held()
    finally:
        first.close()
        second.close()


def test_a_killed_postgresql_connection_hands_the_lease_over(
    postgres_server: PostgresServer,
) -> None:
    database = postgres_server.create_database()
    index = Index(postgres_server.url(database))
    first, second = index.lease(LEASE_NAME), index.lease(LEASE_NAME)
    try:
        assert isinstance(first, PostgresLease)
        assert first.held() and not second.held()
        with psycopg.connect(postgres_server.dsn(database), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first.backend_pid,))
        wait_until(second.held, 10, "the other lease to take over")
        assert not first.held(), "the old holder notices it lost the lease"
        second.release()
        assert first.held(), "and takes it again, on a new connection, when it is free"
    finally:
        first.close()
        second.close()
        index.close()
        postgres_server.drop_database(database)


_HOLD = """
import sys
from storage.index import Index
lease = Index(sys.argv[1]).lease(sys.argv[2])
assert lease.held()
print("held", flush=True)
sys.stdin.read()
"""


def test_an_sqlite_lease_is_held_across_processes_until_the_holder_dies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    index = Index(url)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, url, LEASE_NAME],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    lease = index.lease(LEASE_NAME)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        assert not lease.held()
        assert f"pid {holder.pid}" in lease.holder()
        os.kill(holder.pid, signal.SIGKILL)  # as a crash would end it: no release
        holder.wait(10)
        wait_until(lease.held, 5, "the lease of a dead holder to be free")
        assert (tmp_path / f"index.sqlite3.lease-{LEASE_NAME}").exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        lease.close()
        index.close()


def test_an_sqlite_lease_whose_file_was_replaced_is_lost_then_taken_again(tmp_path: Path) -> None:
    index = Index(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    with index.lease(LEASE_NAME) as lease:
        assert lease.held()
        (tmp_path / f"index.sqlite3.lease-{LEASE_NAME}").unlink()  # the lock now guards nothing
        assert not lease.held(), "the loss is reported once"
        assert lease.held(), "then the lease is taken on the file now in place"
        with index.lease(LEASE_NAME) as other:
            assert not other.held()
    index.close()


def test_an_in_memory_index_always_holds_its_leases() -> None:
    first, second = (
        open_lease("sqlite:///:memory:", LEASE_NAME),
        open_lease("sqlite:///:memory:", LEASE_NAME),
    )
    assert first.held() and second.held()


def test_the_forward_cursor_row_moves_in_place(index: Index) -> None:
    assert index.forward_cursor("syslog") is None
    with index.transaction() as tx:
        tx.set_forward_cursor("syslog", 3, "a" * 64, "2026-01-01T00:00:00.000000Z")
    with index.transaction() as tx:
        tx.set_forward_cursor("syslog", 7, "b" * 64, "2026-01-01T00:00:01.000000Z")
    assert index.forward_cursor("syslog") == (7, "b" * 64)
    assert index.forward_cursor("other") is None


# -- the duties in one process among several -------------------------------------------------------


def _node(data_dir: Path, index_url: str, key: Path, **overrides: Any) -> Archive:
    """An archive as one node runs it: its own data directory, the shared index and key."""
    return Archive(
        Settings(
            data_dir=data_dir,
            database_url=index_url,
            audit_checkpoint_minutes=0.002,  # every 0.12 s
            audit_signing_key_file=str(key),
            **overrides,
        )
    )


def _notes(archive: Archive) -> list[Path]:
    return sorted((archive.settings.data_dir / CHECKPOINT_DIR).glob("*.note"))


def _record(archive: Archive, count: int) -> int:
    for _ in range(count):
        archive.audit.record(Event(EventType.APPLICATION_ACTIVITY, "E", CLINICIAN))
    return archive.index.audit_head()[0]


def _signed_through(archive: Archive, seq: int) -> Callable[[], bool]:
    return lambda: archive.index.latest_checkpoint_seq() >= seq


def test_one_node_signs_and_the_other_takes_over_when_it_stops(
    tmp_path: Path, index_url: str
) -> None:
    key = tmp_path / "shared-signing-key.pem"
    nodes = [_node(tmp_path / name, index_url, key) for name in ("a", "b")]
    duties = [AuditDuties(node, retry_seconds=RETRY) for node in nodes]
    try:
        for each in duties:
            each.start()
        assert [each.running for each in duties] == [True, False]
        first, second = nodes
        wait_until(_signed_through(first, _record(first, 3)), what="the holder to sign")
        time.sleep(5 * RETRY)
        assert duties[0].running and not duties[1].running
        assert _notes(first) and not _notes(second), "only the holder signs"

        _record(second, 2)
        duties[0].stop()  # the holder stops: its last checkpoint covers everything so far
        assert first.index.latest_checkpoint_seq() == first.index.audit_head()[0]
        wait_until(lambda: duties[1].running, 5, "the other node to take over")
        wait_until(_signed_through(second, _record(second, 4)), what="the new holder to sign")
        # The note file is written just after the checkpoint row commits, so wait for it too.
        wait_until(lambda: bool(_notes(second)), 5, "the new holder's note file")

        public = load_or_create_signing_key(key).public_key()
        report = verify_stored_checkpoints(second.index, NoteVerifier(public))
        assert report.ok, report.reason
        assert report.unchecked == 0, "every checkpoint is signed by the one shared key"
        assert {c.key_id for c in second.index.checkpoints()} == {key_id(public)}
    finally:
        for each in duties:
            each.stop()
        for node in nodes:
            node.close()


def test_a_holder_that_loses_the_lease_stops_its_duties(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    database = postgres_server.create_database()
    url = postgres_server.url(database)
    key = tmp_path / "shared-signing-key.pem"
    nodes = [_node(tmp_path / name, url, key) for name in ("a", "b")]
    lease = nodes[0].index.lease(LEASE_NAME)
    assert isinstance(lease, PostgresLease)
    # The holder checks less often than the other node, which thus sees the lock free first.
    duties = [
        AuditDuties(nodes[0], retry_seconds=10 * RETRY, lease=lease),
        AuditDuties(nodes[1], retry_seconds=RETRY),
    ]
    try:
        for each in duties:
            each.start()
        assert [each.running for each in duties] == [True, False]
        with psycopg.connect(postgres_server.dsn(database), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (lease.backend_pid,))
        wait_until(lambda: duties[1].running, 10, "the other node to take over")
        wait_until(lambda: not duties[0].running, 10, "the old holder to notice")
        for _ in range(30):  # and it stays that way, though the old holder tries again
            time.sleep(RETRY)
            assert duties[1].running and not duties[0].running
    finally:
        for each in duties:
            each.stop()
        for node in nodes:
            node.close()
        postgres_server.drop_database(database)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def receiver(tmp_path: Path, pki: Pki) -> Iterator[Rsyslog]:
    started = Rsyslog(tmp_path / "repository", free_port(), pki.ca, pki.server.cert, pki.server.key)
    started.start()
    try:
        yield started
    finally:
        started.stop()


def test_forwarding_fails_over_and_resumes_from_the_cursor_in_the_index(
    tmp_path: Path, pki: Pki, receiver: Rsyslog
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    syslog = {
        "audit_syslog_host": "127.0.0.1",
        "audit_syslog_port": receiver.port,
        "audit_syslog_ca_file": str(pki.ca),
        "audit_syslog_cert_file": str(pki.client.cert),
        "audit_syslog_key_file": str(pki.client.key),
    }
    key = tmp_path / "shared-signing-key.pem"
    nodes = [_node(tmp_path / name, url, key, **syslog) for name in ("a", "b")]
    duties = [AuditDuties(node, retry_seconds=RETRY) for node in nodes]
    try:
        for each in duties:
            each.start()
        first, second = nodes
        assert first.audit_forwarder is not None, "the holder's forwarder, for monitoring"
        assert second.audit_forwarder is None
        head = _record(first, 5)
        first.audit_forwarder.wake()
        receiver.wait_for(head)
        wait_until(lambda: cursor_seq(first.index) == head, what="the cursor to move")

        head = _record(second, 3)
        duties[0].stop()  # sends what is left, then gives the duties up
        wait_until(lambda: second.audit_forwarder is not None, 5, "the other node to take over")
        assert first.audit_forwarder is None
        head = _record(second, 4)
        receiver.wait_for(head)
        time.sleep(0.5)  # anything sent twice would be written by now
        assert [_seq_of(m) for m in receiver.messages()] == list(range(1, head + 1))
    finally:
        for each in duties:
            each.stop()
        for node in nodes:
            node.close()


# -- end to end: two `arkiv web` processes on PostgreSQL and MinIO --------------------------------


def _start_web(data: Path, settings: Settings) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    data.mkdir(parents=True)
    log = data.with_suffix(".log")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*ARKIV, "web", "--host", "127.0.0.1", "--http-port", str(port)],
            env={**os.environ, **settings.as_environment()},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, port, log


def _web_ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.mark.slow
def test_two_web_nodes_one_signs_and_the_other_takes_over_when_it_is_killed(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    retry = 1.0
    key = tmp_path / "shared" / "audit-signing-key.pem"
    public = load_or_create_signing_key(key).public_key()
    with backend_settings(request, "scaleout") as overrides:
        check = Archive(
            Settings(data_dir=tmp_path / "check", audit_checkpoint_minutes=0, **overrides)
        )
        processes: list[subprocess.Popen[bytes]] = []
        try:
            nodes = []
            for name in ("web1", "web2"):
                data = tmp_path / name
                settings = Settings(
                    data_dir=data,
                    secure_cookies=False,
                    audit_checkpoint_minutes=0.02,  # every 1.2 s
                    audit_duties_retry_seconds=retry,
                    audit_signing_key_file=str(key),
                    **overrides,
                )
                process, port, log = _start_web(data, settings)
                processes.append(process)
                nodes.append((process, port, log, data))
            for process, port, log, _ in nodes:
                deadline = time.monotonic() + 60
                while not _web_ready(port):
                    assert process.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, f"node did not start:\n{log.read_text()}"
                    time.sleep(0.2)

            def notes(data: Path) -> list[Path]:
                return sorted((data / CHECKPOINT_DIR).glob("*.note"))

            def record(count: int) -> int:
                for _ in range(count):
                    check.record_application_event("test activity")
                return check.index.audit_head()[0]

            head = record(3)
            wait_until(_signed_through(check, head), 30, "a node to sign")
            time.sleep(3)  # a few more periods: would the other node sign too?
            signing = [n for n in nodes if notes(n[3])]
            assert len(signing) == 1, "exactly one node signs checkpoints"
            [(holder, _, holder_log, _)] = signing
            [(survivor, _, survivor_log, survivor_data)] = [n for n in nodes if n not in signing]
            report = verify_stored_checkpoints(check.index, NoteVerifier(public))
            assert report.ok and report.unchecked == 0, report.reason
            assert "stands by" in survivor_log.read_text()

            _stop_group(holder, signal.SIGKILL)
            killed_at = time.monotonic()
            head = record(3)
            wait_until(_signed_through(check, head), 3 * retry + 10, "the survivor to sign")
            took = time.monotonic() - killed_at
            assert notes(survivor_data), "the surviving node signs now"
            assert "TAKEN OVER" in survivor_log.read_text()
            assert took < 3 * retry + 10

            _stop_group(survivor, signal.SIGTERM)
            assert survivor.returncode == 0, survivor_log.read_text()
            # The last checkpoint covers the survivor's Application Stop event.
            assert check.index.latest_checkpoint_seq() == check.index.audit_head()[0]
            report = verify_stored_checkpoints(check.index, NoteVerifier(public))
            assert report.ok, report.reason
            assert report.unchecked == 0, "all checkpoints verify with the one shared key"
            assert len(report.checkpoints) >= 3
            assert "Traceback" not in holder_log.read_text() + survivor_log.read_text()
        finally:
            for process in processes:
                _stop_group(process, signal.SIGKILL)
            check.close()
