"""Storage Commitment Push Model SCP, with pynetdicom as the modality (DCMTK has no commitment
SCU) and the index, the blob store and the audit log as witnesses.

What a modality relies on: the N-EVENT-REPORT lists as committed exactly the objects the archive
holds intact for the modality's county, and every other object as failed with the reason of
PS3.4 J.3.2.1.2 (never stored or another county's: 0x0112; another SOP class: 0x0119; stored
bytes that no longer verify: 0x0110, with a security alert), on the requesting association or,
when the modality has let it go, on a new one to the modality's own SCP. A peer without the
commit service gets 0x0124; a malformed request gets a failure status and the node keeps
serving; the audit log names what was committed.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_EVENT_REPORT
from pynetdicom.events import Event as DimseEvent

from arkiv.config import Peer, Settings
from arkiv.counties import County
from arkiv.services import Archive
from dicom_node.server import DicomNode
from storage.blobs import FileBlobStore
from storage.records import AuditEvent, AuditQuery, StudyQuery
from tests.conftest import free_port
from tests.dicom_factory import DX_PRESENTATION, INTRAORAL, Spec, make_dataset

HOST = "127.0.0.1"
AE_TITLE = "ARKIV"
COMMITMENT = "1.2.840.10008.1.20.1"
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
REPORT_WAIT = 30.0
"""A deadline for the report to arrive, not a speed requirement."""

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
NOT_AUTHORIZED = 0x0124

INSTANCES_ACCESSED = "110103"
SECURITY_ALERT = "110113"

SENSOR = "SENSOR"
"""The modality under test: a Buskerud intra-oral sensor allowed to store and ask commitment."""
TELEMARK_PAN = "TELEMARK_PAN"
"""A Telemark modality from the same address: what it stores is not Buskerud's to commit."""
STORE_ONLY = "STORE_ONLY"


@dataclass
class Node:
    archive: Archive
    port: int

    def events(self, event_id: str) -> list[AuditEvent]:
        return self.archive.index.find_audit_events(AuditQuery(event_id=event_id))


@contextmanager
def commitment_node(
    tmp_path: Path, backend: dict[str, Any], modality_port: int = 0
) -> Iterator[Node]:
    peers = (
        Peer(
            SENSOR,
            County.BUSKERUD,
            host=HOST,
            port=modality_port,
            services=frozenset({"echo", "store", "commit"}),
        ),
        Peer(TELEMARK_PAN, County.TELEMARK, host=HOST, services=frozenset({"store", "commit"})),
        Peer(STORE_ONLY, County.BUSKERUD, host=HOST, services=frozenset({"store"})),
    )
    settings = Settings(
        data_dir=tmp_path / "data",
        dicom_port=free_port(),
        peers=peers,
        commitment_report_attempts=3,
        commitment_report_backoff_seconds=0.1,
        **backend,
    )
    archive = Archive(settings)
    node = DicomNode(archive)
    try:
        node.start(HOST, settings.dicom_port)
        yield Node(archive, settings.dicom_port)
    finally:
        node.stop()
        archive.close()


def modality_ae(calling: str) -> AE:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    return ae


def store(port: int, calling: str, *datasets: Dataset) -> None:
    for ds in datasets:
        assert store_status(port, calling, ds) == SUCCESS


def commitment_request(references: list[tuple[str, str]], transaction_uid: str) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_uid in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        items.append(item)
    ds.ReferencedSOPSequence = DicomSequence(items)
    return ds


@dataclass
class Report:
    event_type: int
    information: Dataset
    calling_ae: str
    """The AE title of the archive as the modality saw it on that association."""
    association: str
    """"same" (the requesting association) or "new" (one the archive opened)."""

    def committed(self) -> set[str]:
        return {
            str(i.ReferencedSOPInstanceUID)
            for i in self.information.get("ReferencedSOPSequence", [])
        }

    def failed(self) -> dict[str, int]:
        return {
            str(i.ReferencedSOPInstanceUID): int(i.FailureReason)
            for i in self.information.get("FailedSOPSequence", [])
        }


def report_handler(reports: queue.Queue[Report], association: str) -> Any:
    def handle(event: DimseEvent) -> tuple[int, None]:
        request = event.request
        assert isinstance(request, N_EVENT_REPORT)
        reports.put(
            Report(
                event_type=int(request.EventTypeID or 0),
                information=event.event_information,
                calling_ae=str(event.assoc.requestor.ae_title).strip()
                if association == "new"
                else str(event.assoc.acceptor.ae_title).strip(),
                association=association,
            )
        )
        return SUCCESS, None

    return handle


