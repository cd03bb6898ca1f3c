"""Clinical photos and video through the API as a clinic sends them: real files from real
encoders, stored without their location, on the right patient, wrapped in DICOM for DICOM and
DICOMweb clients, served with byte ranges, and every kind of bad upload refused with nothing
left behind."""

from __future__ import annotations

import contextlib
import io
import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import generate_fragments

from arkiv.accounts import Role
from arkiv.audit import Actor
from arkiv.config import Peer
from arkiv.counties import County
from storage.records import AuditQuery, StudyQuery
from tests import media_factory as media
from tests.conftest import RunningArchive, _start_archive, require_tool
from tests.dicom_factory import Spec, encode, make_dataset, synthetic_national_id

PATIENT = synthetic_national_id(date(1984, 5, 17), 123)
OTHER_PATIENT = synthetic_national_id(date(1990, 2, 3), 456)
UNKNOWN = synthetic_national_id(date(1970, 7, 7), 412)
SENSOR = Actor(name="SENSOR", kind="dicom-ae", county="vestfold", address="127.0.0.1")
VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
VIDEO_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
FINDER = Peer("FINDER", County.VESTFOLD, host="127.0.0.1", services=frozenset({"find"}))


def known_patient(running: RunningArchive, patient_id: str, county: str = "vestfold") -> None:
    """An X-ray of the patient, so that the archive knows them in `county`."""
    actor = Actor(name="SENSOR", kind="dicom-ae", county=county, address="127.0.0.1")
    ds = make_dataset(Spec(patient_id=patient_id, patient_name="Nordmann^Åse"))
    running.archive.ingest.ingest_dicom(encode(ds), actor)


def upload(
    client: httpx.Client,
    *files: tuple[str, bytes, str],
    patient_id: str = PATIENT,
    category: str = "intraoral",
    **fields: str,
) -> httpx.Response:
    return client.post(
        "/api/photos",
        data={"patient_id": patient_id, "category": category, **fields},
        files=[("file", f) for f in files],
    )


def stored_state(running: RunningArchive) -> tuple[int, int, int]:
    """(photos, instances, blobs) in the archive: what a refused upload must leave unchanged."""
    counts = running.archive.index.statistics()
    return (counts.photos, counts.instances, sum(1 for _ in running.archive.blobs.keys()))


def exif_of(data: bytes) -> tuple[dict[int, Any], dict[int, Any], dict[int, Any]]:
    exif = Image.open(io.BytesIO(data)).getexif()
    return dict(exif), dict(exif.get_ifd(0x8769)), dict(exif.get_ifd(0x8825))


def scan_data(jpeg: bytes) -> bytes:
    """A JPEG's coded image: from its first quantisation table to the end of the image."""
    return jpeg[jpeg.index(b"\xff\xdb") :]


@pytest.fixture(scope="module")
def photo_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningArchive]:
    start = contextlib.contextmanager(_start_archive)
    data = tmp_path_factory.mktemp("photos") / "data"
    overrides = {"photo_max_bytes": 3_000_000, "peers": (FINDER,)}
    with start(data, overrides) as archive:
        known_patient(archive, PATIENT)
        known_patient(archive, OTHER_PATIENT, county="telemark")
        yield archive


@pytest.fixture(scope="module")
def client(photo_archive: RunningArchive) -> Iterator[httpx.Client]:
    with photo_archive.add_user("assistent") as signed_in:
        yield signed_in


@pytest.fixture(scope="module")
def camera_photo(client: httpx.Client) -> tuple[bytes, dict[str, Any]]:
    """A rotated camera JPEG with GPS, XMP location, a comment and serial numbers."""
    data = media.jpeg(orientation=6, seed=11)
    answer = upload(client, ("IMG_0001.JPG", data, "image/jpeg"), teeth="11 21", note="før")
    assert answer.status_code == 201, answer.text
    return data, answer.json()["photos"][0]


# -- what is stored --------------------------------------------------------------------------------


