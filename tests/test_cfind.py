"""C-FIND SCP with real clients: DCMTK's findscu at every level of both models, pynetdicom for
C-CANCEL and malformed identifiers, Orthanc as a peer that queries the archive.

What a clinic relies on: a workstation finds exactly the index's matches with the keys it asked
for, æøå come back right in the character set it speaks, it can cancel a long answer, bad
identifiers get a failure status that says why, an AE that is not configured cannot query at
all, a peer sees only its county's patients, and every query is in the audit log with its keys.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from arkiv.audit import Actor
from arkiv.config import Peer, Settings
from arkiv.counties import County
from arkiv.services import Archive
from dicom_node.server import DicomNode
from storage.records import AuditQuery
from tests.conftest import free_port, require_tool
from tests.dicom_factory import Spec, encode, make_dataset
from tests.servers import OrthancServer, ServerUnavailable

HOST = "127.0.0.1"
AE_TITLE = "ARKIV"
QUERY_EVENT = "110112"
SECURITY_ALERT = "110113"

FINDER = Peer("FINDER", County.VESTFOLD, host=HOST, services=frozenset({"find", "echo"}))
BUSK_FINDER = Peer("BUSKFIND", County.BUSKERUD, host=HOST, services=frozenset({"find"}))
STORE_ONLY = Peer("STOREONLY", County.VESTFOLD, host=HOST, services=frozenset({"store"}))
ORTHANC_PEER = Peer(
    "ORTHANC", County.VESTFOLD, host=HOST, services=frozenset({"find", "move", "get", "echo"})
)


@dataclass
class Node:
    archive: Archive
    port: int
    studies: dict[str, list[str]]
    """Study Instance UIDs by patient ID."""
    instances: dict[str, list[str]]
    """SOP Instance UIDs by Study Instance UID."""


PATIENTS = (
    ("P1", "Ødegård^Åse", County.VESTFOLD, ("IO", "PX")),
    ("P1", "Ødegård^Åse", County.VESTFOLD, ("IO",)),
    ("P2", "Hansen^Kari", County.VESTFOLD, ("PX",)),
    ("P3", "Berg^Ola", County.BUSKERUD, ("IO",)),
)


@contextmanager
def find_node(tmp_path: Path, instances_per_series: int = 2, **changes: Any) -> Iterator[Node]:
    settings = Settings(
        data_dir=tmp_path / "data",
        dicom_port=free_port(),
        peers=(FINDER, BUSK_FINDER, STORE_ONLY, ORTHANC_PEER),
        **changes,
    )
    archive = Archive(settings)
    studies: dict[str, list[str]] = {}
    instances: dict[str, list[str]] = {}
    for number, (patient_id, name, county, modalities) in enumerate(PATIENTS):
        study_uid = generate_uid()
        studies.setdefault(patient_id, []).append(study_uid)
        actor = Actor(name="MODALITY", kind="dicom-ae", county=county.value)
        for series_number, modality in enumerate(modalities, start=1):
            series_uid = generate_uid()
            for instance_number in range(1, instances_per_series + 1):
                spec = Spec(
                    patient_id=patient_id,
                    patient_name=name,
                    study_uid=study_uid,
                    series_uid=series_uid,
                    study_date=f"2024010{number + 1}",
                    modality=modality,
                    seed=number,
                )
                ds = make_dataset(spec)
                ds.SeriesNumber = series_number
                ds.InstanceNumber = instance_number
                archive.ingest.ingest_dicom(encode(ds), actor)
                instances.setdefault(study_uid, []).append(spec.sop_uid)
    node = DicomNode(archive)
    try:
        node.start(HOST, settings.dicom_port)
        yield Node(archive, settings.dicom_port, studies, instances)
    finally:
        node.stop()
        archive.close()


def findscu(
    node: Node, out: Path, model: str, *args: str, calling: str = "FINDER"
) -> tuple[subprocess.CompletedProcess[str], list[Dataset]]:
    """Run findscu, keeping each answer as a file; the answers in the order they came."""
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            require_tool("findscu"),
            model,
            "-X",
            "-od",
            str(out),
            "-aet",
            calling,
            "-aec",
            AE_TITLE,
            HOST,
            str(node.port),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    answers: list[Dataset] = [pydicom.dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]
    return result, answers


def keys(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("-k", pair)]


# -- findscu at every level ------------------------------------------------------------------------


def test_patient_root_every_level(tmp_path: Path) -> None:
    with find_node(tmp_path) as node:
        result, patients = findscu(
            node,
            tmp_path / "patients",
            "-P",
            *keys(
                "QueryRetrieveLevel=PATIENT",
                "PatientName=hans*",
                "PatientID",
                "PatientBirthDate",
                "NumberOfPatientRelatedStudies",
                "NumberOfPatientRelatedInstances",
            ),
        )
        assert result.returncode == 0, result.stderr
        assert [(p.PatientID, str(p.PatientName)) for p in patients] == [("P2", "Hansen^Kari")]
        assert patients[0].NumberOfPatientRelatedStudies == 1
        assert patients[0].NumberOfPatientRelatedInstances == 2
        assert patients[0].PatientBirthDate == "19700101"

        result, studies = findscu(
            node,
            tmp_path / "studies",
            "-P",
            *keys(
                "QueryRetrieveLevel=STUDY",
                "PatientID=P1",
                "StudyInstanceUID",
                "StudyDate",
                "ModalitiesInStudy",
                "NumberOfStudyRelatedInstances",
                "InstitutionName",
            ),
        )
        assert result.returncode == 0, result.stderr
        assert {s.StudyInstanceUID for s in studies} == set(node.studies["P1"])
        by_uid = {s.StudyInstanceUID: s for s in studies}
        first = by_uid[node.studies["P1"][0]]
        assert list(first.ModalitiesInStudy) == ["IO", "PX"]
        assert first.NumberOfStudyRelatedInstances == 4
        assert first.InstitutionName == ""  # asked, not held: returned empty
        assert all(s.PatientID == "P1" for s in studies)  # the unique key above

        study_uid = node.studies["P1"][0]
        result, series = findscu(
            node,
            tmp_path / "series",
            "-P",
            *keys(
                "QueryRetrieveLevel=SERIES",
                "PatientID=P1",
                f"StudyInstanceUID={study_uid}",
                "SeriesInstanceUID",
                "Modality=PX",
                "NumberOfSeriesRelatedInstances",
            ),
        )
        assert result.returncode == 0, result.stderr
        assert [(s.Modality, s.NumberOfSeriesRelatedInstances) for s in series] == [("PX", 2)]

        result, images = findscu(
            node,
            tmp_path / "images",
            "-P",
            *keys(
                "QueryRetrieveLevel=IMAGE",
                "PatientID=P1",
                f"StudyInstanceUID={study_uid}",
                f"SeriesInstanceUID={series[0].SeriesInstanceUID}",
                "SOPInstanceUID",
                "InstanceNumber",
            ),
        )
        assert result.returncode == 0, result.stderr
        assert sorted(i.InstanceNumber for i in images) == [1, 2]
        assert {i.SOPInstanceUID for i in images} <= set(node.instances[study_uid])
        assert all(i.QueryRetrieveLevel == "IMAGE" for i in images)


def test_study_root_levels_and_ranges(tmp_path: Path) -> None:
    with find_node(tmp_path) as node:
        result, studies = findscu(
            node,
            tmp_path / "studies",
            "-S",
            *keys(
                "QueryRetrieveLevel=STUDY",
                "StudyDate=20240102-20240103",
                "StudyInstanceUID",
                "PatientName",
            ),
        )
        assert result.returncode == 0, result.stderr
        expected = {node.studies["P1"][1], node.studies["P2"][0]}
        assert {s.StudyInstanceUID for s in studies} == expected
        assert "PatientID" not in studies[0]  # Study Root: not asked, not a unique key

        uids = "\\".join(sorted(expected))
        result, series = findscu(
            node,
            tmp_path / "series",
            "-S",
            *keys("QueryRetrieveLevel=SERIES", f"StudyInstanceUID={uids}", "Modality"),
        )
        assert result.returncode == 0, result.stderr
        assert sorted(s.Modality for s in series) == ["IO", "PX"]
        assert all(s.SeriesInstanceUID for s in series)

        result, images = findscu(
            node,
            tmp_path / "images",
            "-S",
            *keys("QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={uids}", "SOPInstanceUID"),
        )
        assert result.returncode == 0, result.stderr
        want = {uid for study in expected for uid in node.instances[study]}
        assert {i.SOPInstanceUID for i in images} == want


def _query_file(path: Path, charset: str, name: str) -> Path:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = "PATIENT"
    ds.PatientName = name
    ds.PatientID = ""
    ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=False)
    return path


@pytest.mark.parametrize(
    ("charset", "encoding"), [("ISO_IR 100", "latin-1"), ("ISO_IR 192", "utf-8")]
)
def test_norwegian_letters_both_ways_in_the_callers_character_set(
    tmp_path: Path, charset: str, encoding: str
) -> None:
    with find_node(tmp_path) as node:
        query = _query_file(tmp_path / "query.dcm", charset, "ØDEGÅRD*")
        assert "ØDEGÅRD".encode(encoding) in query.read_bytes()
        result, answers = findscu(node, tmp_path / "out", "-P", str(query))
        assert result.returncode == 0, result.stderr
        assert [str(a.PatientName) for a in answers] == ["Ødegård^Åse"]
        assert answers[0].SpecificCharacterSet == charset
        raw = next((tmp_path / "out").glob("rsp*.dcm")).read_bytes()
        assert "Ødegård^Åse".encode(encoding) in raw


# -- pynetdicom: cancel, failures, limits ---------------------------------------------------------


@contextmanager
def scu(node: Node, calling: str = "FINDER") -> Iterator[Any]:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(HOST, node.port, ae_title=AE_TITLE)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def identifier(level: str | None, **values: Any) -> Dataset:
    ds = Dataset()
    if level is not None:
        ds.QueryRetrieveLevel = level
    for name, value in values.items():
        setattr(ds, name, value)
    return ds


def statuses_of(assoc: Any, ds: Dataset, model: Any) -> list[tuple[int, Dataset | None, Any]]:
    return [(int(status.Status), status, answer) for status, answer in assoc.send_c_find(ds, model)]


def test_cancel_mid_stream_answers_cancel(tmp_path: Path) -> None:
    with find_node(tmp_path, instances_per_series=60) as node, scu(node) as assoc:
        assert assoc.is_established
        responses = assoc.send_c_find(
            identifier("IMAGE", SOPInstanceUID=""),
            StudyRootQueryRetrieveInformationModelFind,
            msg_id=7,
        )
        first_status, _ = next(responses)
        assert first_status.Status == 0xFF00
        assoc.send_c_cancel(7, query_model=StudyRootQueryRetrieveInformationModelFind)
        rest = [int(status.Status) for status, _ in responses]
        assert rest[-1] == 0xFE00
        pending = 1 + len(rest) - 1
        assert pending < 60 * 5  # fewer answers than matches


@pytest.mark.parametrize(
    ("model", "ds", "status", "comment"),
    [
        (StudyRootQueryRetrieveInformationModelFind, identifier("PATIENT"), 0xA900, "Patient"),
        (
            StudyRootQueryRetrieveInformationModelFind,
            identifier(None, PatientID="P1"),
            0xA900,
            "Level",
        ),
        (StudyRootQueryRetrieveInformationModelFind, identifier("SERIESX"), 0xA900, "Level"),
        (
            StudyRootQueryRetrieveInformationModelFind,
            identifier("STUDY", StudyDate="2024-01-01"),
            0xC000,
            "StudyDate",
        ),
        (
            StudyRootQueryRetrieveInformationModelFind,
            identifier("STUDY", StudyDate="20240301-20240101"),
            0xC000,
            "StudyDate",
        ),
        (
            StudyRootQueryRetrieveInformationModelFind,
            identifier("STUDY", StudyInstanceUID="1.2.abc"),
            0xC000,
            "UID",
        ),
        (
            StudyRootQueryRetrieveInformationModelFind,
            identifier("STUDY", InstitutionName="Klinikk"),
            0xC000,
            "InstitutionName",
        ),
        (
            PatientRootQueryRetrieveInformationModelFind,
            identifier("PATIENT", StudyDate="20240101"),
            0xA900,
            "StudyDate",
        ),
    ],
)
def test_bad_identifiers_get_failure_statuses_with_reasons(
    tmp_path: Path, model: Any, ds: Dataset, status: int, comment: str
) -> None:
    with find_node(tmp_path, instances_per_series=1) as node, scu(node) as assoc:
        answers = statuses_of(assoc, ds, model)
        assert len(answers) == 1
        code, final, _ = answers[0]
        assert code == status
        assert final is not None and comment in str(final.ErrorComment)
        # the node still serves
        ok = statuses_of(assoc, identifier("STUDY", PatientID="P2"), model)
        assert [c for c, _, _ in ok] == [0xFF00, 0x0000]


def test_sql_metacharacters_match_literally(tmp_path: Path) -> None:
    with find_node(tmp_path, instances_per_series=1) as node, scu(node) as assoc:
        model = StudyRootQueryRetrieveInformationModelFind
        for value in ("%' OR 1=1 --", "%", "_%"):
            answers = statuses_of(assoc, identifier("STUDY", PatientName=value), model)
            assert [c for c, _, _ in answers] == [0x0000]


def test_more_matches_than_the_limit_end_with_out_of_resources(tmp_path: Path) -> None:
    with find_node(tmp_path, instances_per_series=1, dicom_find_max_results=3) as node:
        with scu(node) as assoc:
            answers = statuses_of(
                assoc,
                identifier("IMAGE", SOPInstanceUID=""),
                StudyRootQueryRetrieveInformationModelFind,
            )
        assert [c for c, _, _ in answers] == [0xFF00] * 3 + [0xA700]
        assert "narrow" in str(answers[-1][1].ErrorComment)  # type: ignore[union-attr]


# -- who may query ---------------------------------------------------------------------------------


def test_unknown_ae_is_rejected_for_query_but_may_still_verify(tmp_path: Path) -> None:
    with find_node(tmp_path, instances_per_series=1) as node:
        result, answers = findscu(
            node, tmp_path / "out", "-S", *keys("QueryRetrieveLevel=STUDY"), calling="STRANGER"
        )
        assert result.returncode != 0 and answers == []
        assert "Calling AE Title Not Recognized" in result.stderr, result.stderr
        alerts = node.archive.index.find_audit_events(AuditQuery(event_id=SECURITY_ALERT))
        assert any(a.actor == "STRANGER" and "110126" in a.details["subtype"] for a in alerts), (
            alerts
        )
        echo = subprocess.run(
            [require_tool("echoscu"), "-aet", "STRANGER", "-aec", AE_TITLE, HOST, str(node.port)],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert echo.returncode == 0


def test_peer_without_find_service_is_refused(tmp_path: Path) -> None:
    with find_node(tmp_path, instances_per_series=1) as node, scu(node, "STOREONLY") as assoc:
        answers = statuses_of(
            assoc, identifier("STUDY", PatientID=""), StudyRootQueryRetrieveInformationModelFind
        )
        assert [c for c, _, _ in answers] == [0x0124]


def test_a_peer_sees_only_its_county_and_each_query_is_audited(tmp_path: Path) -> None:
    with find_node(tmp_path, instances_per_series=1) as node:
        result, answers = findscu(
            node,
            tmp_path / "busk",
            "-P",
            *keys("QueryRetrieveLevel=PATIENT", "PatientID", "PatientName=*"),
            calling="BUSKFIND",
        )
        assert result.returncode == 0, result.stderr
        assert [a.PatientID for a in answers] == ["P3"]
        result, answers = findscu(
            node,
            tmp_path / "vestfold",
            "-P",
            *keys("QueryRetrieveLevel=PATIENT", "PatientID", "PatientName=*"),
        )
        assert sorted(a.PatientID for a in answers) == ["P1", "P2"]
        events = node.archive.index.find_audit_events(AuditQuery(event_id=QUERY_EVENT))
        busk = [e for e in events if e.actor == "BUSKFIND"]
        assert len(busk) == 1
        assert "PATIENT ROOT PATIENT" in busk[0].query and "PatientName=*" in busk[0].query
        assert busk[0].patient_ids == ("P3",) and busk[0].actor_kind == "dicom-ae"
        assert busk[0].county == County.BUSKERUD.value


# -- Orthanc as a peer ----------------------------------------------------------------------------


@pytest.mark.slow
def test_orthanc_queries_the_archive(tmp_path: Path) -> None:
    with find_node(tmp_path, instances_per_series=1) as node:
        try:
            orthanc = OrthancServer.start(tmp_path / "orthanc")
        except ServerUnavailable as exc:
            pytest.fail(str(exc))
        try:
            orthanc.add_modality("arkiv", AE_TITLE, HOST, node.port)
            query = orthanc.rest(
                "POST",
                "/modalities/arkiv/query",
                {"Level": "Study", "Query": {"PatientName": "ødegård*", "StudyDate": ""}},
            )
            answers = orthanc.rest("GET", f"/queries/{query['ID']}/answers?expand")
        finally:
            orthanc.stop()
    found = {a["0020,000d"]["Value"] for a in answers}
    assert found == set(node.studies["P1"])
    names = {a["0010,0010"]["Value"] for a in answers}
    assert names == {"Ødegård^Åse"}