def request_commitment(
    port: int,
    calling: str,
    request: Dataset | None,
    *,
    wait_on_same: bool,
    action_type: int = 1,
    instance_uid: str = WELL_KNOWN_INSTANCE,
) -> tuple[int, Report | None]:
    """Send N-ACTION; with `wait_on_same`, hold the association until the report comes on it,
    else release at once (the report must then come on a new association)."""
    reports: queue.Queue[Report] = queue.Queue()
    ae = modality_ae(calling)
    ae.add_requested_context(COMMITMENT)
    handlers: list[Any] = (
        [(evt.EVT_N_EVENT_REPORT, report_handler(reports, "same"))] if wait_on_same else []
    )
    assoc: Association = ae.associate(HOST, port, ae_title=AE_TITLE, evt_handlers=handlers)
    assert assoc.is_established
    report: Report | None = None
    try:
        status, _ = assoc.send_n_action(request, action_type, COMMITMENT, instance_uid)
        code = int(status.Status)
        if code != SUCCESS:
            assert str(status.get("ErrorComment", "")), "a refusal must say why"
        if wait_on_same and code == SUCCESS:
            report = reports.get(timeout=REPORT_WAIT)
    finally:
        assoc.release()
        ae.shutdown()
    return code, report


@contextmanager
def modality_scp(port: int) -> Iterator[queue.Queue[Report]]:
    """The modality's own Storage Commitment SCU listener, taking reports the archive sends on
    a new association in which it plays the SCP role."""
    reports: queue.Queue[Report] = queue.Queue()
    ae = modality_ae(SENSOR)
    ae.add_supported_context(COMMITMENT, scu_role=False, scp_role=True)
    server = ae.start_server(
        (HOST, port),
        block=False,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, report_handler(reports, "new"))],
    )
    assert server is not None
    try:
        yield reports
    finally:
        server.shutdown()