def test_camera_jpeg_is_stored_without_location_but_with_time_orientation_and_colour(
    client: httpx.Client, camera_photo: tuple[bytes, dict[str, Any]]
) -> None:
    sent, photo = camera_photo
    assert photo["taken_at"] == "2026-11-20T10:15:00"
    assert photo["taken_at_source"] == "exif"
    assert (photo["width"], photo["height"]) == (900, 1200)  # orientation 6: shown upright
    assert photo["teeth"] == [11, 21] and photo["category"] == "intraoral"
    stored = client.get(photo["links"]["original"])
    assert stored.status_code == 200
    assert stored.headers["content-type"] == "image/jpeg"
    kept = stored.content
    main, sub, gps = exif_of(kept)
    assert gps == {}
    assert b"GPSLatitude" not in kept and b"GPSLongitude" not in kept
    assert b"SERIAL-0042" not in kept and b"Canon" not in kept and b"Nordmann" not in kept
    assert b"patient's home" not in kept  # the JPEG comment
    assert main.get(0x0112) == 6
    assert sub.get(0x9003) == media.TAKEN
    profile = Image.open(io.BytesIO(sent)).info.get("icc_profile")
    assert profile and Image.open(io.BytesIO(kept)).info.get("icc_profile") == profile
    assert scan_data(kept) == scan_data(sent)  # the coded image is byte for byte the camera's
    assert photo["sha256"] != "" and photo["size"] == len(kept)
    exif_sent = exif_of(sent)
    assert exif_sent[2]  # the upload did carry a location


def test_renditions_are_upright_jpegs_of_the_right_size(
    client: httpx.Client, camera_photo: tuple[bytes, dict[str, Any]]
) -> None:
    _sent, photo = camera_photo
    for link, edge in (("thumbnail", 256), ("web", 1600)):
        answer = client.get(photo["links"][link])
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
        image = Image.open(io.BytesIO(answer.content))
        assert image.format == "JPEG"
        assert max(image.size) <= edge
        assert image.height > image.width  # rotated like the photo is shown
        assert exif_of(answer.content)[2] == {}
        etag = answer.headers["etag"]
        again = client.get(photo["links"][link], headers={"If-None-Match": etag})
        assert again.status_code == 304


def test_the_same_photo_twice_is_one_photo(
    client: httpx.Client, camera_photo: tuple[bytes, dict[str, Any]]
) -> None:
    sent, photo = camera_photo
    again = upload(client, ("copy.jpg", sent, "image/jpeg"), teeth="11 21")
    assert again.status_code == 200, again.text
    answer = again.json()["photos"][0]
    assert answer["duplicate"] is True and answer["id"] == photo["id"]


def test_heic_png_and_tiff_are_kept_without_location(
    client: httpx.Client, photo_archive: RunningArchive
) -> None:
    for name, data, kind in (
        ("IMG_0002.HEIC", media.heic(), "image/heic"),
        ("scan.png", media.png(), "image/png"),
        ("scan.tiff", media.tiff(), "image/tiff"),
    ):
        answer = upload(client, (name, data, kind), category="extraoral")
        assert answer.status_code == 201, (name, answer.text)
        photo = answer.json()["photos"][0]
        assert photo["media_type"] == kind
        assert photo["taken_at"] == "2026-11-20T10:15:00", name
        kept = client.get(photo["links"]["original"]).content
        assert b"GPSLatitude" not in kept and b"Canon" not in kept, name
        assert exif_of(kept)[2] == {}, name
        if kind == "image/heic":
            assert len(kept) == len(data)  # metadata overwritten in place: nothing moved
        sent_pixels = Image.open(io.BytesIO(data)).convert("RGB").tobytes()
        if kind != "image/heic":
            assert Image.open(io.BytesIO(kept)).convert("RGB").tobytes() == sent_pixels, name
        assert photo["sop_uid"], f"{name} has no DICOM wrapper"


# -- DICOM -----------------------------------------------------------------------------------------


