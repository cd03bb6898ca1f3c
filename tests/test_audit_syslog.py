"""Forwarding the audit log to a real audit record repository: rsyslogd (Debian's `rsyslog` with
its GnuTLS driver) on a loopback port, speaking RFC 5425 syslog over mutually authenticated TLS.

The tests start their own rsyslogd with their own configuration, certificates (made here with
`cryptography`), pid file and work directory, and read what it wrote to a file. rsyslogd is
required: without it a test fails and names `make test`, which installs it; it never skips.
"""

from __future__ import annotations

import base64
import glob
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from arkiv.audit import Actor, Event, EventType, Outcome
from arkiv.audit_syslog import (
    CURSOR_FILE,
    CURSOR_NAME,
    SyslogForwarder,
    SyslogUnavailable,
    syslog_frame,
)
from arkiv.config import Settings
from arkiv.services import Archive
from storage.index import Index
from storage.records import AuditEvent
from tests.conftest import free_port
from tests.pki import Authority, Issued

CLINICIAN = Actor(
    name="tannlege1", kind="user", county="vestfold", address="10.20.30.40", role="clinician"
)
MODALITY = Actor(name="SENSOR_IO1", kind="dicom-ae", county="telemark", address="10.9.8.7")
HOSTNAME = "arkiv-test-node"
FNR = "01017012345"


# -- certificates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Issued
    client: Issued
    foreign_server: Issued
    """Issued by another CA than the one the archive trusts."""


def make_pki(directory: Path) -> Pki:
    """Our CA with a receiver and a client certificate, and a receiver certificate of another."""
    ours = Authority(directory, "ours")
    other = Authority(directory, "other")
    return Pki(
        ca=ours.pem,
        server=ours.issue("audit-repository", server=True),
        client=ours.issue("arkiv", server=False),
        foreign_server=other.issue("impostor", server=True),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- rsyslogd ------------------------------------------------------------------------------------


def _rsyslogd() -> str:
    """rsyslogd and its GnuTLS driver, or a failure that says how to get them."""
    path = shutil.which("rsyslogd") or next(
        (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.access(p, os.X_OK)), None
    )
    if path is None:
        pytest.fail("rsyslogd is not installed: run `make test` (it installs rsyslog)")
    if not glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so") + glob.glob(
        "/usr/lib/rsyslog/lmnsd_gtls.so"
    ):
        pytest.fail(
            "rsyslog's GnuTLS driver is not installed: run `make test` (it installs rsyslog-gnutls)"
        )
    return path


_FIELDS = {
    "pri": "%pri%",
    "version": "%protocol-version%",
    "timestamp": "%timereported:::date-rfc3339%",
    "hostname": "%hostname:::json%",
    "app": "%app-name:::json%",
    "procid": "%procid:::json%",
    "msgid": "%msgid:::json%",
    "sd": "%structured-data:::json%",
    "msg": "%msg:::json%",
    "raw": "%rawmsg:::json%",
}
_TEMPLATE = (
    "{" + ",".join(f'\\"{name}\\":\\"{value}\\"' for name, value in _FIELDS.items()) + "}\\n"
)
"""One JSON object per received message, escaped for an rsyslog string template."""