@dataclass
class Objects:
    """What the modality sent, and what it asks about."""

    stored: list[Dataset]
    damaged: Dataset
    never_stored: tuple[str, str]
    wrong_class: tuple[str, str]
    other_county: Dataset

    def references(self) -> list[tuple[str, str]]:
        return [
            *((str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in self.stored),
            (str(self.damaged.SOPClassUID), str(self.damaged.SOPInstanceUID)),
            self.never_stored,
            self.wrong_class,
            (str(self.other_county.SOPClassUID), str(self.other_county.SOPInstanceUID)),
        ]


def stored_objects(node: Node, backend: dict[str, Any], damage: bool) -> Objects:
    """Three intact images and one to damage from the sensor, one image from Telemark; then the
    damaged one's stored bytes overwritten."""
    study = generate_uid()
    stored = [
        make_dataset(Spec(patient_id="01018012345", study_uid=study, seed=n)) for n in range(3)
    ]
    damaged = make_dataset(Spec(patient_id="01018012345", study_uid=study, seed=9))
    other = make_dataset(Spec(patient_id="02029054321", seed=7))
    store(node.port, SENSOR, *stored, damaged)
    store(node.port, TELEMARK_PAN, other)
    if damage:
        damage_blob(node.archive, backend, str(damaged.SOPInstanceUID))
    return Objects(
        stored=stored if damage else [*stored, damaged],
        damaged=damaged,
        never_stored=(INTRAORAL, generate_uid()),
        wrong_class=(DX_PRESENTATION, str(stored[0].SOPInstanceUID)),
        other_county=other,
    )


def damage_blob(archive: Archive, backend: dict[str, Any], sop_uid: str) -> None:
    """Flip bytes in the middle of the stored object behind the archive's back, as a failing
    disk would (file store) or a faulty tool writing to the bucket (S3: a new version)."""
    (instance,) = archive.index.find_instances(StudyQuery(sop_uids=(sop_uid,)))
    key = instance.blob.key
    data = bytearray(archive.blobs.read(key))
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(255 - b for b in data[middle : middle + 16])
    if backend:
        raw = Minio(
            backend["s3_endpoint"],
            access_key=backend["s3_access_key"],
            secret_key=backend["s3_secret_key"],
            secure=False,
        )
        raw.put_object(backend["s3_bucket"], key, BytesIO(bytes(data)), len(data))
    else:
        assert isinstance(archive.blobs, FileBlobStore)
        path = archive.blobs.root / "objects" / key
        path.chmod(0o644)
        path.write_bytes(bytes(data))
    assert archive.blobs.read(key) == bytes(data)


def assert_report_is_exact(report: Report, objects: Objects, transaction_uid: str) -> None:
    assert str(report.information.TransactionUID) == transaction_uid
    assert report.event_type == 2, "some failed: event type 2"
    assert report.committed() == {str(ds.SOPInstanceUID) for ds in objects.stored}
    expected_failures = {
        objects.never_stored[1]: NO_SUCH_OBJECT,
        str(objects.other_county.SOPInstanceUID): NO_SUCH_OBJECT,
    }
    if objects.damaged not in objects.stored:
        expected_failures[str(objects.damaged.SOPInstanceUID)] = PROCESSING_FAILURE
    failed = report.failed()
    wrong_class = failed.pop(objects.wrong_class[1])
    assert wrong_class == CLASS_INSTANCE_CONFLICT
    assert failed == expected_failures
    for item in report.information.FailedSOPSequence:
        if str(item.ReferencedSOPInstanceUID) == objects.wrong_class[1]:
            assert str(item.ReferencedSOPClassUID) == DX_PRESENTATION


def commitment_events(node: Node, transaction_uid: str) -> list[AuditEvent]:
    return [
        e
        for e in node.events(INSTANCES_ACCESSED)
        if e.details.get("transaction_uid") == transaction_uid
    ]


# -- the report on the requesting association -----------------------------------------------------


@pytest.mark.both_backends
def test_report_on_the_same_association_names_exactly_what_is_held_intact(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    with commitment_node(tmp_path, backend) as node:
        objects = stored_objects(node, backend, damage=True)
        transaction = generate_uid()
        code, report = request_commitment(
            node.port,
            SENSOR,
            commitment_request(objects.references(), transaction),
            wait_on_same=True,
        )
        assert code == SUCCESS
        assert report is not None
        assert report.association == "same"
        assert report.calling_ae == AE_TITLE
        assert_report_is_exact(report, objects, transaction)

        (audited,) = commitment_events(node, transaction)
        assert audited.actor == SENSOR
        assert audited.actor_kind == "dicom-ae"
        assert sorted(audited.details["committed"]) == sorted(report.committed())
        assert {f["sop_uid"]: f["reason"] for f in audited.details["failed"]} == {
            uid: f"0x{reason:04X}" for uid, reason in report.failed().items()
        }
        assert audited.patient_ids == ("01018012345",)
        assert audited.study_uids == (str(objects.stored[0].StudyInstanceUID),)
        assert audited.object_count == 3

        (alert,) = node.events(SECURITY_ALERT)
        assert alert.details["sop_uid"] == str(objects.damaged.SOPInstanceUID)
        assert alert.outcome == 8
        assert node.archive.audit.verify().ok


@pytest.mark.both_backends
def test_all_intact_objects_are_committed_on_either_backend(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    """Verification reads the stored bytes back from the file store or S3 alike."""
    with commitment_node(tmp_path, backend) as node:
        objects = stored_objects(node, backend, damage=False)
        transaction = generate_uid()
        references = [(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in objects.stored]
        code, report = request_commitment(
            node.port, SENSOR, commitment_request(references, transaction), wait_on_same=True
        )
        assert code == SUCCESS
        assert report is not None
        assert report.event_type == 1
        assert report.committed() == {uid for _, uid in references}
        assert "FailedSOPSequence" not in report.information
        assert str(report.information.RetrieveAETitle) == AE_TITLE

        code, report = request_commitment(
            node.port,
            SENSOR,
            commitment_request(objects.references(), generate_uid()),
            wait_on_same=True,
        )
        assert report is not None
        assert_report_is_exact(report, objects, str(report.information.TransactionUID))


# -- the report on a new association --------------------------------------------------------------


def test_report_comes_on_a_new_association_when_the_modality_has_released(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    modality_port = free_port()
    with (
        modality_scp(modality_port) as reports,
        commitment_node(tmp_path, backend, modality_port) as node,
    ):
        objects = stored_objects(node, backend, damage=True)
        transaction = generate_uid()
        code, _ = request_commitment(
            node.port,
            SENSOR,
            commitment_request(objects.references(), transaction),
            wait_on_same=False,
        )
        assert code == SUCCESS
        report = reports.get(timeout=REPORT_WAIT)
        assert report.association == "new"
        assert report.calling_ae == AE_TITLE
        assert_report_is_exact(report, objects, transaction)
        assert len(commitment_events(node, transaction)) == 1


def test_an_unreachable_modality_is_retried_then_given_up_and_audited(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    nobody_listens = free_port()
    with commitment_node(tmp_path, backend, nobody_listens) as node:
        objects = stored_objects(node, backend, damage=False)
        transaction = generate_uid()
        code, _ = request_commitment(
            node.port,
            SENSOR,
            commitment_request(objects.references(), transaction),
            wait_on_same=False,
        )
        assert code == SUCCESS
        undelivered = wait_for_undelivered(node, transaction)
        assert undelivered.outcome == 4
        assert "not delivered" in undelivered.outcome_description
        assert node.archive.audit.verify().ok


def wait_for_undelivered(node: Node, transaction: str) -> AuditEvent:
    """The give-up event, once three tries with backoff have failed (a deadline, not a timing)."""
    deadline = time.monotonic() + REPORT_WAIT
    while time.monotonic() < deadline:
        for event in commitment_events(node, transaction):
            if event.details.get("delivered") is False:
                return event
        time.sleep(0.1)
    raise AssertionError("the archive did not record that it gave up delivering the report")


# -- refusals -------------------------------------------------------------------------------------


def test_a_peer_without_the_commit_service_is_refused_and_audited(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    with commitment_node(tmp_path, backend) as node:
        stored = make_dataset(Spec(seed=3))
        store(node.port, STORE_ONLY, stored)
        request = commitment_request(
            [(str(stored.SOPClassUID), str(stored.SOPInstanceUID))], generate_uid()
        )
        code, report = request_commitment(node.port, STORE_ONLY, request, wait_on_same=True)
        assert code == NOT_AUTHORIZED
        assert report is None
        (alert,) = node.events(SECURITY_ALERT)
        assert alert.actor == STORE_ONLY
        assert alert.details["service"] == "commit"
        assert node.events(INSTANCES_ACCESSED) == []


def _without(ds: Dataset, keyword: str) -> Dataset:
    del ds[keyword]
    return ds


def _bad_item() -> Dataset:
    ds = commitment_request([(INTRAORAL, "1.2.3")], generate_uid())
    ds.ReferencedSOPSequence[0].ReferencedSOPInstanceUID = "not a uid"
    return ds


MALFORMED: list[tuple[str, Any, dict[str, Any], int]] = [
    (
        "no transaction uid",
        lambda: _without(commitment_request([(INTRAORAL, "1.2.3")], "1.2"), "TransactionUID"),
        {},
        0x0115,
    ),
    (
        "invalid transaction uid",
        lambda: commitment_request([(INTRAORAL, "1.2.3")], "1.02"),
        {},
        0x0115,
    ),
    ("empty sequence", lambda: commitment_request([], generate_uid()), {}, 0x0115),
    ("no action information", lambda: None, {}, 0x0115),
    ("invalid item uid", _bad_item, {}, 0x0115),
    (
        "wrong action type",
        lambda: commitment_request([(INTRAORAL, "1.2.3")], generate_uid()),
        {"action_type": 2},
        0x0123,
    ),
    (
        "wrong sop instance",
        lambda: commitment_request([(INTRAORAL, "1.2.3")], generate_uid()),
        {"instance_uid": "1.2.840.10008.1.20.1.2"},
        0x0112,
    ),
]


def test_malformed_requests_get_failure_statuses_and_the_node_keeps_serving(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    with commitment_node(tmp_path, backend) as node:
        for name, build, options, expected in MALFORMED:
            code, report = request_commitment(
                node.port, SENSOR, build(), wait_on_same=False, **options
            )
            assert code == expected, name
        assert node.events(INSTANCES_ACCESSED) == []

        stored = make_dataset(Spec(seed=5))
        store(node.port, SENSOR, stored)
        code, report = request_commitment(
            node.port,
            SENSOR,
            commitment_request(
                [(str(stored.SOPClassUID), str(stored.SOPInstanceUID))], generate_uid()
            ),
            wait_on_same=True,
        )
        assert code == SUCCESS
        assert report is not None
        assert report.committed() == {str(stored.SOPInstanceUID)}


def test_an_instance_with_a_conflicting_object_under_its_uid_is_not_committed(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    """The modality's copy may be the conflicting object, which the index does not serve."""
    with commitment_node(tmp_path, backend) as node:
        first = make_dataset(Spec(seed=1))
        intact = make_dataset(Spec(seed=2))
        store(node.port, SENSOR, first, intact)
        other = make_dataset(Spec(seed=3, sop_uid=str(first.SOPInstanceUID)))
        assert store_status(node.port, SENSOR, other) == 0x0111
        references = [(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in (first, intact)]
        code, report = request_commitment(
            node.port, SENSOR, commitment_request(references, generate_uid()), wait_on_same=True
        )
        assert code == SUCCESS
        assert report is not None
        assert report.committed() == {str(intact.SOPInstanceUID)}
        assert report.failed() == {str(first.SOPInstanceUID): PROCESSING_FAILURE}


def store_status(port: int, calling: str, ds: Dataset) -> int:
    ae = modality_ae(calling)
    ae.add_requested_context(str(ds.SOPClassUID), ExplicitVRLittleEndian)
    assoc = ae.associate(HOST, port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()
        ae.shutdown()