def stored_instance(running: RunningArchive, sop_uid: str) -> bytes:
    found = running.archive.index.find_instances(StudyQuery(sop_uids=(sop_uid,)))
    assert len(found) == 1
    return running.archive.blobs.read(found[0].blob.key)


def dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60
    )
    return [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]


def test_photo_is_a_valid_vl_photographic_image_beside_the_xrays(
    client: httpx.Client, photo_archive: RunningArchive, tmp_path: Path
) -> None:
    sent = media.jpeg(orientation=1, seed=12, gps=True)
    photo = upload(client, ("upright.jpg", sent, "image/jpeg"), teeth="36").json()["photos"][0]
    kept = client.get(photo["links"]["original"]).content
    wrapper = stored_instance(photo_archive, photo["sop_uid"])
    path = tmp_path / "photo.dcm"
    path.write_bytes(wrapper)
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == VL_PHOTO and ds.Modality == "XC"
    assert ds.PatientID == PATIENT and str(ds.PatientName) == "Nordmann^Åse"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    fragments = list(generate_fragments(ds.PixelData))
    assert b"".join(fragments).rstrip(b"\x00") == kept  # wrapped as is, not re-encoded
    assert b"GPSLatitude" not in wrapper
    codes = [item.CodeMeaning.lower() for item in ds.PrimaryAnatomicStructureSequence]
    assert len(codes) == 1 and "first molar" in codes[0] and "mandibular left" in codes[0]
    assert (ds.Rows, ds.Columns) == (900, 1200)
    # QIDO-RS finds it beside the patient's X-ray
    studies = client.get(
        "/dicom-web/studies", params={"PatientID": PATIENT, "ModalitiesInStudy": "XC"}
    )
    assert studies.status_code == 200
    assert photo["study_uid"] in {s["0020000D"]["Value"][0] for s in studies.json()}
    every = client.get("/dicom-web/studies", params={"PatientID": PATIENT}).json()
    assert len(every) >= 2  # the X-ray study and the photo study


def test_rotated_photo_is_wrapped_upright(
    photo_archive: RunningArchive, camera_photo: tuple[bytes, dict[str, Any]], tmp_path: Path
) -> None:
    _sent, photo = camera_photo
    wrapper = stored_instance(photo_archive, photo["sop_uid"])
    path = tmp_path / "rotated.dcm"
    path.write_bytes(wrapper)
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert (ds.Rows, ds.Columns) == (1200, 900)
    assert ds.LossyImageCompression == "01"


