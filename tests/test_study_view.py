"""The viewer's study document and the patient page, over HTTP as the browser uses them: one
request gives every image's geometry, calibration, window, kind, teeth and mount slot, and the
same region's prior; the patient page shows the whole history by day; both are audited, and
another county's patient needs break the glass.

The browser half (canvas, tools, layouts) is tested in headless Chromium in test_viewer_ui.py.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from arkiv.accounts import Role
from arkiv.audit import Actor
from arkiv.counties import County
from arkiv.photo_dicom import tooth_item
from storage.records import AuditEvent, AuditQuery, StudyQuery
from tests.conftest import PASSWORD, RunningArchive, _start_archive, post_login
from tests.dicom_factory import Spec, encode, make_dataset, synthetic_national_id

INGRID = synthetic_national_id(date(1979, 3, 2), 210)
TORE = synthetic_national_id(date(1965, 11, 30), 330)  # Telemark's patient
OLA = synthetic_national_id(date(2001, 6, 12), 410)
VESTFOLD_SENSOR = Actor(name="SENSOR", kind="dicom-ae", county="vestfold", address="127.0.0.1")
TELEMARK_SENSOR = Actor(name="SENSOR", kind="dicom-ae", county="telemark", address="127.0.0.1")
ACCESSED, QUERY = "110103", "110112"
HTML = {"Accept": "text/html"}
NATIVE = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'


def dental(
    patient_id: str,
    study_uid: str,
    study_date: str,
    teeth: tuple[int, ...],
    number: int,
    modality: str = "IO",
    spacing: str | None = "ImagerPixelSpacing",
) -> Dataset:
    """A small intra-oral (or panoramic) image with its teeth coded and a calibration."""
    spec = Spec(
        patient_id=patient_id,
        patient_name="Lie^Ingrid" if patient_id == INGRID else "Tveit^Tore",
        birth_date="19790302" if patient_id == INGRID else "19651130",
        study_uid=study_uid,
        sop_uid=generate_uid(),
        study_date=study_date,
        modality=modality,
        sop_class="1.2.840.10008.5.1.4.1.1.1.3"
        if modality == "IO"
        else "1.2.840.10008.5.1.4.1.1.1.1",
        rows=40,
        columns=60,
        seed=number,
    )
    ds = make_dataset(spec)
    ds.SeriesInstanceUID = SERIES.setdefault(study_uid, generate_uid())
    ds.InstanceNumber = number
    ds.WindowCenter = "1800"
    ds.WindowWidth = "3000"
    if spacing:
        setattr(ds, spacing, ["0.1", "0.125"])
    items = [tooth_item(t) for t in teeth]
    if items:
        ds.PrimaryAnatomicStructureSequence = items
    return ds


SERIES: dict[str, str] = {}
"""One series per study."""

MOUNT = ((16, 17, 18), (14, 15), (16, 17, 46, 47), (11, 12, 21, 22))


@dataclass
class Site:
    running: RunningArchive
    prior_study: str
    current_study: str
    pano_study: str
    telemark_study: str
    current: list[Dataset]
    prior: list[Dataset]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    for running in _start_archive(tmp_path_factory.mktemp("viewer") / "data"):
        ingest = running.archive.ingest.ingest_dicom
        prior_uid, current_uid, pano_uid, tm_uid = (generate_uid() for _ in range(4))
        prior = [dental(INGRID, prior_uid, "20240110", t, n + 1) for n, t in enumerate(MOUNT)]
        current = [dental(INGRID, current_uid, "20250312", t, n + 1) for n, t in enumerate(MOUNT)]
        # a retake of the first periapical, and one image with no calibration
        current.append(dental(INGRID, current_uid, "20250312", (16, 17), 9))
        current.append(dental(INGRID, current_uid, "20250312", (), 10, spacing=None))
        pano = dental(INGRID, pano_uid, "20230405", (), 1, modality="PX")
        for ds in [*prior, *current, pano]:
            ingest(encode(ds), VESTFOLD_SENSOR)
        ingest(encode(dental(TORE, tm_uid, "20250101", (36,), 1)), TELEMARK_SENSOR)
        ingest(encode(dental(INGRID, generate_uid(), "20250601", (), 1, "PX")), VESTFOLD_SENSOR)
        for name, county in (("lege", County.VESTFOLD), ("tmlege", County.TELEMARK)):
            running.archive.accounts.add_user(name, PASSWORD, Role.CLINICIAN, county)
        running.archive.accounts.add_user("revisor", PASSWORD, Role.AUDITOR, County.VESTFOLD)
        yield Site(running, prior_uid, current_uid, pano_uid, tm_uid, current, prior)


@contextlib.contextmanager
def client(site: Site, name: str, **headers: str) -> Iterator[httpx.Client]:
    """A browser signed in through the login form."""
    with httpx.Client(base_url=site.running.base_url, timeout=30, headers=headers) as browser:
        assert post_login(browser, name, PASSWORD).status_code == 303
        yield browser


def events(site: Site, **query: Any) -> list[AuditEvent]:
    return site.running.archive.index.find_audit_events(AuditQuery(limit=1000, **query))


def test_one_request_gives_every_image_with_geometry_calibration_and_slot(site: Site) -> None:
    with client(site, "lege") as browser:
        response = browser.get(f"/api/studies/{site.current_study}/viewer")
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["study"]["date"] == "2025-03-12" and doc["study"]["county"] == "vestfold"
    assert doc["patient"]["name"] == "Lie, Ingrid" and INGRID not in response.text
    assert doc["layout"] == "fmx"
    assert len(doc["slots"]) == 18 and all(s["label"] for s in doc["slots"])
    images = {im["instance_number"]: im for im in doc["images"]}
    assert sorted(images) == [1, 2, 3, 4, 9, 10]
    first = images[2]
    assert (first["kind"], first["slot"], first["teeth"]) == (
        "periapical",
        "pa-upper-right-premolar",
        [14, 15],
    )
    assert images[3]["kind"] == "bitewing" and images[3]["slot"] == "bw-right-molar"
    assert first["spacing"] == {"row_mm": 0.1, "column_mm": 0.125, "source": "ImagerPixelSpacing"}
    assert images[10]["spacing"] is None
    assert first["windows"] == [{"center": 1800.0, "width": 3000.0, "label": ""}]
    assert (first["rows"], first["columns"], first["frames"]) == (40, 60, 1)
    assert (first["bits_allocated"], first["bits_stored"], first["photometric"]) == (
        16,
        12,
        "MONOCHROME2",
    )
    # the retake (instance 9) holds the upper right molar place; the first try is listed only
    assert images[9]["slot"] == "pa-upper-right-molar" and images[1]["slot"] is None


def test_each_image_names_the_same_regions_prior(site: Site) -> None:
    with client(site, "lege") as browser:
        doc = browser.get(f"/api/studies/{site.current_study}/viewer").json()
    priors = {p["id"]: p for p in doc["priors"]}
    by_slot = {im["slot"]: im for im in doc["images"] if im["slot"]}
    for slot in ("pa-upper-right-premolar", "bw-right-molar", "pa-upper-incisors"):
        prior = priors[by_slot[slot]["prior_id"]]
        assert prior["slot"] == slot and prior["study_uid"] == site.prior_study
        assert prior["study_date"] == "2024-01-10"
    assert by_slot["pa-upper-right-molar"]["prior_id"] in priors
    assert set(priors) == {im["prior_id"] for im in doc["images"] if im["prior_id"]}


def test_a_panoramic_is_compared_with_the_previous_panoramic(site: Site) -> None:
    studies = site.running.archive.index.find_studies(StudyQuery(patient_id=INGRID, limit=10))
    later = [s for s in studies if s.study_date == "20250601"]
    with client(site, "lege") as browser:
        doc = browser.get(f"/api/studies/{later[0].study_uid}/viewer").json()
    [pano] = doc["images"]
    assert doc["layout"] == "panoramic" and pano["kind"] == "panoramic"
    [prior] = doc["priors"]
    assert prior["id"] == pano["prior_id"] and prior["study_uid"] == site.pano_study


def test_the_document_and_the_page_are_audited_under_the_user(site: Site) -> None:
    with client(site, "lege") as browser:
        assert browser.get(f"/studies/{site.current_study}", headers=HTML).status_code == 200
        browser.get(f"/api/studies/{site.current_study}/viewer")
    reads = events(site, actor="lege", event_id=ACCESSED)
    purposes = {e.details.get("purpose") for e in reads if site.current_study in e.study_uids}
    assert {"study page", "viewer metadata"} <= purposes
    assert all(e.patient_ids == (INGRID,) for e in reads if site.current_study in e.study_uids)
    priors = [e for e in events(site, actor="lege", event_id=QUERY) if "priors" in e.query]
    assert priors and priors[0].patient_ids == (INGRID,)


def test_the_frames_the_viewer_asks_for_are_native_pixels(site: Site) -> None:
    with client(site, "lege") as browser:
        doc = browser.get(f"/api/studies/{site.current_study}/viewer").json()
        image = doc["images"][0]
        response = browser.get(f"{image['frames_url']}1", headers={"Accept": NATIVE})
    assert response.status_code == 200
    boundary = re.search(r"boundary=([^;]+)", response.headers["content-type"])
    assert boundary
    body = response.content.split(b"\r\n\r\n", 1)[1].rsplit(
        b"\r\n--" + boundary.group(1).encode(), 1
    )[0]
    assert len(body) == image["rows"] * image["columns"] * 2


def test_a_cbct_sent_as_ct_slices_scrolls_as_one_stack(site: Site) -> None:
    study = generate_uid()
    for number in range(1, 6):
        ds = dental(INGRID, study, "20250901", (), number, modality="PX")
        ds.PatientID = OLA  # a patient of their own, so the timelines above stay as they are
        ds.Modality = "CT"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")
        site.running.archive.ingest.ingest_dicom(encode(ds), VESTFOLD_SENSOR)
    with client(site, "lege") as browser:
        doc = browser.get(f"/api/studies/{study}/viewer").json()
        [stack] = doc["images"]
        assert (stack["kind"], stack["frames"], len(stack["slice_urls"])) == ("cbct", 5, 5)
        third = browser.get(stack["slice_urls"][2], headers={"Accept": NATIVE})
    assert third.status_code == 200
    assert stack["slice_ids"][2] in stack["slice_urls"][2]


def test_another_countys_clinician_is_sent_to_break_the_glass(site: Site) -> None:
    with client(site, "tmlege") as browser:
        doc = browser.get(f"/api/studies/{site.current_study}/viewer")
        page = browser.get(f"/studies/{site.current_study}", headers=HTML)
        patient = browser.get(f"/patients/{_key(site)}", headers=HTML)
        frames = browser.get(
            f"/dicom-web/studies/{site.current_study}/series/{SERIES[site.current_study]}/instances/"
            f"{site.current[0].SOPInstanceUID}/frames/1",
            headers={"Accept": NATIVE},
        )
    assert doc.status_code == 403 and "break the glass" in doc.json()["reason"]
    assert "Vestfold" in doc.json()["reason"]
    assert doc.json()["break_glass"] == {"counties": ["vestfold"]}
    assert page.status_code == 403 and "Vestfold" in page.text and "Lie" not in page.text
    assert patient.status_code == 403 and "Lie" not in patient.text
    assert frames.status_code == 404
    refused = [e for e in events(site, actor="tmlege", event_id=ACCESSED) if e.outcome != 0]
    assert refused, "the refused reads are in the audit log"


def test_after_breaking_the_glass_on_the_refusal_page_the_study_opens(site: Site) -> None:
    study_page = f"/studies/{site.current_study}"
    reason = next(iter(site.running.archive.break_glass.reasons()))
    with client(site, "tmlege") as browser:
        page = browser.get(study_page, headers=HTML)
        assert page.status_code == 403
        key = re.search(r'name="patient_key" value="(\d+)"', page.text)
        assert key and INGRID not in page.text, "the form names the patient by key only"
        no_reason = browser.post(
            "/break-glass",
            data={"patient_key": key.group(1), "reason": "", "next": study_page},
        )
        assert no_reason.status_code == 400, "a reason is required"
        granted = browser.post(
            "/break-glass",
            data={"patient_key": key.group(1), "reason": reason, "next": "//elsewhere.example/"},
        )
        assert granted.status_code == 200, "another site is never a place to go back to"
        back = browser.post(
            "/break-glass",
            data={"patient_key": key.group(1), "reason": reason, "next": study_page},
        )
        assert back.status_code == 303 and back.headers["location"] == study_page
        assert browser.get(study_page, headers=HTML).status_code == 200
        assert browser.get(f"/api/studies/{site.current_study}/viewer").status_code == 200
        assert browser.get(f"/patients/{_key(site)}", headers=HTML).status_code == 200
    grants = [e for e in events(site, actor="tmlege") if e.details.get("break_glass")]
    assert grants, "the grant and the reads under it are audited as break the glass"


def test_auditors_and_unknown_studies_get_no_viewer(site: Site) -> None:
    with client(site, "revisor") as browser:
        assert browser.get(f"/api/studies/{site.current_study}/viewer").status_code == 403
    with client(site, "lege") as browser:
        assert browser.get(f"/api/studies/{generate_uid()}/viewer").status_code == 404
        assert browser.get("/api/studies/not-a-uid/viewer").status_code == 404
        assert browser.get(f"/api/studies/{site.telemark_study}/viewer").status_code == 403


def _key(site: Site) -> int:
    key = site.running.archive.photos.patient_key(INGRID)
    assert key is not None
    return key


def test_the_patient_page_shows_the_history_by_day_newest_first(site: Site) -> None:
    with client(site, "lege") as browser:
        page = browser.get(f"/patients/{_key(site)}", headers=HTML)
    assert page.status_code == 200
    days = re.findall(r'class="timeline-day" data-date="([\d-]+)"', page.text)
    assert days == ["2025-06-01", "2025-03-12", "2024-01-10", "2023-04-05"]
    assert f'href="/studies/{site.current_study}"' in page.text
    assert "Bitewing" in page.text and "Periapikal" in page.text and "Panorama" in page.text
    assert "Eies av Vestfold" in page.text
    assert INGRID in page.text and INGRID not in str(page.url)


def test_the_patient_page_filters_by_modality_and_tooth(site: Site) -> None:
    with client(site, "lege") as browser:
        panoramics = browser.get(f"/patients/{_key(site)}?modality=PX", headers=HTML).text
        tooth = browser.get(f"/patients/{_key(site)}?tooth=46", headers=HTML).text
        bad = browser.get(f"/patients/{_key(site)}?tooth=99", headers=HTML)
    assert re.findall(r'data-date="([\d-]+)"', panoramics) == ["2025-06-01", "2023-04-05"]
    # tooth 46 is on the bitewings, and every panoramic shows it too
    assert re.findall(r'data-date="([\d-]+)"', tooth) == [
        "2025-06-01",
        "2025-03-12",
        "2024-01-10",
        "2023-04-05",
    ]
    current = tooth.split(f'data-study-uid="{site.current_study}"')[1].split("</article>")[0]
    assert current.count("<img") == 1, "only the bitewing of that study shows tooth 46"
    assert bad.status_code == 400


def test_recent_patients_are_the_ones_this_user_opened(site: Site) -> None:
    with client(site, "lege") as browser:
        browser.get(f"/api/studies/{site.current_study}/viewer")
        home = browser.get("/", headers=HTML).text
    assert 'id="recent-patients"' in home and f'href="/patients/{_key(site)}"' in home
    with client(site, "revisor") as browser:
        assert browser.get("/", headers=HTML).status_code in (200, 303)
    shown = [
        e for e in events(site, actor="lege", event_id=QUERY) if e.query == "ui recent patients"
    ]
    assert shown and INGRID in shown[0].patient_ids


def test_english_is_used_when_the_browser_asks_for_it(site: Site) -> None:
    with client(site, "lege", **{"Accept-Language": "en-GB,en;q=0.9"}) as browser:
        page = browser.get(f"/patients/{_key(site)}", headers=HTML).text
        doc = browser.get(f"/api/studies/{site.current_study}/viewer").json()
    assert "Owned by Vestfold" in page and '<html lang="en">' in page
    labels = {s["slot"]: s["label"] for s in doc["slots"]}
    assert labels["pa-upper-incisors"] == "Upper incisors"
    with client(site, "lege", **{"Accept-Language": "nb-NO,nb;q=0.9,en;q=0.5"}) as browser:
        doc = browser.get(f"/api/studies/{site.current_study}/viewer").json()
    assert {s["slot"]: s["label"] for s in doc["slots"]}[
        "pa-upper-incisors"
    ] == "Overkjeve fortenner"
