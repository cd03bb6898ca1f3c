"""The auditor's API: filters, the ITI-81 FHIR search, exports, checkpoints; grouping of
frame and thumbnail reads; and a thousand wrong passwords."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from arkiv import audit_review
from arkiv.accounts import Principal, Role
from arkiv.audit import Actor, Event, EventType
from arkiv.audit_checkpoint import CheckpointSigner
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.services import Archive
from storage.records import AuditQuery
from tests.conftest import PASSWORD, RunningArchive
from tests.dicom_factory import Spec, encode, make_dataset

VESTFOLD = Spec(patient_id="01017012345", patient_name="Vestre^Vera")
BUSKERUD = Spec(patient_id="02028054321", patient_name="Bakke^Bjørn")


@pytest.fixture
def site(running: RunningArchive) -> RunningArchive:
    for spec, county in ((VESTFOLD, "vestfold"), (BUSKERUD, "buskerud")):
        sensor = Actor(name=f"SENSOR_{county.upper()}", kind="dicom-ae", county=county)
        running.archive.ingest.ingest_dicom(encode(make_dataset(spec)), sensor)
    add = running.archive.accounts.add_user
    add("tannlege", PASSWORD, Role.CLINICIAN, County.VESTFOLD)
    add("busk", PASSWORD, Role.CLINICIAN, County.BUSKERUD)
    add("revisor", PASSWORD, Role.AUDITOR, County.VESTFOLD)
    add("felles", PASSWORD, Role.JOINT_AUDITOR, County.TELEMARK)
    return running


def _as(running: RunningArchive, name: str) -> httpx.Client:
    client = running.client()
    client.auth = (name, PASSWORD)
    return client


def _metadata(spec: Spec) -> str:
    return f"/dicom-web/studies/{spec.study_uid}/metadata"


def test_search_filters_by_county_action_outcome_and_time(site: RunningArchive) -> None:
    with _as(site, "tannlege") as clinician:
        assert clinician.get(_metadata(VESTFOLD)).status_code == 200
        assert clinician.get(_metadata(BUSKERUD)).status_code == 404
    with _as(site, "busk") as other:
        assert other.get(_metadata(BUSKERUD)).status_code == 200
    with _as(site, "felles") as joint:
        everything = joint.get("/api/audit", params={"limit": 1000}).json()
        assert {"tannlege", "busk"} <= {e["actor"] for e in everything}
        buskerud = joint.get("/api/audit", params={"county": "buskerud"}).json()
        assert "busk" in {e["actor"] for e in buskerud}
        assert "tannlege" not in {e["actor"] for e in buskerud}
        reads = joint.get("/api/audit", params={"action": "R", "user": "tannlege"}).json()
        assert reads and {e["action"] for e in reads} == {"R"}
        failed = joint.get("/api/audit", params={"outcome": 4, "user": "tannlege"}).json()
        assert [e["outcome_description"] for e in failed] == ["no such object for this user"]
        today = everything[0]["recorded_at"][:10]
        assert joint.get("/api/audit", params={"since": today, "until": today}).json()
        assert joint.get("/api/audit", params={"until": "2000-01-01"}).json() == []
        assert joint.get("/api/audit/review", params={"county": "oslo"}).status_code == 400
        for bad in ({"county": "oslo"}, {"since": "i går"}, {"outcome": 3}, {"action": "X"}):
            response = joint.get("/api/audit", params=bad)
            assert response.status_code == 400 and response.json()["reason"]
    with _as(site, "revisor") as vestfold:
        assert vestfold.get("/api/audit", params={"county": "buskerud"}).status_code == 403
        posted = vestfold.post("/api/audit/search", json={"patient": VESTFOLD.patient_id})
        assert posted.status_code == 200
        assert all(VESTFOLD.patient_id in e["patient_ids"] for e in posted.json())
        assert posted.json()
    # The auditors' own searches are in the log, without the patient in the query text.
    used = site.archive.index.find_audit_events(AuditQuery(event_id="110101", actor="revisor"))
    assert used and all(VESTFOLD.patient_id not in e.query for e in used)


def test_iti81_search_answers_a_fhir_bundle(site: RunningArchive) -> None:
    with _as(site, "tannlege") as clinician:
        clinician.get(_metadata(VESTFOLD))
    with _as(site, "revisor") as auditor:
        response = auditor.get(
            "/fhir/AuditEvent",
            params=[
                ("patient", f"urn:oid:2.16.578.1.12.4.1.4.1|{VESTFOLD.patient_id}"),
                ("date", "ge2020-01-01"),
                ("date", "le2100-01-01"),
                ("agent", "tannlege"),
            ],
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/fhir+json")
        bundle = response.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
        events = [entry["resource"] for entry in bundle["entry"]]
        assert events and all(e["resourceType"] == "AuditEvent" for e in events)
        assert any(e["type"]["code"] == "110103" for e in events)
        posted = auditor.post(
            "/fhir/AuditEvent/_search", data={"patient": VESTFOLD.patient_id, "agent": "tannlege"}
        )
        assert posted.status_code == 200 and len(posted.json()["entry"]) == len(events)
        assert auditor.get("/fhir/AuditEvent", params={"color": "red"}).status_code == 400
    with _as(site, "tannlege") as clinician:
        assert clinician.get("/fhir/AuditEvent").status_code == 403


def test_exports_are_parseable_and_audited(site: RunningArchive) -> None:
    with _as(site, "tannlege") as clinician:
        clinician.get(_metadata(VESTFOLD))
    with _as(site, "revisor") as auditor:
        as_csv = auditor.get("/api/audit/export", params={"format": "csv"})
        assert as_csv.status_code == 200
        assert "attachment" in as_csv.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert any(r["actor"] == "tannlege" and r["event_id"] == "110103" for r in rows)
        seqs = [int(r["seq"]) for r in rows]
        assert seqs == sorted(seqs)
        ndjson = auditor.get("/api/audit/export", params={"format": "fhir"}).text.splitlines()
        assert all(json.loads(line)["resourceType"] == "AuditEvent" for line in ndjson)
        xml_lines = auditor.get("/api/audit/export", params={"format": "dicom"}).text.splitlines()
        assert all(ET.fromstring(line).tag == "AuditMessage" for line in xml_lines)
        assert auditor.get("/api/audit/export", params={"format": "pdf"}).status_code == 400
    exports = site.archive.index.find_audit_events(AuditQuery(event_id="110101", actor="revisor"))
    assert {e.details["use"] for e in exports} == {"export csv", "export fhir", "export dicom"}


def test_auditors_can_fetch_the_signed_checkpoints_and_the_key(site: RunningArchive) -> None:
    with _as(site, "revisor") as auditor:
        assert auditor.get("/api/audit/public-key").status_code == 404
        CheckpointSigner(site.archive.index, site.archive.settings).sign_now()
        [checkpoint] = auditor.get("/api/audit/checkpoints").json()
        assert checkpoint["seq"] >= 1 and checkpoint["note"].count("\n") >= 5
        pem = auditor.get("/api/audit/public-key").text
        assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    with _as(site, "tannlege") as clinician:
        assert clinician.get("/api/audit/checkpoints").status_code == 403


def test_thumbnail_and_frame_reads_of_a_series_are_one_event_per_window(
    site: RunningArchive,
) -> None:
    spec = VESTFOLD
    instance = (
        f"/dicom-web/studies/{spec.study_uid}/series/{spec.series_uid}/instances/{spec.sop_uid}"
    )
    with _as(site, "tannlege") as clinician:
        for _ in range(5):
            assert clinician.get(f"{instance}/thumbnail").status_code == 200
            assert clinician.get(f"{instance}/rendered").status_code == 200
        assert clinician.get(f"{instance}/metadata").status_code == 200
        assert clinician.get(f"{instance}/metadata").status_code == 200
    events = site.archive.index.find_audit_events(AuditQuery(actor="tannlege", event_id="110103"))
    purposes = sorted(e.details["purpose"] for e in events)
    # One event per purpose and series in the window; metadata reads are never grouped.
    assert purposes.count("thumbnail") == 1 and purposes.count("rendered") == 1
    assert purposes.count("metadata") == 2
    grouped = next(e for e in events if e.details["purpose"] == "thumbnail")
    assert grouped.details["grouped_seconds"] == 60
    assert grouped.patient_ids == (spec.patient_id,)


def test_a_thousand_wrong_passwords_lock_out_the_guesser_not_the_archive(
    site: RunningArchive,
) -> None:
    statuses: dict[int, int] = {}
    with _as(site, "tannlege") as guesser:
        guesser.auth = ("tannlege", "feil-passord")
        for _ in range(1000):
            status = guesser.get("/dicom-web/studies").status_code
            statuses[status] = statuses.get(status, 0) + 1
    assert set(statuses) <= {401, 429} and statuses.get(429, 0) > 900
    account = site.archive.index.get_user("tannlege")
    assert account is not None and account.locked_until is not None
    with _as(site, "tannlege") as owner:  # the right password waits for the lock to pass
        assert owner.get("/dicom-web/studies").status_code == 429
    with _as(site, "busk") as colleague:  # everyone else is served as before
        assert colleague.get("/dicom-web/studies").status_code == 200
    logins = site.archive.index.find_audit_events(
        AuditQuery(actor="tannlege", event_id="110114", limit=2000)
    )
    assert len(logins) >= 20 and all(e.outcome != 0 for e in logins)


def test_an_export_pages_through_the_whole_log_once_in_order(
    archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_review, "_EXPORT_PAGE", 3)
    actor = Actor(name="SENSOR", kind="dicom-ae", county="vestfold")
    for n in range(10):
        archive.audit.record(Event(EventType.QUERY, "E", actor, query=f"q{n}"))
    auditor = Principal("revisor", Role.AUDITOR, County.VESTFOLD)
    exported = archive.audit_review.export(auditor, AuditQuery(), "all", "csv")
    first = next(exported)
    archive.audit.record(Event(EventType.QUERY, "E", actor, query="during the export"))
    rest = list(exported)
    seqs = [first.seq, *(e.seq for e in rest)]
    assert seqs == list(range(1, 12))  # 10 events and the export's own 110101, nothing later


def test_a_user_opening_unusually_many_patients_is_listed_for_review(tmp_path: Path) -> None:
    archive = Archive(Settings(data_dir=tmp_path / "data", review_volume_threshold=3))
    try:
        sensor = Actor(name="SENSOR", kind="dicom-ae", county="vestfold")
        specs = [Spec(patient_id=f"0101701234{n}") for n in range(4)]
        for spec in specs:
            archive.ingest.ingest_dicom(encode(make_dataset(spec)), sensor)
        busy = Principal("travel", Role.CLINICIAN, County.VESTFOLD)
        calm = Principal("rolig", Role.CLINICIAN, County.VESTFOLD)
        for spec in specs:
            archive.access.instances_for_read(busy, "metadata", spec.study_uid)
        for spec in specs[:2]:
            archive.access.instances_for_read(calm, "metadata", spec.study_uid)
        review = archive.audit_review.review(Principal("r", Role.AUDITOR, County.VESTFOLD))
        assert [(v.actor, v.patients) for v in review.heavy_users] == [("travel", 4)]
        elsewhere = archive.audit_review.review(Principal("t", Role.AUDITOR, County.TELEMARK))
        assert elsewhere.heavy_users == []
    finally:
        archive.close()
