"""Break the glass: a clinician opens another county's patient with a reason, for a limited time,
and that county's auditors see it."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from arkiv.accounts import Principal, Role
from arkiv.audit import Actor
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.errors import Forbidden, InvalidQuery, NotFound
from arkiv.services import Archive
from storage.records import AuditQuery, StudyQuery
from tests.conftest import PASSWORD, RunningArchive, post_login
from tests.dicom_factory import Spec, encode, make_dataset

BUSKERUD_PATIENT = Spec(patient_id="02028054321", patient_name="Bakke^Bjørn")
HTML = {"accept": "text/html"}


def _store(archive: Archive, spec: Spec, county: str) -> None:
    sensor = Actor(name=f"SENSOR_{county.upper()}", kind="dicom-ae", county=county)
    archive.ingest.ingest_dicom(encode(make_dataset(spec)), sensor)


@pytest.fixture
def site(running: RunningArchive) -> RunningArchive:
    _store(running.archive, BUSKERUD_PATIENT, "buskerud")
    accounts = running.archive.accounts
    accounts.add_user("tannlege", PASSWORD, Role.CLINICIAN, County.VESTFOLD)
    accounts.add_user("revisor_b", PASSWORD, Role.AUDITOR, County.BUSKERUD)
    accounts.add_user("revisor_t", PASSWORD, Role.AUDITOR, County.TELEMARK)
    return running


@contextlib.contextmanager
def _signed_in(running: RunningArchive, name: str) -> Iterator[httpx.Client]:
    with running.client() as client:
        assert post_login(client, name, PASSWORD).status_code == 303
        yield client


def test_a_search_offers_extended_access_and_the_grant_opens_the_patient(
    site: RunningArchive,
) -> None:
    with _signed_in(site, "tannlege") as client:
        page = client.post("/search", data={"patient_id": BUSKERUD_PATIENT.patient_id})
        assert page.status_code == 200
        assert "Ingen treff" in page.text
        assert "Pasienten har bilder i Buskerud" in page.text
        assert BUSKERUD_PATIENT.study_uid not in page.text
        reasons = re.findall(r'<option value="(\w+)">', page.text)
        assert "akutt" in reasons

        refused = client.post(
            "/break-glass", data={"patient_id": BUSKERUD_PATIENT.patient_id, "reason": ""}
        )
        assert refused.status_code == 400
        assert not site.archive.index.active_grants("tannlege", "0")

        granted = client.post(
            "/break-glass",
            data={
                "patient_id": BUSKERUD_PATIENT.patient_id,
                "reason": "akutt",
                "free_text": "Smerter, pasienten er på ferie",
            },
        )
        assert granted.status_code == 200
        assert BUSKERUD_PATIENT.study_uid in granted.text
        assert "utvidet tilgang" in granted.text
        metadata = client.get(f"/dicom-web/studies/{BUSKERUD_PATIENT.study_uid}/metadata")
        assert metadata.status_code == 200

    [alert] = site.archive.index.find_audit_events(AuditQuery(event_id="110113"))
    assert alert.actor == "tannlege" and alert.county == "vestfold"
    assert set(alert.counties) == {"vestfold", "buskerud"}
    assert alert.details["subtype"] == "110127 Emergency Override Started"
    assert alert.details["reason_code"] == "akutt"
    assert alert.details["free_text"] == "Smerter, pasienten er på ferie"
    assert alert.patient_ids == (BUSKERUD_PATIENT.patient_id,)
    [read] = site.archive.index.find_audit_events(AuditQuery(actor="tannlege", event_id="110103"))
    assert read.details["break_glass"] is True and "buskerud" in read.counties


def test_the_owning_countys_auditor_reviews_it_and_others_do_not_see_it(
    site: RunningArchive,
) -> None:
    with _signed_in(site, "tannlege") as client:
        response = client.post(
            "/api/break-glass",
            json={"patient_id": BUSKERUD_PATIENT.patient_id, "reason": "henvisning"},
        )
        assert response.status_code == 201, response.text
        assert client.get(f"/dicom-web/studies/{BUSKERUD_PATIENT.study_uid}").status_code == 200
    with site.client() as buskerud:
        buskerud.auth = ("revisor_b", PASSWORD)
        review = buskerud.get("/api/audit/review").json()
        assert [e["actor"] for e in review["break_glass"]] == ["tannlege"]
        assert "tannlege" in {e["actor"] for e in review["cross_county"]}
        page = buskerud.get("/audit/review", headers=HTML)
        assert "tannlege" in page.text and "henvist" in page.text
        report = buskerud.post(
            "/api/audit/patient-report", json={"patient_id": BUSKERUD_PATIENT.patient_id}
        ).json()
        lines = report["accesses"]
        assert any(
            line["who"] == "tannlege"
            and line["organisation"].startswith("Vestfold")
            and line["role"] == "Tannhelsepersonell"
            for line in lines
        )
        assert any("henvist" in line["reason"] for line in lines)
    with site.client() as telemark:
        telemark.auth = ("revisor_t", PASSWORD)
        review = telemark.get("/api/audit/review").json()
        assert review["break_glass"] == [] and review["cross_county"] == []


def test_the_patient_report_never_shows_free_text(site: RunningArchive) -> None:
    clinician = Principal("tannlege", Role.CLINICIAN, County.VESTFOLD)
    site.archive.break_glass.grant(
        clinician, BUSKERUD_PATIENT.patient_id, "vurdering", "hemmelig notat"
    )
    auditor = Principal("revisor_b", Role.AUDITOR, County.BUSKERUD)
    lines = site.archive.audit_review.patient_report(auditor, BUSKERUD_PATIENT.patient_id)
    assert lines and all("hemmelig" not in str(line) for line in lines)


def test_only_clinicians_break_the_glass_and_only_with_a_known_reason(
    site: RunningArchive,
) -> None:
    service = site.archive.break_glass
    clinician = Principal("tannlege", Role.CLINICIAN, County.VESTFOLD)
    with pytest.raises(Forbidden):
        service.grant(
            Principal("revisor_b", Role.AUDITOR, County.BUSKERUD),
            BUSKERUD_PATIENT.patient_id,
            "akutt",
        )
    with pytest.raises(InvalidQuery, match="unknown reason"):
        service.grant(clinician, BUSKERUD_PATIENT.patient_id, "fordi")
    with pytest.raises(NotFound):
        service.grant(clinician, "01017099999", "akutt")
    with pytest.raises(InvalidQuery, match="own county"):
        service.grant(
            Principal("busk", Role.CLINICIAN, County.BUSKERUD),
            BUSKERUD_PATIENT.patient_id,
            "akutt",
        )
    assert site.archive.index.find_audit_events(AuditQuery(event_id="110113")) == []


@pytest.fixture
def short_grants(tmp_path: Path) -> Iterator[Archive]:
    archive = Archive(Settings(data_dir=tmp_path / "data", break_glass_minutes=0))
    try:
        yield archive
    finally:
        archive.close()


def test_a_grant_ends_when_its_time_is_up(short_grants: Archive) -> None:
    _store(short_grants, BUSKERUD_PATIENT, "buskerud")
    clinician = Principal("tannlege", Role.CLINICIAN, County.VESTFOLD)
    grant = short_grants.break_glass.grant(clinician, BUSKERUD_PATIENT.patient_id, "akutt")
    assert grant.expires_at == grant.granted_at
    assert short_grants.break_glass.granted_patient_ids(clinician) == ()
    assert short_grants.access.search_studies(clinician, StudyQuery(), "all") == []
    with pytest.raises(NotFound):
        short_grants.access.instances_for_read(clinician, "metadata", BUSKERUD_PATIENT.study_uid)


def test_a_patient_seen_in_two_counties_is_one_patient_with_studies_owned_by_each(
    short_grants: Archive,
) -> None:
    _store(short_grants, BUSKERUD_PATIENT, "buskerud")
    second = Spec(patient_id=BUSKERUD_PATIENT.patient_id, patient_name="Bakke^Bjørn")
    _store(short_grants, second, "vestfold")
    assert short_grants.index.patient_counties(BUSKERUD_PATIENT.patient_id) == [
        "buskerud",
        "vestfold",
    ]
    vestfold = Principal("v", Role.CLINICIAN, County.VESTFOLD)
    buskerud = Principal("b", Role.CLINICIAN, County.BUSKERUD)
    seen_v = short_grants.access.search_studies(vestfold, StudyQuery(), "all")
    seen_b = short_grants.access.search_studies(buskerud, StudyQuery(), "all")
    assert [s.study_uid for s in seen_v] == [second.study_uid]
    assert [s.study_uid for s in seen_b] == [BUSKERUD_PATIENT.study_uid]
    assert short_grants.index.statistics().patients == 1
