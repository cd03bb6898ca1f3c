"""Configured DICOM peers as the node enforces them, with DCMTK (echoscu, storescu) and pynetdicom
as callers and the index and audit log as witnesses.

What holds: in production (`dicom_require_known_peers`) an AE that is not configured is rejected
at association; a configured AE title used from another address than its own is rejected even
where unknown AEs are admitted (AE titles are not authentication); a peer uses only the services
it is allowed; what a peer stores belongs to its county; every refusal is audited, and a refusal
stands even when the audit log cannot take the event.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from arkiv.config import Peer, Settings
from arkiv.counties import County
from arkiv.errors import AuditUnavailable
from arkiv.services import Archive
from dicom_node.peers import address_matches
from dicom_node.server import DicomNode
from storage.records import AuditEvent, AuditQuery, StudyQuery
from tests.conftest import free_port, require_tool
from tests.dicom_factory import INTRAORAL, Spec, make_dataset, write

HOST = "127.0.0.1"
AE_TITLE = "ARKIV"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}

SECURITY_ALERT = "110113"
INSTANCES_TRANSFERRED = "110104"
NODE_AUTHENTICATION = "110126 Node Authentication"
USE_OF_RESTRICTED_FUNCTION = "110132 Use of Restricted Function"
NOT_AUTHORIZED = 0x0124
"""Refused: Not Authorized (PS3.7 Annex C), a general status C-ECHO and C-STORE may return."""

BUSKERUD_SENSOR = Peer("BUSK_SENSOR", County.BUSKERUD, host=HOST)
"""An intra-oral sensor in a Buskerud clinic, bound to its address."""
TELEMARK_PAN = Peer("TELEMARK_PAN", County.TELEMARK, host="127.0.0.2")
"""A panoramic unit in Telemark that must call from 127.0.0.2 (the tests call from 127.0.0.1)."""
VIEWSTATION = Peer("VIEWSTATION", County.VESTFOLD, services=frozenset({"echo"}))
"""A workstation that may verify but not send images."""
STORE_ONLY = Peer("STORE_ONLY", County.BUSKERUD, services=frozenset({"store"}))
PEERS = (BUSKERUD_SENSOR, TELEMARK_PAN, VIEWSTATION, STORE_ONLY)


# -- the node and its callers ----------------------------------------------------------------------


@dataclass
class Node:
    archive: Archive
    port: int

    def events(self, event_id: str) -> list[AuditEvent]:
        return self.archive.index.find_audit_events(AuditQuery(event_id=event_id))


def node_settings(tmp_path: Path, **changes: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", dicom_port=free_port(), **changes)


@contextmanager
def dicom_node(settings: Settings) -> Iterator[Node]:
    """The DICOM node alone (no web app) on its own archive, as conftest's `running` starts it
    but with the settings a test needs."""
    archive = Archive(settings)
    node = DicomNode(archive)
    try:
        node.start(HOST, settings.dicom_port)
        yield Node(archive, settings.dicom_port)
    finally:
        node.stop()
        archive.close()


def dcmtk(tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool(tool), *args],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def echoscu(port: int, calling: str, *options: str) -> subprocess.CompletedProcess[str]:
    return dcmtk("echoscu", *options, "-aet", calling, "-aec", AE_TITLE, HOST, str(port))


def storescu(
    port: int, calling: str, *files: Path, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return dcmtk(
        "storescu",
        "-v",
        *options,
        "-aet",
        calling,
        "-aec",
        AE_TITLE,
        HOST,
        str(port),
        *map(str, files),
    )


def assert_rejected_as_unknown_caller(result: subprocess.CompletedProcess[str]) -> None:
    """A-ASSOCIATE-RJ: rejected permanent, by the service user, calling AE not recognised."""
    assert result.returncode != 0, result.stderr
    assert "Association Rejected" in result.stderr, result.stderr
    assert "Rejected Permanent" in result.stderr, result.stderr
    assert "Source: Service User" in result.stderr, result.stderr
    assert "Calling AE Title Not Recognized" in result.stderr, result.stderr


@contextmanager
def association(
    port: int, calling: str, *, bind: str = HOST, sop_class: str = INTRAORAL
) -> Iterator[Association]:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(Verification)
    ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate(HOST, port, ae_title=AE_TITLE, bind_address=(bind, 0))
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def image(tmp_path: Path, name: str, seed: int = 1) -> Path:
    return write(make_dataset(Spec(seed=seed)), tmp_path / f"{name}.dcm")


def study_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def assert_node_authentication_alert(event: AuditEvent, calling: str, reason_part: str) -> None:
    assert event.actor == calling
    assert event.actor_kind == "dicom-ae"
    assert event.county == "vestfold", "the caller is not trusted: the archive's county acts"
    assert event.source_address == HOST
    assert event.outcome == 4
    assert event.details["subtype"] == NODE_AUTHENTICATION
    assert event.details["called_ae"] == AE_TITLE
    assert reason_part in event.details["reason"], event.details
    assert event.outcome_description == event.details["reason"]


# -- 1. who may associate ------------------------------------------------------------------------


def test_unknown_ae_is_rejected_in_production_and_audited(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, peers=PEERS, dicom_require_known_peers=True)
    with dicom_node(settings) as node:
        assert echoscu(node.port, BUSKERUD_SENSOR.ae_title).returncode == 0

        assert_rejected_as_unknown_caller(echoscu(node.port, "INTRUDER"))
        stored = storescu(node.port, "INTRUDER", image(tmp_path, "intruder"))
        assert_rejected_as_unknown_caller(stored)

        assert node.archive.index.instance_count() == 0
        alerts = node.events(SECURITY_ALERT)
        assert len(alerts) == 2
        for event in alerts:
            assert_node_authentication_alert(event, "INTRUDER", "not a configured peer")
        assert echoscu(node.port, BUSKERUD_SENSOR.ae_title).returncode == 0
        assert node.archive.audit.verify().ok


def test_a_known_ae_from_another_address_is_rejected_even_where_unknown_aes_are_admitted(
    tmp_path: Path,
) -> None:
    settings = node_settings(tmp_path, peers=PEERS)
    assert not settings.dicom_require_known_peers
    with dicom_node(settings) as node:
        assert echoscu(node.port, "ANY_MODALITY").returncode == 0

        assert_rejected_as_unknown_caller(echoscu(node.port, TELEMARK_PAN.ae_title))
        stored = storescu(node.port, TELEMARK_PAN.ae_title, image(tmp_path, "pan"))
        assert_rejected_as_unknown_caller(stored)
        assert node.archive.index.instance_count() == 0

        alerts = node.events(SECURITY_ALERT)
        assert len(alerts) == 2
        for event in alerts:
            assert_node_authentication_alert(event, TELEMARK_PAN.ae_title, "127.0.0.2")
            assert "telemark" in event.counties, "the county whose title was used is told"

        # From its own address the same AE title is welcome.
        with association(node.port, TELEMARK_PAN.ae_title, bind="127.0.0.2") as assoc:
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0x0000


def test_a_refusal_stands_when_the_audit_log_cannot_take_it(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, peers=PEERS, dicom_require_known_peers=True)
    with dicom_node(settings) as node:
        down = AuditUnavailable("audit log unavailable")
        with mock.patch.object(node.archive.audit, "record", side_effect=down) as record:
            assert_rejected_as_unknown_caller(echoscu(node.port, "INTRUDER"))
            assert_rejected_as_unknown_caller(echoscu(node.port, TELEMARK_PAN.ae_title))
        assert record.call_count == 2
        assert echoscu(node.port, BUSKERUD_SENSOR.ae_title).returncode == 0


def test_wrong_called_ae_title_is_still_rejected_as_such(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, peers=PEERS, dicom_require_known_peers=True)
    with dicom_node(settings) as node:
        result = dcmtk(
            "echoscu", "-aet", BUSKERUD_SENSOR.ae_title, "-aec", "WRONG", HOST, str(node.port)
        )
        assert result.returncode != 0
        assert "Called AE Title Not Recognized" in result.stderr, result.stderr


def test_peer_addresses_match_by_ip_network_or_resolved_name() -> None:
    assert address_matches("127.0.0.1", "127.0.0.1")
    assert address_matches("127.0.0.1", "::ffff:127.0.0.1"), "IPv4 seen by a dual-stack socket"
    assert not address_matches("127.0.0.2", "127.0.0.1")
    assert address_matches("10.20.0.0/16", "10.20.3.4")
    assert not address_matches("10.20.0.0/16", "10.21.3.4")
    assert address_matches("localhost", "127.0.0.1")
    assert not address_matches("peer.invalid", "127.0.0.1"), "a name that does not resolve"
    assert not address_matches("127.0.0.1", "not an address")


# -- 2. what each peer may do --------------------------------------------------------------------


def test_a_peer_without_store_is_refused_as_not_authorized_and_audited(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, peers=PEERS, dicom_require_known_peers=True)
    path = image(tmp_path, "refused")
    ds = pydicom.dcmread(path)
    with dicom_node(settings) as node:
        assert echoscu(node.port, VIEWSTATION.ae_title).returncode == 0

        with association(node.port, VIEWSTATION.ae_title) as assoc:
            assert assoc.is_established
            status = assoc.send_c_store(ds)
        assert status.Status == NOT_AUTHORIZED
        comment = str(status.get("ErrorComment", ""))
        assert "not authorized" in comment and comment.isascii() and len(comment) <= 64

        sent = storescu(node.port, VIEWSTATION.ae_title, path)
        assert sent.returncode != 0
        assert "Received Store Response (Success)" not in sent.stderr
        assert "0x124" in sent.stderr, sent.stderr  # DCMTK 3.6.7 shows the code, not its name

        assert node.archive.index.instance_count() == 0
        alerts = node.events(SECURITY_ALERT)
        assert len(alerts) == 2
        for event in alerts:
            assert event.actor == VIEWSTATION.ae_title
            assert event.details["subtype"] == USE_OF_RESTRICTED_FUNCTION
            assert event.details["service"] == "store"
            assert event.details["sop_instance_uid"] == str(ds.SOPInstanceUID)
            assert event.outcome == 4


def test_a_peer_without_echo_is_refused_echo_but_may_store(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, peers=PEERS, dicom_require_known_peers=True)
    with dicom_node(settings) as node:
        with association(node.port, STORE_ONLY.ae_title) as assoc:
            assert assoc.is_established
            echo = assoc.send_c_echo()
            stored = assoc.send_c_store(make_dataset(Spec()))
        assert echo.Status == NOT_AUTHORIZED
        assert "not authorized" in str(echo.get("ErrorComment", ""))
        assert stored.Status == 0x0000
        assert node.archive.index.instance_count() == 1
        [alert] = node.events(SECURITY_ALERT)
        assert alert.details["service"] == "echo"


# -- 3. which county owns what a peer sends --------------------------------------------------------


def test_a_known_peer_s_objects_belong_to_its_county(tmp_path: Path) -> None:
    settings = node_settings(tmp_path, peers=PEERS)
    assert settings.county is County.VESTFOLD
    from_buskerud = image(tmp_path, "buskerud", seed=1)
    from_anyone = image(tmp_path, "anyone", seed=2)
    with dicom_node(settings) as node:
        sent = storescu(node.port, BUSKERUD_SENSOR.ae_title, from_buskerud)
        assert sent.returncode == 0 and "Store Response (Success)" in sent.stderr, sent.stderr
        sent = storescu(node.port, "ANY_MODALITY", from_anyone)
        assert sent.returncode == 0 and "Store Response (Success)" in sent.stderr, sent.stderr

        index = node.archive.index
        buskerud = {s.study_uid for s in index.find_studies(StudyQuery(county="buskerud"))}
        vestfold = {s.study_uid for s in index.find_studies(StudyQuery(county="vestfold"))}
        assert buskerud == {study_of(from_buskerud)}
        assert vestfold == {study_of(from_anyone)}, "an unknown AE's objects: the archive's county"

        stored = {e.actor: e for e in node.events(INSTANCES_TRANSFERRED)}
        assert stored[BUSKERUD_SENSOR.ae_title].county == "buskerud"
        assert stored[BUSKERUD_SENSOR.ae_title].counties == ("buskerud",)
        assert stored["ANY_MODALITY"].county == "vestfold"


# -- 4. peers reach the worker processes of `arkiv dicom` ------------------------------------------


@dataclass
class ArkivProcess:
    process: subprocess.Popen[bytes]
    data: Path
    dicom_port: int


@contextmanager
def arkiv_dicom(
    tmp_path: Path,
    environment: dict[str, str],
    ready: list[str],
    *options: str,
    workers: int = 2,
) -> Iterator[ArkivProcess]:
    """`arkiv dicom` with worker processes, configured by `environment` (`ARKIV_*`) and
    `options`; ready once echoscu with the `ready` arguments succeeds."""
    data = tmp_path / "served"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARKIV_")}
    env.update(environment)
    log_path = tmp_path / "arkiv-dicom.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "arkiv.cli",
                "dicom",
                *options,
                "--data",
                str(data),
                "--host",
                HOST,
                "--dicom-port",
                str(port),
                "--dicom-workers",
                str(workers),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + 60
        while dcmtk("echoscu", *ready, HOST, str(port), timeout=30).returncode != 0:
            if process.poll() is not None:
                pytest.fail(
                    f"arkiv dicom exited with {process.returncode}:\n{log_path.read_text()}"
                )
            assert time.monotonic() < deadline, "arkiv dicom did not answer C-ECHO"
            time.sleep(0.2)
        yield ArkivProcess(process, data, port)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def peers_environment(*peers: Peer) -> dict[str, str]:
    documents = [
        {
            "ae_title": p.ae_title,
            "county": p.county.value,
            "host": p.host,
            "services": sorted(p.services),
        }
        for p in peers
    ]
    return {"ARKIV_PEERS": json.dumps(documents), "ARKIV_DICOM_REQUIRE_KNOWN_PEERS": "true"}


def events_in(data: Path, event_id: str) -> list[AuditEvent]:
    archive = Archive(Settings(data_dir=data))
    try:
        return archive.index.find_audit_events(AuditQuery(event_id=event_id, limit=1000))
    finally:
        archive.close()


def test_arkiv_dicom_workers_enforce_peers_from_the_environment(tmp_path: Path) -> None:
    attempts = 6  # associations spread over both processes; every one must be decided alike
    known = BUSKERUD_SENSOR.ae_title
    files = [image(tmp_path, f"sensor{n}", seed=n) for n in range(attempts)]
    with arkiv_dicom(
        tmp_path, peers_environment(*PEERS), ["-aet", known, "-aec", AE_TITLE]
    ) as served:
        for path in files:
            assert_rejected_as_unknown_caller(echoscu(served.dicom_port, "INTRUDER"))
            sent = storescu(served.dicom_port, known, path)
            assert "Store Response (Success)" in sent.stderr, sent.stderr

    stored = events_in(served.data, INSTANCES_TRANSFERRED)
    assert len(stored) == attempts
    assert {(e.actor, e.county) for e in stored} == {(known, "buskerud")}
    alerts = events_in(served.data, SECURITY_ALERT)
    assert len(alerts) == attempts
    assert {(e.actor, e.details["subtype"]) for e in alerts} == {("INTRUDER", NODE_AUTHENTICATION)}