def test_findscu_finds_the_photo_study(
    photo_archive: RunningArchive, camera_photo: tuple[bytes, dict[str, Any]], tmp_path: Path
) -> None:
    _sent, photo = camera_photo
    result = subprocess.run(
        [
            require_tool("findscu"), "-S", "-X", "-od", str(tmp_path), "-aet", "FINDER",
            "-aec", "ARKIV", "127.0.0.1", str(photo_archive.dicom_port),
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={PATIENT}",
            "-k", "ModalitiesInStudy=XC", "-k", "StudyInstanceUID", "-k", "StudyDescription",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    answers = [pydicom.dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
    if result.returncode != 0 and not answers:
        pytest.fail(f"findscu failed: {result.stdout}{result.stderr}")
    assert photo["study_uid"] in {str(a.StudyInstanceUID) for a in answers}


# -- video -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video(
    client: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> tuple[bytes, dict[str, Any]]:
    sent = media.mp4(tmp_path_factory.mktemp("video") / "clip", seconds=3)
    answer = upload(client, ("clip.mp4", sent, "video/mp4"), category="orthodontic")
    assert answer.status_code == 201, answer.text
    return sent, answer.json()["photos"][0]


def test_video_is_kept_without_location_and_served_in_ranges(
    client: httpx.Client, video: tuple[bytes, dict[str, Any]]
) -> None:
    _sent, photo = video
    assert photo["kind"] == "video" and photo["media_type"] == "video/mp4"
    assert photo["duration_seconds"] == pytest.approx(3.0, abs=0.2)
    assert photo["taken_at"].startswith("2026-11-20T10:15")  # 09:15 UTC is 10:15 in Oslo
    whole = client.get(photo["links"]["video"])
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    kept = whole.content
    assert len(kept) == photo["size"]
    assert b"+59.9139" not in kept
    part = client.get(photo["links"]["video"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.content == kept[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(kept)}"
    tail = client.get(photo["links"]["video"], headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == kept[-50:]
    rest = client.get(photo["links"]["video"], headers={"Range": f"bytes={len(kept) - 10}-"})
    assert rest.status_code == 206 and rest.content == kept[-10:]
    beyond = client.get(photo["links"]["video"], headers={"Range": f"bytes={len(kept)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(kept)}"
    poster = client.get(photo["links"]["web"])
    assert poster.status_code == 200
    assert Image.open(io.BytesIO(poster.content)).size == (640, 480)
    assert kept.find(b"moov") < kept.find(b"mdat")  # playable before the whole file arrives


def test_video_is_a_video_photographic_image(
    photo_archive: RunningArchive, video: tuple[bytes, dict[str, Any]], tmp_path: Path
) -> None:
    _sent, photo = video
    assert photo["sop_uid"], "the H.264 video was not wrapped"
    path = tmp_path / "video.dcm"
    path.write_bytes(stored_instance(photo_archive, photo["sop_uid"]))
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == VIDEO_PHOTO and ds.Modality == "XC"


# -- refusals --------------------------------------------------------------------------------------


def refused(
    client: httpx.Client,
    photo_archive: RunningArchive,
    status: int,
    *files: tuple[str, bytes, str],
    **fields: str,
) -> str:
    before = stored_state(photo_archive)
    answer = upload(client, *files, **fields)
    assert answer.status_code == status, answer.text
    reason = answer.json()["reason"]
    assert reason
    assert stored_state(photo_archive) == before
    return str(reason)


def test_bad_uploads_are_refused_and_leave_nothing(
    client: httpx.Client, photo_archive: RunningArchive
) -> None:
    good = media.jpeg(seed=21, gps=False)
    assert "content" in refused(client, photo_archive, 415, ("notes.jpg", b"just text\n" * 50, ""))
    assert "named .jpg" in refused(client, photo_archive, 415, ("x.jpg", media.png(), "image/png"))
    assert "declared" in refused(client, photo_archive, 415, ("x", good, "image/png"))
    bomb = refused(
        client, photo_archive, 422, ("bomb.png", media.decompression_bomb(), "image/png")
    )
    assert "megapixels" in bomb
    truncated = good[: len(good) // 2]
    refused(client, photo_archive, 422, ("half.jpg", truncated, "image/jpeg"))
    big = media.jpeg(width=3000, height=2400, seed=22, quality=100, gps=False)
    assert len(big) > 3_000_000
    assert "MB" in refused(client, photo_archive, 413, ("big.jpg", big, "image/jpeg"))
    assert "national ID" in refused(
        client, photo_archive, 422, ("ok.jpg", good, "image/jpeg"), patient_id=UNKNOWN
    )
    assert "19" in refused(
        client, photo_archive, 400, ("ok.jpg", good, "image/jpeg"), teeth="11 19"
    )
    refused(client, photo_archive, 400, ("ok.jpg", good, "image/jpeg"), category="selfie")
    # one bad file in a batch: the good one is not stored either
    refused(
        client, photo_archive, 415, ("ok.jpg", good, "image/jpeg"), ("bad.jpg", b"nope" * 100, "")
    )
    assert client.get("/healthz").status_code == 200
    assert upload(client, ("ok.jpg", good, "image/jpeg")).status_code == 201


def test_upload_without_a_patient_or_file_is_refused(client: httpx.Client) -> None:
    answer = client.post("/api/photos", data={"category": "intraoral"}, files=[("x", b"")])
    assert answer.status_code == 400 and answer.json()["reason"]
    answer = client.post("/api/photos", data={"patient_id": PATIENT, "category": "intraoral"})
    assert answer.status_code == 400 and answer.json()["reason"]


# -- who may see what, and the audit log -----------------------------------------------------------


def test_gallery_reads_are_audited_and_bounded_by_county(
    client: httpx.Client, photo_archive: RunningArchive, camera_photo: tuple[bytes, dict[str, Any]]
) -> None:
    _sent, photo = camera_photo
    key = photo["patient_key"]
    gallery = client.get(f"/api/patients/{key}/photos")
    assert gallery.status_code == 200
    assert gallery.json()["patient"]["patient_id"] == PATIENT
    ids = [p["id"] for p in gallery.json()["photos"]]
    assert photo["id"] in ids
    taken = [p["taken_at"] for p in gallery.json()["photos"]]
    assert taken == sorted(taken)
    by_tooth = client.get(f"/api/patients/{key}/photos", params={"tooth": 21}).json()["photos"]
    assert [p["id"] for p in by_tooth] == [photo["id"]]
    none = client.get(f"/api/patients/{key}/photos", params={"category": "after-treatment"})
    assert none.json()["photos"] == []
    posted = client.post("/api/photos/search", data={"patient_id": PATIENT, "tooth": "21"})
    assert [p["id"] for p in posted.json()["photos"]] == [photo["id"]]
    unknown = client.post("/api/photos/search", data={"patient_id": UNKNOWN})
    assert unknown.status_code == 404
    assert client.get(photo["links"]["thumbnail"]).status_code == 200
    assert client.get(photo["links"]["original"]).status_code == 200
    events = photo_archive.archive.index.find_audit_events(_audit_query(PATIENT))
    purposes = {e.details.get("purpose") for e in events}
    assert "photo thumbnail" in purposes and "photo original" in purposes
    assert any(e.event_id == "110104" and e.action == "C" for e in events)  # the upload
    with photo_archive.add_user("tannlege-telemark", Role.CLINICIAN, County.TELEMARK) as other:
        assert other.get(f"/api/patients/{key}/photos").status_code == 403
        page = other.get(f"/patients/{key}/photos", headers={"Accept": "text/html"})
        assert page.status_code == 403 and 'action="/break-glass"' in page.text
        assert f'value="/patients/{key}/photos"' in page.text, "the grant leads back here"
        assert other.get(photo["links"]["original"]).status_code == 404
        assert other.get(f"/api/photos/{photo['id']}").status_code == 404
        answer = upload(other, ("x.jpg", media.jpeg(seed=31, gps=False), "image/jpeg"))
        assert answer.status_code == 403
    failed = [
        e
        for e in photo_archive.archive.index.find_audit_events(_audit_query(None))
        if e.actor == "tannlege-telemark" and e.outcome != 0
    ]
    assert failed  # the refused reads are in the log too


def _audit_query(patient_id: str | None) -> AuditQuery:
    return AuditQuery(patient_id=patient_id, limit=1000)


def test_an_archive_with_photos_passes_fsck_and_its_scrub(
    photo_archive: RunningArchive, camera_photo: tuple[bytes, dict[str, Any]]
) -> None:
    report = photo_archive.archive.consistency.check(scrub=True)
    assert report.objects > 3 and report.checked == report.objects
    assert not report.unindexed and not report.missing and not report.corrupt


@pytest.mark.both_backends
def test_photo_round_trip_on_each_backend(running: RunningArchive) -> None:
    known_patient(running, PATIENT)
    with running.add_user("assistent") as client:
        sent = media.jpeg(seed=41)
        answer = upload(client, ("a.jpg", sent, "image/jpeg"))
        assert answer.status_code == 201, answer.text
        photo = answer.json()["photos"][0]
        kept = client.get(photo["links"]["original"])
        assert kept.status_code == 200 and scan_data(kept.content) == scan_data(sent)
        assert b"GPSLatitude" not in kept.content
        part = client.get(photo["links"]["original"])
        assert part.content == kept.content
        assert client.get(photo["links"]["thumbnail"]).status_code == 200
