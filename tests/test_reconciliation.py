"""Patient reconciliation: the same people under different local IDs in two counties' archives
are one patient by national ID; what cannot be decided is listed, never merged; merges, splits,
accepts and undos by an administrator are audited and reversible (CLI and admin page)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from arkiv.accounts import Role
from arkiv.audit import Actor, EventType
from arkiv.cli import main
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.errors import InvalidObject
from arkiv.ingest import IngestOutcome
from arkiv.reconciliation import ChangeRefused, NewRecord, conflicts_touching, same_name
from arkiv.services import Archive
from dicom_node.server import DicomNode
from storage.records import AuditQuery, StudyQuery
from tests.conftest import PASSWORD, RunningArchive, free_port, post_login
from tests.dicom_factory import Spec, encode, make_dataset, synthetic_national_id
from tests.test_cfind import FINDER, HOST, Node, findscu, keys

VESTFOLD = Actor(name="import:vestfold", kind="system", county="vestfold")
TELEMARK = Actor(name="import:telemark", kind="system", county="telemark")
BUSKERUD = Actor(name="import:buskerud", kind="system", county="buskerud")
OPERATOR = Actor(name="cli:operator", kind="system", county="vestfold")

KARI = synthetic_national_id(date(1970, 1, 1), 123)
OLA = synthetic_national_id(date(1980, 5, 17), 200)
PER = synthetic_national_id(date(1990, 12, 24), 300)


def _object(
    patient_id: str,
    name: str,
    birth_date: str,
    *,
    other_ids: list[tuple[str, str]] | None = None,
    retired_other_ids: list[str] | None = None,
    issuer: str = "",
    study_uid: str | None = None,
) -> bytes:
    spec = Spec(patient_id=patient_id, patient_name=name, birth_date=birth_date)
    if study_uid:
        spec.study_uid = study_uid
    ds = make_dataset(spec)
    if issuer:
        ds.IssuerOfPatientID = issuer
    if other_ids:
        items = []
        for value, item_issuer in other_ids:
            item = Dataset()
            item.PatientID = value
            item.IssuerOfPatientID = item_issuer
            item.TypeOfPatientID = "TEXT"
            items.append(item)
        ds.OtherPatientIDsSequence = DicomSequence(items)
    if retired_other_ids:
        ds.add_new((0x0010, 0x1000), "LO", retired_other_ids)
    return encode(ds)


def _ingest(archive: Archive, data: bytes, actor: Actor, origin: str) -> str:
    result = archive.ingest.ingest_dicom(data, actor, origin=origin)
    assert result.outcome is IngestOutcome.STORED, result.message
    return result.study_uid


def _studies(archive: Archive, patient_id: str) -> set[tuple[str, str]]:
    found = archive.index.find_studies(StudyQuery(patient_id=patient_id))
    return {(s.study_uid, s.county) for s in found}


def _events(archive: Archive, action: str = "U") -> list[Any]:
    events = archive.index.find_audit_events(
        AuditQuery(event_id=EventType.PATIENT_RECORD.code, action=action, oldest_first=True)
    )
    return events


# -- matching at ingest ----------------------------------------------------------------------------


@pytest.mark.both_backends
def test_same_patients_under_local_ids_in_two_counties_are_one_patient(archive: Archive) -> None:
    # Vestfold's archive knew Kari as VF-1001, Telemark's as 4711; both carry her national ID
    # among the other IDs (Telemark's in the retired Other Patient IDs).
    vestfold_kari = _ingest(
        archive,
        _object("VF-1001", "Nordmann^Kari", "19700101", other_ids=[(KARI, "NO-FNR")]),
        VESTFOLD,
        "file:/mnt/vestfold/IMG1",
    )
    telemark_kari = _ingest(
        archive,
        _object("4711", "NORDMANN^KARI", "19700101", retired_other_ids=["X-9", KARI]),
        TELEMARK,
        "file:/mnt/telemark/IMG1",
    )
    vestfold_ola = _ingest(
        archive,
        _object("VF-2002", "Hansen^Ola", "19800517", other_ids=[(OLA, "")]),
        VESTFOLD,
        "file:/mnt/vestfold/IMG2",
    )
    telemark_ola = _ingest(
        archive,
        _object("TM-0042", "Hansen^Ola", "19800517", other_ids=[(OLA, "")], issuer="TM"),
        TELEMARK,
        "file:/mnt/telemark/IMG2",
    )

    assert _studies(archive, KARI) == {(vestfold_kari, "vestfold"), (telemark_kari, "telemark")}
    assert _studies(archive, OLA) == {(vestfold_ola, "vestfold"), (telemark_ola, "telemark")}
    patients = archive.index.find_patients(StudyQuery(patient_id=KARI))
    assert [(p.patient_id, p.study_count, p.counties) for p in patients] == [
        (KARI, 2, ("telemark", "vestfold"))
    ]
    # The local IDs are not records of their own; they are kept as aliases of the patient.
    assert archive.index.find_studies(StudyQuery(patient_id="VF-1001")) == []
    records = archive.index.patient_records
    (kari,) = records.patients_by_id(KARI)
    assert records.patients_by_id("4711") == [kari]
    aliases = records.aliases([kari.pk])[kari.pk]
    assert {(a.local_id, a.issuer, a.county) for a in aliases} == {
        ("VF-1001", "", "vestfold"),
        ("4711", "", "telemark"),
    }
    assert {a.source for a in aliases} == {
        "import:file:/mnt/vestfold/IMG1",
        "import:file:/mnt/telemark/IMG1",
    }
    (ola,) = records.patients_by_id(OLA)
    assert {(a.local_id, a.issuer) for a in records.aliases([ola.pk])[ola.pk]} == {
        ("VF-2002", ""),
        ("TM-0042", "TM"),
    }
    # Same person, same name up to case: nothing to resolve.
    assert archive.reconciliation.conflicts(OPERATOR) == []
    # The stored object is exactly what arrived: its own Patient ID is still the local one.
    (stored,) = archive.index.find_instances(StudyQuery(study_uids=(vestfold_kari,)))
    kept = pydicom.dcmread(BytesIO(archive.blobs.read(stored.blob.key)))
    assert kept.PatientID == "VF-1001"


def test_qido_by_national_id_finds_both_counties_studies(running: RunningArchive) -> None:
    archive = running.archive
    first = _ingest(
        archive,
        _object("VF-1001", "Nordmann^Kari", "19700101", other_ids=[(KARI, "")]),
        VESTFOLD,
        "file:/a",
    )
    second = _ingest(
        archive,
        _object("4711", "Nordmann^Kari", "19700101", other_ids=[(KARI, "")]),
        TELEMARK,
        "file:/b",
    )
    clinician = running.add_user("tannlege", Role.CLINICIAN, County.VESTFOLD)
    own = clinician.get("/dicom-web/studies", params={"PatientID": KARI})
    assert own.status_code == 200, own.text
    assert {s["0020000D"]["Value"][0] for s in own.json()} == {first}
    grant = clinician.post(
        "/api/break-glass", json={"patient_id": KARI, "reason": "akutt", "free_text": "smerter"}
    )
    assert grant.status_code in (200, 201), grant.text
    both = clinician.get("/dicom-web/studies", params={"PatientID": KARI})
    assert {s["0020000D"]["Value"][0] for s in both.json()} == {first, second}
    assert {s["00100020"]["Value"][0] for s in both.json()} == {KARI}


def test_a_workstation_finds_a_local_id_object_by_national_id_with_findscu(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", dicom_port=free_port(), peers=(FINDER,))
    archive = Archive(settings)
    node = DicomNode(archive)
    try:
        local = _object("VF-1001", "Nordmann^Kari", "19700101", other_ids=[(KARI, "")])
        study = _ingest(archive, local, VESTFOLD, "file:/a")
        node.start(HOST, settings.dicom_port)
        where = Node(archive, settings.dicom_port, {}, {})
        query = keys("QueryRetrieveLevel=STUDY", f"PatientID={KARI}", "StudyInstanceUID")
        result, answers = findscu(where, tmp_path / "answers", "-S", *query)
        assert result.returncode == 0, result.stderr
        assert [(a.StudyInstanceUID, a.PatientID) for a in answers] == [(study, KARI)]
        result, by_local = findscu(
            where,
            tmp_path / "by-local",
            "-S",
            *keys("QueryRetrieveLevel=STUDY", "PatientID=VF-1001"),
        )
        assert by_local == [], "the record is the national ID's; the local ID is an alias"
    finally:
        node.stop()
        archive.close()


# -- conflicts -------------------------------------------------------------------------------------


def test_names_compare_without_case_accents_order_or_missing_middle_names() -> None:
    assert same_name("Nordmann^Kari", "NORDMANN^KARI")
    assert same_name("Nordmann^Kari", "Kari Nordmann")
    assert same_name("Nordmann^Kari Anne", "Nordmann^Kari")
    assert same_name("Sørensen^Åse", "Sorensen^Ase")
    assert same_name("", "Nordmann^Kari")
    assert not same_name("Nordmann^Kari", "Nordman^Kari")
    assert not same_name("Nordmann^Kari", "Kari")
    assert not same_name("Hansen^Ola", "Hansen^Ole")


def _no_id_object(archive: Archive, actor: Actor) -> str:
    """An object without Patient ID: the live doors refuse it, an import keeps it (an old
    archive's object may not be lost) for an administrator to file."""
    data = _object("", "Ukjent^Pasient", "", study_uid=None)
    with pytest.raises(InvalidObject, match="PatientID is missing"):
        archive.ingest.ingest_dicom(data, actor)
    result = archive.ingest.ingest_dicom(data, actor, origin="file:/mnt/buskerud/NOID")
    assert result.outcome is IngestOutcome.STORED
    return result.study_uid


@dataclass
class Corpus:
    ola_vestfold: str
    ola_telemark: str
    ola_birth: str
    per_wrong_birth: str
    local_only: str
    ambiguous: str
    no_id: str
    per_issuer: str


def _conflicting_corpus(archive: Archive) -> Corpus:
    ola_vestfold = _ingest(
        archive, _object(OLA, "Hansen^Ola", "19800517"), VESTFOLD, "file:/v/OLA1"
    )
    # Same person by spelling rules: case, order, a middle name: not conflicts.
    _ingest(archive, _object(OLA, "HANSEN^OLA", "19800517"), VESTFOLD, "file:/v/OLA2")
    _ingest(archive, _object(OLA, "Hansen^Ola Johan", "19800517"), VESTFOLD, "file:/v/OLA3")
    ola_telemark = _ingest(
        archive, _object(OLA, "Hansen^Ole", "19800517"), TELEMARK, "file:/t/OLA1"
    )
    ola_birth = _ingest(archive, _object(OLA, "Hansen^Ola", "19800518"), TELEMARK, "file:/t/OLA2")
    per_wrong_birth = _ingest(
        archive, _object(PER, "Olsen^Per", "19901225"), BUSKERUD, "file:/b/PER1"
    )
    local_only = _ingest(
        archive, _object("BU-0001", "Berg^Lise", "19650203"), BUSKERUD, "file:/b/LISE"
    )
    ambiguous = _ingest(
        archive,
        _object("BU-0002", "Dahl^Nils", "19700101", other_ids=[(KARI, ""), (OLA, "")]),
        BUSKERUD,
        "file:/b/NILS",
    )
    no_id = _no_id_object(archive, BUSKERUD)
    # Telemark filed Per's national ID with an issuer: a second record of the same ID.
    per_issuer = _ingest(
        archive, _object(PER, "Olsen^Per", "19901224", issuer="TM-FNR"), TELEMARK, "file:/t/PER"
    )
    return Corpus(
        ola_vestfold,
        ola_telemark,
        ola_birth,
        per_wrong_birth,
        local_only,
        ambiguous,
        no_id,
        per_issuer,
    )


@pytest.mark.both_backends
def test_each_kind_of_conflict_is_listed_and_nothing_is_merged(archive: Archive) -> None:
    corpus = _conflicting_corpus(archive)
    found = archive.reconciliation.conflicts(OPERATOR)
    by_kind: dict[str, list[Any]] = {}
    for conflict in found:
        by_kind.setdefault(conflict.kind.value, []).append(conflict)

    identity = {c.patient.patient_id: c for c in by_kind["identity"]}
    assert set(identity) == {OLA, PER}
    ola_problems = " | ".join(identity[OLA].problems)
    assert "'Hansen^Ole' (telemark, import:file:/t/OLA1) differs from 'Hansen^Ola'" in ola_problems
    assert "birth date 19800518 (telemark, import:file:/t/OLA2) differs" in ola_problems
    assert "HANSEN^OLA" not in ola_problems and "Ola Johan" not in ola_problems
    assert "differs from the national ID's date 19901224" in " ".join(identity[PER].problems)

    invalid = {c.patient.patient_id: c for c in by_kind["invalid-id"]}
    assert set(invalid) == {"BU-0001", "BU-0002"}
    assert "several national IDs" in invalid["BU-0002"].problems[0]
    (no_id,) = by_kind["no-id"]
    same_id = by_kind["same-id"]
    assert {(c.patient.patient_id, c.patient.issuer) for c in same_id} == {
        (PER, ""),
        (PER, "TM-FNR"),
    }
    assert [s.study_uid for s in no_id.studies] == [corpus.no_id]
    assert all(c.summary for c in found)

    # Listed, not merged: Ola's record keeps its first name; the others remain records apart.
    (ola,) = archive.index.find_patients(StudyQuery(patient_id=OLA))
    assert ola.patient_name == "Hansen^Ola" and ola.study_count == 5
    assert _studies(archive, "BU-0002") == {(corpus.ambiguous, "buskerud")}
    assert _studies(archive, KARI) == set()
    assert archive.index.patient_records.changes() == []
    # Per county: Telemark sees Ola's conflict (its studies), not Buskerud's records.
    telemark = archive.reconciliation.conflicts(OPERATOR, "telemark")
    assert {(c.kind.value, c.patient.patient_id) for c in telemark} == {
        ("identity", OLA),
        ("same-id", PER),
    }
    # Looking at the list is itself recorded: it shows names and IDs.
    (looked, *_rest) = _events(archive, "R")
    assert OLA in looked.patient_ids and looked.actor == "cli:operator"


def test_conflicts_touching_an_imports_objects(archive: Archive) -> None:
    corpus = _conflicting_corpus(archive)
    # What an import report asks: its objects' patient IDs and studies (many more than one
    # statement may name at once on SQLite, most of them without conflicts).
    unrelated = [f"1.2.826.0.1.{n}" for n in range(40_000)]
    touched = conflicts_touching(
        archive.index,
        patient_ids=[OLA, "NO-SUCH-ID"],
        study_uids=[corpus.local_only, corpus.no_id, *unrelated],
    )
    summaries = sorted(c["summary"] for c in touched)
    assert [s.split(" ")[0] for s in summaries] == ["identity", "invalid-id", "no-id"]
    assert any("BU-0001" in s and "1 study in buskerud" in s for s in summaries)
    assert all(c["record"] for c in touched)
    assert conflicts_touching(archive.index, patient_ids=[KARI]) == []


@pytest.mark.both_backends
def test_service_merge_split_accept_undo(archive: Archive) -> None:
    corpus = _conflicting_corpus(archive)
    service = archive.reconciliation
    lise = service.record("BU-0001")
    (ola,) = archive.index.patient_records.patients_by_id(OLA)

    merged = service.merge(OPERATOR, f"#{lise.pk}", OLA, reason="same person, checked")
    assert merged.change.study_uids == (corpus.local_only,)
    assert (corpus.local_only, "buskerud") in _studies(archive, OLA)
    assert _studies(archive, "BU-0001") == set()
    # A later object naming the merged record is filed under the record it was merged into.
    later = _ingest(archive, _object("BU-0001", "Berg^Lise", "19650203"), BUSKERUD, "file:/b/L2")
    assert (later, "buskerud") in _studies(archive, OLA)
    with pytest.raises(ChangeRefused, match="already merged"):
        service.merge(OPERATOR, f"#{lise.pk}", OLA)

    split = service.split(
        OPERATOR, OLA, [corpus.ola_telemark], new=NewRecord(PER, name="Olsen^Per")
    )
    assert _studies(archive, PER) >= {(corpus.ola_telemark, "telemark")}
    with pytest.raises(ChangeRefused, match=f"later changes.*{split.change.id}"):
        service.undo(OPERATOR, merged.change.id)
    service.undo(OPERATOR, split.change.id)
    assert (corpus.ola_telemark, "telemark") in _studies(archive, OLA)
    service.undo(OPERATOR, merged.change.id)
    assert _studies(archive, "BU-0001") == {(corpus.local_only, "buskerud"), (later, "buskerud")}
    with pytest.raises(ChangeRefused, match="already undone"):
        service.undo(OPERATOR, merged.change.id)

    accepted = service.accept(OPERATOR, f"#{ola.pk}", name="Hansen^Ole", birth_date="19800517")
    (renamed,) = archive.index.find_patients(StudyQuery(patient_id=OLA))
    assert renamed.patient_name == "Hansen^Ole"
    kinds = {(c.kind.value, c.patient.patient_id) for c in service.conflicts(OPERATOR)}
    assert ("identity", OLA) not in kinds
    with pytest.raises(ChangeRefused, match="not a name seen"):
        service.accept(OPERATOR, f"#{ola.pk}", name="Hansen^Olaf")
    service.undo(OPERATOR, accepted.change.id)
    (restored,) = archive.index.find_patients(StudyQuery(patient_id=OLA))
    assert restored.patient_name == "Hansen^Ola"
    kinds = {(c.kind.value, c.patient.patient_id) for c in service.conflicts(OPERATOR)}
    assert ("identity", OLA) in kinds

    # A study without any ID, identified by the administrator as Per's.
    (unidentified,) = [c for c in service.conflicts(OPERATOR) if c.kind.value == "no-id"]
    service.merge(
        OPERATOR, unidentified.ref, f"#{archive.index.patient_records.patients_by_id(PER)[0].pk}"
    )
    assert (corpus.no_id, "buskerud") in _studies(archive, PER)
    assert "no-id" not in {c.kind.value for c in service.conflicts(OPERATOR)}

    events = _events(archive)
    assert [e.details["subtype"] for e in events] == [
        "patient merge",
        "patient split",
        "patient undo",
        "patient undo",
        "patient accept",
        "patient undo",
        "patient merge",
    ]
    first = events[0]
    assert set(first.patient_ids) == {"BU-0001", OLA}
    assert first.study_uids == (corpus.local_only,)
    assert first.details["reason"] == "same person, checked"
    assert {"buskerud", "vestfold"} <= set(first.counties)
    assert archive.audit.verify().ok


# -- the command line ------------------------------------------------------------------------------


def _cli(data_dir: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["patients", *args, "--data", str(data_dir)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_lists_merges_splits_accepts_and_undoes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    archive = Archive(Settings(data_dir=data_dir))
    try:
        corpus = _conflicting_corpus(archive)
    finally:
        archive.close()

    code, out, _ = _cli(data_dir, "conflicts", "--json", capsys=capsys)
    assert code == 0
    listed = json.loads(out)
    assert {c["kind"] for c in listed} == {"identity", "invalid-id", "no-id", "same-id"}
    lise = next(c for c in listed if c["patient_id"] == "BU-0001")
    code, out, _ = _cli(data_dir, "conflicts", "--county", "telemark", capsys=capsys)
    assert code == 0 and "2 conflicts" in out and OLA in out

    code, out, _ = _cli(data_dir, "merge", f"#{lise['record']}", "--into", OLA, capsys=capsys)
    assert code == 0, out
    merge_id = int(re.search(r"change (\d+)", out).group(1))  # type: ignore[union-attr]
    code, out, _ = _cli(
        data_dir, "split", OLA, "--study", corpus.ola_telemark, "--new-id", PER, capsys=capsys
    )
    assert code == 0, out
    split_id = int(re.search(r"change (\d+)", out).group(1))  # type: ignore[union-attr]
    code, _, err = _cli(data_dir, "undo", str(merge_id), capsys=capsys)
    assert code == 1 and f"{split_id} (split" in err
    code, _, err = _cli(data_dir, "merge", "NO-SUCH-ID", "--into", OLA, capsys=capsys)
    assert code == 1 and "no patient record has Patient ID 'NO-SUCH-ID'" in err
    assert _cli(data_dir, "undo", str(split_id), capsys=capsys)[0] == 0
    assert _cli(data_dir, "undo", str(merge_id), capsys=capsys)[0] == 0
    code, out, _ = _cli(
        data_dir, "accept", OLA, "--name", "Hansen^Ole", "--reason", "ID card", capsys=capsys
    )
    assert code == 0 and "accepted" in out
    code, out, _ = _cli(data_dir, "changes", "--json", capsys=capsys)
    changes = json.loads(out)
    assert [c["kind"] for c in changes] == ["accept", "undo", "undo", "split", "merge"]
    merge, split = changes[-1], changes[-2]
    assert (merge["undone_by"], split["undone_by"]) == (changes[1]["change"], changes[2]["change"])

    archive = Archive(Settings(data_dir=data_dir))
    try:
        events = _events(archive)
        assert [e.details["subtype"] for e in events] == [
            "patient merge",
            "patient split",
            "patient undo",
            "patient undo",
            "patient accept",
        ]
        assert {e.actor for e in events} == {next(iter({e.actor for e in events}))}
        assert events[0].actor.startswith("cli:")
        assert _studies(archive, "BU-0001") == {(corpus.local_only, "buskerud")}
        (ola,) = archive.index.find_patients(StudyQuery(patient_id=OLA))
        assert ola.patient_name == "Hansen^Ole"
    finally:
        archive.close()


# -- the admin page --------------------------------------------------------------------------------


_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def signed_in(running: RunningArchive) -> Iterator[dict[str, httpx.Client]]:
    clients: dict[str, httpx.Client] = {}
    for name, role in (
        ("admin", Role.ADMIN),
        ("joint", Role.JOINT_AUDITOR),
        ("clinician", Role.CLINICIAN),
    ):
        running.archive.accounts.add_user(name, PASSWORD, role, County.VESTFOLD)
        client = running.client()
        assert post_login(client, name, PASSWORD).status_code == 303
        clients[name] = client
    try:
        yield clients
    finally:
        for client in clients.values():
            client.close()


def _form(client: httpx.Client, path: str, data: dict[str, Any]) -> httpx.Response:
    """Post a form as the page's browser would: with the token the page put into it."""
    page = client.get("/admin/patients/conflicts")
    token = _TOKEN.search(page.text)
    assert token, "the page has no form token"
    headers = {"X-CSRF-Token": ""}
    return client.post(path, data={**data, "csrf_token": token.group(1)}, headers=headers)


def test_admin_page_resolves_conflicts_and_others_are_refused(
    running: RunningArchive, signed_in: dict[str, httpx.Client]
) -> None:
    archive = running.archive
    corpus = _conflicting_corpus(archive)
    admin, joint, clinician = signed_in["admin"], signed_in["joint"], signed_in["clinician"]
    lise = archive.reconciliation.record("BU-0001")

    page = admin.get("/admin/patients/conflicts")
    assert page.status_code == 200
    assert (
        "Hansen^Ole" in page.text and "BU-0002" in page.text and "several national IDs" in page.text
    )
    assert 'action="/admin/patients/merge"' in page.text

    merged = _form(admin, "/admin/patients/merge", {"source": f"#{lise.pk}", "into": OLA})
    assert merged.status_code == 303, merged.text
    done = admin.get(merged.headers["location"])
    assert "merged #" in done.text
    assert (corpus.local_only, "buskerud") in _studies(archive, OLA)

    refused = _form(admin, "/admin/patients/merge", {"source": f"#{lise.pk}", "into": OLA})
    assert refused.status_code == 303
    assert "already merged" in admin.get(refused.headers["location"]).text

    (ola,) = archive.index.patient_records.patients_by_id(OLA)
    accepted = _form(
        admin,
        "/admin/patients/accept",
        {"record": f"#{ola.pk}", "name": "Hansen^Ole", "birth_date": "19800517"},
    )
    assert accepted.status_code == 303
    (renamed,) = archive.index.find_patients(StudyQuery(patient_id=OLA))
    assert renamed.patient_name == "Hansen^Ole"

    split = _form(
        admin,
        "/admin/patients/split",
        {"source": OLA, "study": [corpus.ola_birth], "new_id": PER},
    )
    assert split.status_code == 303
    assert (corpus.ola_birth, "telemark") in _studies(archive, PER)
    changes = archive.index.patient_records.changes()
    undone = _form(admin, "/admin/patients/undo", {"change": str(changes[0].id)})
    assert undone.status_code == 303
    assert (corpus.ola_birth, "telemark") in _studies(archive, OLA)

    # The joint auditor may look, not change; a clinician may do neither.
    assert joint.get("/admin/patients/conflicts").status_code == 200
    assert 'action="/admin/patients/merge"' not in joint.get("/admin/patients/conflicts").text
    assert _form(joint, "/admin/patients/undo", {"change": "1"}).status_code == 403
    assert clinician.get("/admin/patients/conflicts").status_code == 403
    assert clinician.get("/api/admin/patients/conflicts").status_code == 403
    # (the clinician's own session token rides in its header: the role is what refuses)
    refused_post = clinician.post("/admin/patients/undo", data={"change": "1"})
    assert refused_post.status_code == 403
    assert "may not change patient records" in refused_post.text
    # Without its form token the admin's own post is refused too.
    bare = httpx.Client(base_url=running.base_url, cookies=admin.cookies)
    assert bare.post("/admin/patients/undo", data={"change": "1"}).status_code == 403
    bare.close()

    kinds = [e.details["subtype"] for e in _events(archive)]
    assert kinds == ["patient merge", "patient accept", "patient split", "patient undo"]
    assert {e.actor for e in _events(archive)} == {"admin"}
    assert archive.audit.verify().ok
