"""C-MOVE and C-GET from the archive, with DCMTK movescu/getscu, pynetdicom and Orthanc as callers
and receivers, and the stored bytes as the witness.

What holds: a retrieve at every level sends exactly the caller's county's matching instances,
byte-identical to what was stored; a receiver that accepts only Implicit VR LE gets a transcoded
copy; an unknown destination is refused (0xA801) and audited; a damaged object is a failed
sub-operation, never sent, while the rest arrive; cancel stops a move (0xFE00); a peer without
the service is refused (0x0124); every transfer is audited naming its destination.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any
from unittest import mock

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.events import Event as DimseEvent
from pynetdicom.presentation import build_role
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from arkiv.audit import Actor
from arkiv.config import Peer, Settings
from arkiv.counties import County
from arkiv.errors import AuditUnavailable
from arkiv.services import Archive
from dicom_node.server import DicomNode
from storage.records import AuditQuery, StoredInstance, StudyQuery
from tests.conftest import free_port, require_tool
from tests.dicom_factory import INTRAORAL, Spec, dataset_bytes, encode, make_dataset
from tests.servers import OrthancServer

HOST = "127.0.0.1"
AE_TITLE = "ARKIV"
INSTANCES_TRANSFERRED = "110104"
SUCCESS, WARNING, CANCELLED = 0x0000, 0xB000, 0xFE00
MOVE_DESTINATION_UNKNOWN, NOT_AUTHORIZED = 0xA801, 0x0124

WORKSTATION = Peer(
    "WORKSTATION", County.VESTFOLD, host=HOST, services=frozenset({"echo", "move", "get"})
)
BUSKERUD_WS = Peer("BUSK_WS", County.BUSKERUD, host=HOST, services=frozenset({"move", "get"}))
FIND_ONLY = Peer("FIND_ONLY", County.VESTFOLD, host=HOST, services=frozenset({"find"}))


@dataclass
class Receiver:
    """A storage SCP that keeps the dataset bytes exactly as they came over the wire."""

    ae_title: str
    port: int
    syntaxes: tuple[str, ...]
    received: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    originators: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_store(self, event: DimseEvent) -> int:
        request: Any = event.request
        with self.lock:
            self.received[str(request.AffectedSOPInstanceUID)] = (
                str(event.context.transfer_syntax),
                request.DataSet.getvalue(),
            )
            self.originators.add(str(request.MoveOriginatorApplicationEntityTitle or "").strip())
        return SUCCESS


@contextmanager
def receiver(ae_title: str, syntaxes: tuple[str, ...] = ()) -> Iterator[Receiver]:
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(Verification)
    for sop_class in (INTRAORAL,):
        if syntaxes:
            ae.add_supported_context(sop_class, list(syntaxes))
        else:
            ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    got = Receiver(ae_title, free_port(), syntaxes)
    server = ae.start_server(
        (HOST, got.port), block=False, evt_handlers=[(evt.EVT_C_STORE, got.on_store)]
    )
    assert server is not None
    try:
        yield got
    finally:
        server.shutdown()


@dataclass
class Node:
    archive: Archive
    port: int
    stored: dict[str, bytes]
    """SOP Instance UID → the Part 10 bytes as ingested."""

    def store(self, spec: Spec, county: County = County.VESTFOLD) -> str:
        data = encode(make_dataset(spec))
        actor = Actor(name="MODALITY", kind="dicom-ae", county=county.value)
        self.archive.ingest.ingest_dicom(data, actor)
        self.stored[spec.sop_uid] = data
        return spec.sop_uid

    def instance(self, sop_uid: str) -> StoredInstance:
        found = self.archive.index.find_instances(StudyQuery(sop_uids=(sop_uid,)))
        assert len(found) == 1
        return found[0]

    def transfers(self) -> list[Any]:
        """Transfer events, newest first (ingest records them too, without a destination)."""
        return self.archive.index.find_audit_events(AuditQuery(event_id=INSTANCES_TRANSFERRED))


@contextmanager
def node(tmp_path: Path, *peers: Peer) -> Iterator[Node]:
    settings = Settings(
        data_dir=tmp_path / "data",
        dicom_port=free_port(),
        peers=(WORKSTATION, BUSKERUD_WS, FIND_ONLY, *peers),
    )
    archive = Archive(settings)
    dicom = DicomNode(archive)
    try:
        dicom.start(HOST, settings.dicom_port)
        yield Node(archive, settings.dicom_port, {})
    finally:
        dicom.stop()
        archive.close()


def destination(got: Receiver, county: County = County.VESTFOLD) -> Peer:
    return Peer(got.ae_title, county, host=HOST, port=got.port, services=frozenset({"store"}))


def study(n: Node, images: int = 3, series: int = 1) -> tuple[str, list[str], list[str]]:
    """A stored study: its UID, its series UIDs, its SOP Instance UIDs."""
    first = Spec()
    series_uids = [first.series_uid] + [Spec().series_uid for _ in range(series - 1)]
    sops = []
    for i in range(images):
        spec = Spec(study_uid=first.study_uid, series_uid=series_uids[i % series], seed=i)
        sops.append(n.store(spec))
    return first.study_uid, series_uids, sops


def identifier(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


@dataclass
class Outcome:
    status: int
    responses: list[Dataset]
    failed: list[str]


def move(
    n: Node,
    calling: str,
    dest: str,
    query: Dataset,
    model: Any = StudyRootQueryRetrieveInformationModelMove,
    cancel_after_first: bool = False,
) -> Outcome:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(model)
    assoc = ae.associate(HOST, n.port, ae_title=AE_TITLE)
    assert assoc.is_established
    responses: list[Dataset] = []
    failed: list[str] = []
    try:
        for status, ident in assoc.send_c_move(query, dest, model, msg_id=7):
            if status is None:
                break
            responses.append(status)
            if cancel_after_first and status.Status == 0xFF00 and len(responses) == 1:
                assoc.send_c_cancel(7, query_model=model)
            if ident is not None and "FailedSOPInstanceUIDList" in ident:
                value = ident.FailedSOPInstanceUIDList
                failed = [str(v) for v in (value if isinstance(value, list | tuple) else [value])]
                failed = [v for v in failed if v]
    finally:
        assoc.release()
    assert responses, "no C-MOVE response"
    return Outcome(int(responses[-1].Status), responses, failed)


def wire_bytes(n: Node, sop_uid: str) -> bytes:
    return dataset_bytes(n.stored[sop_uid])


# -- C-MOVE ----------------------------------------------------------------------------------------


def test_move_study_series_and_image_arrive_byte_identical(tmp_path: Path) -> None:
    with receiver("WS_STORE") as got, node(tmp_path / "a", destination(got)) as n:
        study_uid, series_uids, sops = study(n, images=4, series=2)
        result = move(n, "WORKSTATION", "WS_STORE", identifier("STUDY", StudyInstanceUID=study_uid))
        assert result.status == SUCCESS
        assert result.responses[-1].NumberOfCompletedSuboperations == 4
        assert set(got.received) == set(sops)
        for sop in sops:
            syntax, data = got.received[sop]
            assert syntax == ExplicitVRLittleEndian
            assert data == wire_bytes(n, sop)
        assert got.originators == {"WORKSTATION"}

        got.received.clear()
        result = move(
            n,
            "WORKSTATION",
            "WS_STORE",
            identifier("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uids[1]),
        )
        assert result.status == SUCCESS
        assert set(got.received) == {sops[1], sops[3]}

        got.received.clear()
        result = move(
            n,
            "WORKSTATION",
            "WS_STORE",
            identifier(
                "IMAGE",
                PatientID="01017012345",
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=series_uids[0],
                SOPInstanceUID=[sops[0], sops[2]],
            ),
            model=PatientRootQueryRetrieveInformationModelMove,
        )
        assert result.status == SUCCESS
        assert set(got.received) == {sops[0], sops[2]}

        got.received.clear()
        result = move(
            n,
            "WORKSTATION",
            "WS_STORE",
            identifier("PATIENT", PatientID="01017012345"),
            model=PatientRootQueryRetrieveInformationModelMove,
        )
        assert result.status == SUCCESS
        assert set(got.received) == set(sops)


def test_movescu_moves_a_study(tmp_path: Path) -> None:
    tool = require_tool("movescu")

    with receiver("WS_STORE") as got, node(tmp_path / "a", destination(got)) as n:
        study_uid, _, sops = study(n, images=3)
        result = subprocess.run(
            [
                tool,
                "-v",
                "-S",
                "-aet",
                "WORKSTATION",
                "-aec",
                AE_TITLE,
                "-aem",
                "WS_STORE",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={study_uid}",
                HOST,
                str(n.port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert set(got.received) == set(sops)
        assert all(got.received[s][1] == wire_bytes(n, s) for s in sops)


def test_implicit_only_receiver_gets_a_transcoded_copy(tmp_path: Path) -> None:
    with (
        receiver("OLD_WS", (ImplicitVRLittleEndian,)) as got,
        node(tmp_path / "a", destination(got)) as n,
    ):
        study_uid, _, sops = study(n, images=2)
        result = move(n, "WORKSTATION", "OLD_WS", identifier("STUDY", StudyInstanceUID=study_uid))
        assert result.status == SUCCESS
        for sop in sops:
            syntax, data = got.received[sop]
            assert syntax == ImplicitVRLittleEndian
            sent = pydicom.dcmread(BytesIO(data), force=True)
            original = pydicom.dcmread(BytesIO(n.stored[sop]))
            assert sent.SOPInstanceUID == sop
            assert sent.PixelData == original.PixelData


def test_unknown_destination_is_refused_and_audited(tmp_path: Path) -> None:
    with node(tmp_path / "a") as n:
        study_uid, _, _ = study(n, images=1)
        result = move(n, "WORKSTATION", "NOWHERE", identifier("STUDY", StudyInstanceUID=study_uid))
        assert result.status == MOVE_DESTINATION_UNKNOWN
        refusals = [e for e in n.transfers() if e.details.get("destination", {}).get("ae_title")]
        assert refusals and refusals[-1].details["destination"]["ae_title"] == "NOWHERE"
        assert refusals[-1].outcome != 0


def test_destination_down_fails_and_loses_nothing(tmp_path: Path) -> None:
    down = Peer("DOWN_WS", County.VESTFOLD, host=HOST, port=free_port())
    with node(tmp_path / "a", down) as n:
        study_uid, _, sops = study(n, images=2)
        result = move(n, "WORKSTATION", "DOWN_WS", identifier("STUDY", StudyInstanceUID=study_uid))
        assert result.status not in (SUCCESS, WARNING, 0xFF00)
        for sop in sops:
            assert n.archive.blobs.read(n.instance(sop).blob.key) == n.stored[sop]


def test_damaged_object_is_a_failed_suboperation_and_the_rest_arrive(tmp_path: Path) -> None:
    with receiver("WS_STORE") as got, node(tmp_path / "a", destination(got)) as n:
        study_uid, _, sops = study(n, images=3)
        damaged = n.instance(sops[1])
        root = tmp_path / "a" / "data"
        blob = next(
            p for p in root.rglob("*") if p.is_file() and p.name == damaged.blob.key.split("/")[-1]
        )
        raw = bytearray(blob.read_bytes())
        raw[-10] ^= 0xFF
        blob.write_bytes(bytes(raw))
        result = move(n, "WORKSTATION", "WS_STORE", identifier("STUDY", StudyInstanceUID=study_uid))
        assert result.status == WARNING
        assert result.failed == [sops[1]]
        assert result.responses[-1].NumberOfFailedSuboperations == 1
        assert result.responses[-1].NumberOfCompletedSuboperations == 2
        assert set(got.received) == {sops[0], sops[2]}


def test_cancel_stops_a_move(tmp_path: Path) -> None:
    with receiver("WS_STORE") as got, node(tmp_path / "a", destination(got)) as n:
        study_uid, _, sops = study(n, images=12)
        result = move(
            n,
            "WORKSTATION",
            "WS_STORE",
            identifier("STUDY", StudyInstanceUID=study_uid),
            cancel_after_first=True,
        )
        assert result.status == CANCELLED
        assert len(got.received) < len(sops)


def test_peer_without_move_is_refused(tmp_path: Path) -> None:
    with receiver("WS_STORE") as got, node(tmp_path / "a", destination(got)) as n:
        study_uid, _, _ = study(n, images=1)
        result = move(n, "FIND_ONLY", "WS_STORE", identifier("STUDY", StudyInstanceUID=study_uid))
        assert result.status == NOT_AUTHORIZED
        assert got.received == {}


def test_transfer_audit_names_destination(tmp_path: Path) -> None:
    with receiver("WS_STORE") as got, node(tmp_path / "a", destination(got)) as n:
        study_uid, _, _ = study(n, images=2)
        move(n, "WORKSTATION", "WS_STORE", identifier("STUDY", StudyInstanceUID=study_uid))
        event = next(e for e in n.transfers() if e.details.get("purpose") == "retrieve")
        assert event.details["destination"]["ae_title"] == "WS_STORE"
        assert event.details["destination"]["port"] == got.port
        assert event.details["destination"]["host"] == HOST
        assert event.object_count == 2
        assert study_uid in event.study_uids


def test_another_county_moves_nothing_of_vestfold(tmp_path: Path) -> None:
    with receiver("WS_STORE") as got, node(tmp_path / "a", destination(got)) as n:
        study_uid, _, _ = study(n, images=2)
        result = move(n, "BUSK_WS", "WS_STORE", identifier("STUDY", StudyInstanceUID=study_uid))
        assert result.status == SUCCESS
        assert result.responses[-1].get("NumberOfCompletedSuboperations", 0) == 0
        assert got.received == {}


def test_bad_identifier_is_refused(tmp_path: Path) -> None:
    with receiver("WS_STORE") as got, node(tmp_path / "a", destination(got)) as n:
        study(n, images=1)
        result = move(n, "WORKSTATION", "WS_STORE", identifier("STUDY", StudyInstanceUID="1.2*"))
        assert result.status == 0xA900
        assert got.received == {}


# -- C-GET -----------------------------------------------------------------------------------------


def get(n: Node, calling: str, query: Dataset, model: Any) -> tuple[Outcome, Receiver]:
    got = Receiver(calling, 0, ())
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(model)
    ae.add_requested_context(INTRAORAL, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(
        HOST,
        n.port,
        ae_title=AE_TITLE,
        ext_neg=[build_role(INTRAORAL, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, got.on_store)],
    )
    assert assoc.is_established
    responses: list[Dataset] = []
    try:
        for status, _ident in assoc.send_c_get(query, model):
            if status is None:
                break
            responses.append(status)
    finally:
        assoc.release()
    return Outcome(int(responses[-1].Status), responses, []), got


def test_get_at_study_series_and_image_levels_byte_identical(tmp_path: Path) -> None:
    with node(tmp_path / "a") as n:
        study_uid, series_uids, sops = study(n, images=4, series=2)
        result, got = get(
            n,
            "WORKSTATION",
            identifier("STUDY", StudyInstanceUID=study_uid),
            StudyRootQueryRetrieveInformationModelGet,
        )
        assert result.status == SUCCESS
        assert set(got.received) == set(sops)
        assert all(got.received[s][1] == wire_bytes(n, s) for s in sops)
        result, got = get(
            n,
            "WORKSTATION",
            identifier("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uids[0]),
            StudyRootQueryRetrieveInformationModelGet,
        )
        assert set(got.received) == {sops[0], sops[2]}
        result, got = get(
            n,
            "WORKSTATION",
            identifier(
                "IMAGE",
                PatientID="01017012345",
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=series_uids[1],
                SOPInstanceUID=sops[3],
            ),
            PatientRootQueryRetrieveInformationModelGet,
        )
        assert result.status == SUCCESS
        assert set(got.received) == {sops[3]}


def test_getscu_retrieves_a_study(tmp_path: Path) -> None:

    tool = require_tool("getscu")
    out = tmp_path / "out"
    out.mkdir()
    with node(tmp_path / "a") as n:
        study_uid, _, sops = study(n, images=3)
        result = subprocess.run(
            [
                tool,
                "-v",
                "-S",
                "-aet",
                "WORKSTATION",
                "-aec",
                AE_TITLE,
                "-od",
                str(out),
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={study_uid}",
                HOST,
                str(n.port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        files = sorted(out.iterdir())
        assert len(files) == 3
        got = {str(pydicom.dcmread(f).SOPInstanceUID): f.read_bytes() for f in files}
        assert set(got) == set(sops)
        for sop in sops:
            assert dataset_bytes(got[sop]) == wire_bytes(n, sop)


def test_get_by_peer_without_get_is_refused(tmp_path: Path) -> None:
    with node(tmp_path / "a") as n:
        study_uid, _, _ = study(n, images=1)
        result, got = get(
            n,
            "FIND_ONLY",
            identifier("STUDY", StudyInstanceUID=study_uid),
            StudyRootQueryRetrieveInformationModelGet,
        )
        assert result.status == NOT_AUTHORIZED
        assert got.received == {}


# -- Orthanc ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_orthanc_receives_a_moved_study_whole_and_identical(tmp_path: Path) -> None:
    orthanc = OrthancServer.start(tmp_path / "orthanc")
    try:
        peer = Peer(
            orthanc.aet,
            County.VESTFOLD,
            host=HOST,
            port=orthanc.dicom_port,
            services=frozenset({"echo", "store", "find", "move"}),
        )
        with node(tmp_path / "a", peer) as n:
            study_uid, _, sops = study(n, images=3)
            result = move(
                n, "WORKSTATION", orthanc.aet, identifier("STUDY", StudyInstanceUID=study_uid)
            )
            assert result.status == SUCCESS
            _assert_orthanc_holds(orthanc, n, sops)

            for sop in orthanc.rest("GET", "/instances"):
                orthanc.rest("DELETE", f"/instances/{sop}")
            orthanc.add_modality("arkiv", AE_TITLE, HOST, n.port)
            orthanc.rest(
                "POST",
                "/modalities/arkiv/move",
                {
                    "Level": "Study",
                    "Resources": [{"StudyInstanceUID": study_uid}],
                    "TargetAet": orthanc.aet,
                },
            )
            _assert_orthanc_holds(orthanc, n, sops)
    finally:
        orthanc.stop()


def _assert_orthanc_holds(orthanc: OrthancServer, n: Node, sops: list[str]) -> None:
    held: dict[str, bytes] = {}
    for orthanc_id in orthanc.rest("GET", "/instances"):
        data = orthanc.rest("GET", f"/instances/{orthanc_id}/file")
        held[str(pydicom.dcmread(BytesIO(data)).SOPInstanceUID)] = data
    assert set(held) == set(sops)
    for sop in sops:
        assert dataset_bytes(held[sop]) == wire_bytes(n, sop)


def test_nothing_is_sent_when_the_transfer_cannot_be_audited(tmp_path: Path) -> None:
    with receiver("WS_STORE") as got, node(tmp_path / "a", destination(got)) as n:
        study_uid, _, sops = study(n, images=2)
        with mock.patch.object(
            n.archive.audit, "record", side_effect=AuditUnavailable("audit log is down")
        ):
            result = move(
                n, "WORKSTATION", "WS_STORE", identifier("STUDY", StudyInstanceUID=study_uid)
            )
        assert result.status == 0xC000
        assert "not sent" in str(result.responses[-1].get("ErrorComment", ""))
        assert got.received == {}
        result = move(n, "WORKSTATION", "WS_STORE", identifier("STUDY", StudyInstanceUID=study_uid))
        assert result.status == SUCCESS
        assert set(got.received) == set(sops)
