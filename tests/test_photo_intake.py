"""The other ways photos arrive: STOW-RS with JSON metadata and the JPEG as bulk data (IHE
Web-based Image Capture), a DICOM VL Photographic object over STOW-RS, and `arkiv
import-photos` on a camera's folder with a few files that are not photos or are broken."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from arkiv.config import Settings
from arkiv.photo_dicom import PhotoContext, PhotoPatient, wrap_jpeg
from arkiv.services import Archive
from arkiv.teeth import tooth_code
from storage.records import AuditQuery
from tests import media_factory as media
from tests.conftest import RunningArchive, _start_archive, require_tool
from tests.test_photos import PATIENT, known_patient

BOUNDARY = "wic-boundary"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningArchive]:
    start = contextlib.contextmanager(_start_archive)
    with start(tmp_path_factory.mktemp("intake") / "data") as archive:
        known_patient(archive, PATIENT)
        yield archive


def wic_body(dataset: dict[str, object], jpeg: bytes) -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom+json\r\n\r\n".encode()
        + json.dumps([dataset]).encode()
        + f"\r\n--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
        "Content-Location: http://camera.local/1.jpg\r\n\r\n".encode()
        + jpeg
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def test_json_metadata_with_a_jpeg_becomes_a_photo_and_a_dicom_instance(
    running: RunningArchive,
) -> None:
    tooth = tooth_code(46)
    dataset = {
        "00100020": {"vr": "LO", "Value": [PATIENT]},
        "0008002A": {"vr": "DT", "Value": ["20261120101500"]},
        "00204000": {"vr": "LT", "Value": ["fyllingskant"]},
        "00082228": {
            "vr": "SQ",
            "Value": [
                {
                    "00080100": {"vr": "SH", "Value": [tooth.value]},
                    "00080102": {"vr": "SH", "Value": [tooth.scheme_designator]},
                    "00080104": {"vr": "LO", "Value": [tooth.meaning]},
                }
            ],
        },
        "7FE00010": {"vr": "OB", "BulkDataURI": "http://camera.local/1.jpg"},
    }
    with running.add_user("kamera") as client:
        answer = client.post(
            "/dicom-web/studies",
            content=wic_body(dataset, media.jpeg(seed=51, gps=True)),
            headers={
                "Content-Type": (
                    f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}'
                ),
                "Accept": "application/dicom+json",
            },
        )
        assert answer.status_code == 200, answer.text
        stored = answer.json()["00081199"]["Value"][0]
        sop_uid = stored["00081155"]["Value"][0]
        assert stored["00081150"]["Value"][0] == "1.2.840.10008.5.1.4.1.1.77.1.4"
        found = client.get("/dicom-web/instances", params={"SOPInstanceUID": sop_uid}).json()
        assert len(found) == 1
        key = running.archive.photos.patient_key(PATIENT)
        photos = client.get(f"/api/patients/{key}/photos", params={"tooth": 46}).json()["photos"]
        assert len(photos) == 1
        assert photos[0]["note"] == "fyllingskant"
        assert photos[0]["taken_at"] == "2026-11-20T10:15:00"
        original = client.get(photos[0]["links"]["original"]).content
        assert b"GPSLatitude" not in original


def test_json_metadata_for_an_unknown_patient_fails_that_instance(
    running: RunningArchive,
) -> None:
    dataset = {
        "00100020": {"vr": "LO", "Value": ["00000000000"]},
        "7FE00010": {"vr": "OB", "BulkDataURI": "http://camera.local/1.jpg"},
    }
    with running.add_user("kamera2") as client:
        answer = client.post(
            "/dicom-web/studies",
            content=wic_body(dataset, media.jpeg(seed=52)),
            headers={
                "Content-Type": (
                    f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}'
                )
            },
        )
    assert answer.status_code == 409
    failed = answer.json()["00081198"]["Value"][0]
    assert failed["00081197"]["Value"][0] == 0xC000


def test_import_photos_from_a_camera_folder(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    archive = Archive(Settings(data_dir=data_dir))
    try:
        known_patient(RunningArchive(archive, data_dir, 0, 0), PATIENT)
    finally:
        archive.close()
    dump = tmp_path / "DCIM" / "100CANON"
    dump.mkdir(parents=True)
    (dump / "IMG_0001.JPG").write_bytes(media.jpeg(seed=61))
    (dump / "IMG_0002.JPG").write_bytes(media.jpeg(seed=62, orientation=8))
    (dump / "IMG_0003.HEIC").write_bytes(media.heic(seed=63))
    (dump / "IMG_0004.JPG").write_bytes(media.jpeg(seed=64)[:5000])  # a card error
    (dump / "IMG_0001.THM").write_bytes(b"not an image at all")
    (tmp_path / "DCIM" / ".Trashes").mkdir()
    (tmp_path / "DCIM" / ".Trashes" / "old.jpg").write_bytes(media.jpeg(seed=65))

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable, "-m", "arkiv.cli", "import-photos", str(tmp_path / "DCIM"),
                "--data", str(data_dir), "--patient", PATIENT, "--category", "before-treatment",
                "--teeth", "11 21",
            ],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip

    first = run()
    assert first.returncode == 1, first.stdout + first.stderr
    assert "stored 3, already stored 0, skipped 1" in first.stdout
    assert "refused  100CANON/IMG_0004.JPG" in first.stdout
    assert "skipped  100CANON/IMG_0001.THM" in first.stdout
    again = run()
    assert "stored 0, already stored 3" in again.stdout
    archive = Archive(Settings(data_dir=data_dir))
    try:
        key = archive.photos.patient_key(PATIENT)
        assert key is not None
        stats = archive.index.statistics()
        assert stats.photos == 3
        events = [
            e
            for e in archive.index.find_audit_events(AuditQuery(patient_id=PATIENT, limit=100))
            if e.action == "C" and "photo_id" in e.details
        ]
        assert len(events) == 6  # three stored, three duplicates
        assert all(e.actor.startswith("cli:") for e in events)
    finally:
        archive.close()


def test_a_camera_sending_dicom_photos_fills_the_gallery(
    running: RunningArchive, tmp_path: Path
) -> None:
    """An intra-oral camera that speaks DICOM: its VL Photographic Image, sent with storescu,
    is kept as sent and shows in the patient's gallery with its teeth and time."""
    patient = running.archive.index.photos.patient_by_national_id(PATIENT)
    assert patient is not None
    context = PhotoContext(
        study_uid=generate_uid(),
        series_uid=generate_uid(),
        sop_uid=generate_uid(),
        instance_number=1,
        taken_at=datetime(2026, 10, 2, 14, 30),
        category="after-treatment",
        teeth=(36, 37),
        note="kamera",
        county="vestfold",
        operator="",
        study_description="Intraoralkamera",
        series_description="Intraoralkamera",
    )
    person = PhotoPatient(PATIENT, patient.name, patient.birth_date, patient.sex)
    path = tmp_path / "camera.dcm"
    picture = media.jpeg(seed=71, gps=False)
    path.write_bytes(wrap_jpeg(picture, person, context, recompressed=False))
    sent = subprocess.run(
        [require_tool("storescu"), "-xy", "-aec", "ARKIV", "127.0.0.1",
         str(running.dicom_port), str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    with running.add_user("tannlege-gallery") as client:
        photos = client.get(
            f"/api/patients/{patient.pk}/photos", params={"category": "after-treatment"}
        ).json()["photos"]
        assert [p["sop_uid"] for p in photos] == [context.sop_uid]
        assert photos[0]["teeth"] == [36, 37] and photos[0]["note"] == "kamera"
        assert photos[0]["taken_at"] == "2026-10-02T14:30:00"
        assert client.get(photos[0]["links"]["thumbnail"]).status_code == 200