class Rsyslog:
    """One rsyslogd of our own: TLS-only `imtcp` on a loopback port, client certificates required
    (`x509/certvalid`: signed by the configured CA), every message written as one JSON line."""

    def __init__(self, directory: Path, port: int, ca: Path, cert: Path, key: Path) -> None:
        self.directory = directory
        self.port = port
        self.output = directory / "received.jsonl"
        self.pid_file = directory / "rsyslogd.pid"
        self.log_file = directory / "rsyslogd.log"
        work = directory / "work"
        work.mkdir(parents=True, exist_ok=True)
        self.config = directory / "rsyslog.conf"
        self.config.write_text(
            f"""
global(
    workDirectory="{work}"
    maxMessageSize="256k"
    defaultNetstreamDriver="gtls"
    defaultNetstreamDriverCAFile="{ca}"
    defaultNetstreamDriverCertFile="{cert}"
    defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp"
       streamDriver.name="gtls"
       streamDriver.mode="1"
       streamDriver.authMode="x509/certvalid"
       maxSessions="20")
template(name="audit" type="string" string="{_TEMPLATE}")
ruleset(name="audit") {{
    action(type="omfile" file="{self.output}" template="audit")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="audit")
""",
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = _rsyslogd()
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, "-n", "-f", str(self.config), "-i", str(self.pid_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 15
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"rsyslogd exited with {self.process.returncode}:\n{self._log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"rsyslogd did not listen on port {self.port}:\n{self._log()}")
                time.sleep(0.05)

    def kill(self) -> None:
        """Kill our rsyslogd by its process id, as a crash would end it."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def _log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def messages(self) -> list[dict[str, str]]:
        if not self.output.exists():
            return []
        lines = self.output.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while True:
            received = self.messages()
            if len(received) >= count:
                return received
            if time.monotonic() > deadline:
                pytest.fail(f"rsyslogd wrote {len(received)} of {count} messages:\n{self._log()}")
            time.sleep(0.05)


@pytest.fixture
def receiver_factory(
    tmp_path: Path,
) -> Iterator[Callable[[str, Path, Issued, int], Rsyslog]]:
    _rsyslogd()  # fail at once, naming `make test`, when rsyslog is missing
    started: list[Rsyslog] = []

    def make(name: str, ca: Path, server: Issued, port: int) -> Rsyslog:
        receiver = Rsyslog(tmp_path / name, port, ca, server.cert, server.key)
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop()


# -- helpers -------------------------------------------------------------------------------------


def _settings(
    tmp_path: Path,
    pki: Pki,
    port: int,
    *,
    client_cert: bool = True,
    data_dir: Path | None = None,
    database_url: str = "",
) -> Settings:
    return Settings(
        data_dir=data_dir or tmp_path / "data",
        database_url=database_url,
        audit_syslog_host="127.0.0.1",
        audit_syslog_port=port,
        audit_syslog_ca_file=str(pki.ca),
        audit_syslog_cert_file=str(pki.client.cert) if client_cert else "",
        audit_syslog_key_file=str(pki.client.key) if client_cert else "",
    )


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def archive_with_syslog(tmp_path: Path, pki: Pki, port: int) -> Iterator[Archive]:
    archive = Archive(_settings(tmp_path, pki, port))
    try:
        yield archive
    finally:
        archive.close()


def _record_events(archive: Archive, count: int, start: int = 0) -> list[AuditEvent]:
    recorded = []
    for number in range(start, start + count):
        if number % 3 == 2:
            event = Event(
                EventType.INSTANCES_TRANSFERRED,
                "C",
                MODALITY,
                patient_ids=(f"PAT-{number}",),
                study_uids=(f"1.2.826.0.1.3680043.10.{number}",),
                object_count=1,
            )
        else:
            event = Event(
                EventType.INSTANCES_ACCESSED,
                "R",
                CLINICIAN,
                outcome=Outcome.SUCCESS,
                outcome_description=f'lest <æøå> & "sitert" nr {number}',
                patient_ids=(FNR,),
                study_uids=(f"1.2.826.0.1.3680043.10.{number}",),
                object_count=2,
                details={"purpose": "retrieve", "series_uid": f"1.2.3.{number}"},
            )
        recorded.append(archive.audit.record(event))
    return recorded


def _forwarder(archive: Archive, *, fast_retries: bool = False) -> SyslogForwarder:
    """A forwarder as the archive would run it; `fast_retries` shrinks poll and back-off times
    so a test of the background thread does not wait the production 30 s cap."""
    if fast_retries:
        return SyslogForwarder(
            archive.index,
            archive.settings,
            hostname=HOSTNAME,
            poll_seconds=0.05,
            retry_initial_seconds=0.05,
            retry_max_seconds=0.3,
        )
    return SyslogForwarder(archive.index, archive.settings, hostname=HOSTNAME)


def _seq_of(message: dict[str, str]) -> int:
    root = ET.fromstring(message["msg"])
    for obj in root.iter("ParticipantObjectIdentification"):
        code = obj.find("ParticipantObjectIDTypeCode")
        if code is not None and code.get("csd-code") == "seq":
            return int(obj.get("ParticipantObjectID", ""))
    raise AssertionError(f"no sequence number in {message['msg'][:200]}")


def _cursor_seq(archive: Archive) -> int:
    """Where the forwarding cursor stands, as kept in the index (0: nothing taken yet)."""
    return cursor_seq(archive.index)


def cursor_seq(index: Index) -> int:
    stored = index.forward_cursor(CURSOR_NAME)
    return 0 if stored is None else stored[0]


# -- tests ---------------------------------------------------------------------------------------


def test_frame_is_octet_counted_rfc5424_with_the_audit_message() -> None:
    event = AuditEvent(
        seq=42,
        recorded_at="2026-11-26T13:04:49.123456Z",
        event_id="110114",
        event_name="User Authentication",
        action="E",
        outcome=0,
        outcome_description="",
        actor="tannlege1",
        actor_kind="user",
        actor_role="clinician",
        county="vestfold",
        source_address="10.0.0.1",
        patient_ids=(),
        study_uids=(),
        object_count=0,
        query="",
        details={"subtype": "110122 Login"},
        prev_hash="0" * 64,
        hash="f" * 64,
        counties=("vestfold",),
    )
    frame = syslog_frame(event, "ARKIV", "host name\twith junk", procid="1234")
    length, _, message = frame.partition(b" ")
    assert int(length) == len(message)
    assert not message.startswith(b"\xef\xbb\xbf")
    text = message.decode("utf-8")
    header, xml = text.split(" <?xml", 1)
    assert header == "<85>1 2026-11-26T13:04:49.123456Z hostnamewithjunk arkiv 1234 IHE+RFC-3881 -"
    root = ET.fromstring("<?xml" + xml)
    assert root.tag == "AuditMessage"
    event_id = root.find("EventIdentification/EventID")
    assert event_id is not None and event_id.get("csd-code") == "110114"
    subtype = root.find("EventIdentification/EventTypeCode")
    assert subtype is not None and subtype.get("csd-code") == "110122"


def test_events_arrive_in_order_with_framing_and_content(
    archive_with_syslog: Archive, pki: Pki, port: int, receiver_factory: Callable[..., Rsyslog]
) -> None:
    archive = archive_with_syslog
    receiver = receiver_factory("repository", pki.ca, pki.server, port)
    receiver.start()
    recorded = _record_events(archive, 6)
    # A query touching many patients: one message of about 50 kB, many TLS records.
    recorded.append(
        archive.audit.record(
            Event(
                EventType.QUERY,
                "E",
                CLINICIAN,
                patient_ids=tuple(f"0101{n:07d}" for n in range(200)),
                object_count=200,
                query="PatientName=Å*&limit=200",
                details={"level": "studies"},
            )
        )
    )
    forwarder = _forwarder(archive)
    try:
        assert forwarder.forward_pending() == len(recorded)
        received = receiver.wait_for(len(recorded))
        assert forwarder.forward_pending() == 0  # nothing is sent twice in normal operation
        state = forwarder.state()
    finally:
        forwarder.stop(flush=False)

    assert state.connected
    assert state.last_forwarded_seq == recorded[-1].seq
    assert state.lag == 0
    assert _cursor_seq(archive) == recorded[-1].seq
    assert [_seq_of(m) for m in received] == [e.seq for e in recorded]
    for event, message in zip(recorded, received, strict=True):
        expected = syslog_frame(event, archive.settings.ae_title, HOSTNAME, procid=str(os.getpid()))
        assert message["raw"].encode() == expected.partition(b" ")[2]  # frame boundaries kept
        assert message["pri"] == "85"
        assert message["version"] == "1"
        assert message["hostname"] == HOSTNAME
        assert message["app"] == "arkiv"
        assert message["msgid"] == "IHE+RFC-3881"
        assert message["sd"] == "-"
        assert message["timestamp"].startswith(event.recorded_at[:19])
        root = ET.fromstring(message["msg"])
        identification = root.find("EventIdentification")
        assert identification is not None
        assert identification.get("EventActionCode") == event.action
        assert identification.get("EventDateTime") == event.recorded_at
        event_id = identification.find("EventID")
        assert event_id is not None
        assert (event_id.get("csd-code"), event_id.get("codeSystemName")) == (event.event_id, "DCM")
        requestor = root.find("ActiveParticipant[@UserIsRequestor='true']")
        assert requestor is not None and requestor.get("UserID") == event.actor
        assert requestor.get("NetworkAccessPointID") == event.source_address
        objects = {
            o.get("ParticipantObjectID"): o for o in root.iter("ParticipantObjectIdentification")
        }
        assert all(uid in objects for uid in event.study_uids)
        assert len(objects) == len(event.patient_ids) + len(event.study_uids) + 1 + bool(
            event.query
        )
        if event.outcome_description:
            description = identification.findtext("EventOutcomeDescription")
            assert description == event.outcome_description  # <, &, " and æøå survive
        if event.patient_ids == (FNR,):
            assert f"{FNR}^^^&2.16.578.1.12.4.1.4.1&ISO" in objects
        record = objects[str(event.seq)]
        details = {
            d.get("type"): d.get("value", "") for d in record.iter("ParticipantObjectDetail")
        }
        assert base64.b64decode(details["hash"]).decode() == event.hash


def test_receiver_down_nothing_lost_and_cursor_survives_restart(
    archive_with_syslog: Archive,
    pki: Pki,
    port: int,
    receiver_factory: Callable[..., Rsyslog],
) -> None:
    archive = archive_with_syslog
    first_batch = _record_events(archive, 3)
    forwarder = _forwarder(archive)

    # No receiver yet: the events wait in the log, the cursor does not move.
    with pytest.raises(SyslogUnavailable):
        forwarder.forward_pending()
    assert _cursor_seq(archive) == 0
    assert forwarder.state().lag == len(first_batch)

    first = receiver_factory("first", pki.ca, pki.server, port)
    first.start()
    assert forwarder.forward_pending() == len(first_batch)
    first.wait_for(len(first_batch))

    # The receiver crashes; events go on being written.
    first.kill()
    second_batch = _record_events(archive, 4, start=3)
    with pytest.raises(SyslogUnavailable):
        forwarder.forward_pending()
    assert _cursor_seq(archive) == first_batch[-1].seq
    forwarder.stop(flush=False)

    # The archive restarts (a new forwarder reads the durable cursor), then the receiver returns.
    second = receiver_factory("second", pki.ca, pki.server, port)
    second.start()
    restarted = _forwarder(archive)
    try:
        assert restarted.forward_pending() == len(second_batch)  # not everything again
        received_again = second.wait_for(len(second_batch))
    finally:
        restarted.stop(flush=False)

    first_seqs = [_seq_of(m) for m in first.messages()]
    second_seqs = [_seq_of(m) for m in received_again]
    assert first_seqs == [e.seq for e in first_batch]
    assert second_seqs == [e.seq for e in second_batch]
    all_seqs = sorted(set(first_seqs) | set(second_seqs))
    assert all_seqs == list(range(1, archive.index.audit_head()[0] + 1))  # none lost
    assert _cursor_seq(archive) == second_batch[-1].seq


def test_background_thread_backs_off_then_catches_up(
    archive_with_syslog: Archive,
    pki: Pki,
    port: int,
    receiver_factory: Callable[..., Rsyslog],
    caplog: pytest.LogCaptureFixture,
) -> None:
    archive = archive_with_syslog
    forwarder = _forwarder(archive, fast_retries=True)
    caplog.set_level(logging.WARNING, logger="arkiv.audit_syslog")
    forwarder.start()
    try:
        recorded = _record_events(archive, 5)
        deadline = time.monotonic() + 10
        while forwarder.state().consecutive_failures < 3:
            assert time.monotonic() < deadline, "the forwarder did not retry"
            time.sleep(0.05)
        down = forwarder.state()
        assert not down.connected
        assert down.lag == len(recorded)
        assert "cannot connect" in down.last_error

        receiver = receiver_factory("late", pki.ca, pki.server, port)
        receiver.start()
        receiver.wait_for(len(recorded))
        more = _record_events(archive, 2, start=5)
        forwarder.wake()
        received = receiver.wait_for(len(recorded) + len(more))
        deadline = time.monotonic() + 10
        while forwarder.state().lag:
            assert time.monotonic() < deadline, "the cursor did not catch up"
            time.sleep(0.05)
        up = forwarder.state()
    finally:
        forwarder.stop()

    assert [_seq_of(m) for m in received] == [e.seq for e in [*recorded, *more]]
    assert up.connected and up.consecutive_failures == 0 and up.last_error == ""
    outage_warnings = [r for r in caplog.records if "stopped" in r.getMessage()]
    assert len(outage_warnings) == 1  # one warning per outage, not one per retry


def test_receiver_with_certificate_from_another_ca_is_refused(
    archive_with_syslog: Archive, pki: Pki, port: int, receiver_factory: Callable[..., Rsyslog]
) -> None:
    archive = archive_with_syslog
    impostor = receiver_factory("impostor", pki.ca, pki.foreign_server, port)
    impostor.start()
    _record_events(archive, 2)
    forwarder = _forwarder(archive)
    try:
        with pytest.raises(SyslogUnavailable, match="certificate verify failed"):
            forwarder.forward_pending()
        assert not forwarder.state().connected
    finally:
        forwarder.stop(flush=False)
    time.sleep(0.3)
    assert impostor.messages() == []
    assert archive.index.forward_cursor(CURSOR_NAME) is None


def test_receiver_refuses_a_client_without_certificate(
    tmp_path: Path, pki: Pki, port: int, receiver_factory: Callable[..., Rsyslog]
) -> None:
    archive = Archive(_settings(tmp_path, pki, port, client_cert=False))
    try:
        receiver = receiver_factory("strict", pki.ca, pki.server, port)
        receiver.start()
        _record_events(archive, 2)
        forwarder = _forwarder(archive)
        try:
            with pytest.raises(SyslogUnavailable):
                forwarder.forward_pending()
        finally:
            forwarder.stop(flush=False)
        time.sleep(0.3)
        assert receiver.messages() == []
        assert _cursor_seq(archive) == 0
    finally:
        archive.close()


def test_a_forwarder_on_another_node_continues_from_the_cursor_in_the_index(
    tmp_path: Path, pki: Pki, port: int, receiver_factory: Callable[..., Rsyslog]
) -> None:
    """Two nodes, each with its own data directory, on one index: the second forwarder starts
    where the first one's receiver stopped taking events, not from the beginning."""
    shared = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    first_node = Archive(
        _settings(tmp_path, pki, port, data_dir=tmp_path / "a", database_url=shared)
    )
    second_node = Archive(
        _settings(tmp_path, pki, port, data_dir=tmp_path / "b", database_url=shared)
    )
    try:
        receiver = receiver_factory("repository", pki.ca, pki.server, port)
        receiver.start()
        before = _record_events(first_node, 4)
        first = _forwarder(first_node)
        try:
            assert first.forward_pending() == len(before)
        finally:
            first.stop()
        receiver.wait_for(len(before))
        after = _record_events(second_node, 3, start=4)
        second = _forwarder(second_node)
        try:
            assert second.state().last_forwarded_seq == before[-1].seq
            assert second.forward_pending() == len(after)
        finally:
            second.stop(flush=False)
        received = receiver.wait_for(len(before) + len(after))
        time.sleep(0.3)  # anything sent twice would be written by now
        assert [_seq_of(m) for m in receiver.messages()] == [e.seq for e in [*before, *after]]
        assert [_seq_of(m) for m in received] == [e.seq for e in [*before, *after]]
        assert cursor_seq(first_node.index) == after[-1].seq
        for node in (first_node, second_node):  # nothing is kept in the data directories
            assert not (node.settings.data_dir / CURSOR_FILE).exists()
    finally:
        first_node.close()
        second_node.close()


def test_an_old_cursor_file_is_taken_into_the_index_once(
    archive_with_syslog: Archive,
    pki: Pki,
    port: int,
    receiver_factory: Callable[..., Rsyslog],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An embedded archive upgraded from a version that kept the cursor in its data directory
    resumes at the file's position, moves it into the index, and never reads the file again."""
    archive = archive_with_syslog
    recorded = _record_events(archive, 5)
    old = archive.settings.data_dir / CURSOR_FILE
    old.write_text(json.dumps({"seq": recorded[2].seq, "hash": recorded[2].hash}))
    receiver = receiver_factory("repository", pki.ca, pki.server, port)
    receiver.start()
    caplog.set_level(logging.WARNING, logger="arkiv.audit_syslog")

    forwarder = _forwarder(archive)
    try:
        assert forwarder.state().last_forwarded_seq == recorded[2].seq
        assert archive.index.forward_cursor(CURSOR_NAME) == (recorded[2].seq, recorded[2].hash)
        assert not old.exists()
        assert old.with_name(CURSOR_FILE + ".imported").exists()
        [notice] = [r for r in caplog.records if "into the index" in r.getMessage()]
        assert CURSOR_FILE in notice.getMessage()
        assert forwarder.forward_pending() == 2
    finally:
        forwarder.stop(flush=False)
    assert [_seq_of(m) for m in receiver.wait_for(2)] == [e.seq for e in recorded[3:]]

    # Once the index has the cursor, a stray file is not read, and nothing is said about it.
    old.write_text(json.dumps({"seq": recorded[0].seq, "hash": recorded[0].hash}))
    caplog.clear()
    again = _forwarder(archive)
    try:
        assert again.state().last_forwarded_seq == recorded[-1].seq
        assert again.forward_pending() == 0
    finally:
        again.stop(flush=False)
    assert old.exists()
    assert not [r for r in caplog.records if "into the index" in r.getMessage()]


def test_a_cursor_from_another_log_sends_everything_again(
    archive_with_syslog: Archive,
    pki: Pki,
    port: int,
    receiver_factory: Callable[..., Rsyslog],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A cursor naming an event this log does not have (a restored or replaced database) is
    not trusted: a gap in the copy would be worse than a repeat."""
    archive = archive_with_syslog
    recorded = _record_events(archive, 3)
    with archive.index.transaction() as tx:
        tx.set_forward_cursor(CURSOR_NAME, recorded[1].seq, "e" * 64, "2026-01-01T00:00:00Z")
    receiver = receiver_factory("repository", pki.ca, pki.server, port)
    receiver.start()
    caplog.set_level(logging.ERROR, logger="arkiv.audit_syslog")
    forwarder = _forwarder(archive)
    try:
        assert forwarder.forward_pending() == len(recorded)
    finally:
        forwarder.stop(flush=False)
    assert [_seq_of(m) for m in receiver.wait_for(3)] == [e.seq for e in recorded]
    assert any("does not match this audit log" in r.getMessage() for r in caplog.records)
    assert archive.index.forward_cursor(CURSOR_NAME) == (recorded[-1].seq, recorded[-1].hash)
