"""STOW-RS as a client sends it: per-instance outcome in the answer (PS3.18 10.5.3), the right
status for all stored, some failed and none stored, and nothing stored from a refused request."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID

from arkiv.audit import Actor
from tests.conftest import RunningArchive, _start_archive
from tests.dicom_factory import Spec, encode, make_dataset

SENSOR = Actor(name="MODALITY", kind="dicom-ae", county="vestfold", address="127.0.0.1")
BOUNDARY = "stow-test-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
MAX_BYTES = 200_000
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")

CANNOT_UNDERSTAND = 0xC000
DATA_SET_DOES_NOT_MATCH = 0xA900
DUPLICATE_SOP_INSTANCE = 0x0111


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningArchive]:
    start = contextlib.contextmanager(_start_archive)
    with start(tmp_path_factory.mktemp("stow") / "data", {"stow_max_bytes": MAX_BYTES}) as running:
        yield running


@pytest.fixture(scope="module")
def client(archive: RunningArchive) -> Iterator[httpx.Client]:
    with archive.add_user("tannlege") as signed_in:
        yield signed_in


def body(*objects: bytes) -> bytes:
    out = b""
    for data in objects:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def stow(client: httpx.Client, *objects: bytes, study: str | None = None) -> httpx.Response:
    url = "/dicom-web/studies" + (f"/{study}" if study else "")
    return client.post(
        url,
        content=body(*objects),
        headers={"Content-Type": MULTIPART, "Accept": "application/dicom+json"},
    )


def failures(answer: dict[str, Any]) -> dict[str, int]:
    items = answer.get("00081198", {}).get("Value", [])
    return {item["00081155"].get("Value", [""])[0]: item["00081197"]["Value"][0] for item in items}


def stored(answer: dict[str, Any]) -> list[str]:
    return [item["00081155"]["Value"][0] for item in answer.get("00081199", {}).get("Value", [])]


def invalid_uid(spec: Spec) -> Dataset:
    ds = make_dataset(spec)
    ds.SOPInstanceUID = "1.2.abc.3"  # not a UID: letters
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.abc.3")
    return ds


def test_all_stored_is_200_with_retrieve_urls(
    archive: RunningArchive, client: httpx.Client
) -> None:
    study = Spec().study_uid
    first, second = (make_dataset(Spec(study_uid=study, seed=n)) for n in (1, 2))
    response = stow(client, encode(first), encode(second))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert sorted(stored(answer)) == sorted([first.SOPInstanceUID, second.SOPInstanceUID])
    for item in answer["00081199"]["Value"]:
        url = item["00081190"]["Value"][0]
        assert url == f"{archive.base_url}/dicom-web/studies/{study}"
        assert client.get(url + "/metadata").status_code == 200
    assert "00081198" not in answer


def test_partial_failure_is_202_with_a_reason_per_instance(
    archive: RunningArchive, client: httpx.Client
) -> None:
    original = make_dataset(Spec(seed=10))
    archive.archive.ingest.ingest_dicom(encode(original), SENSOR)
    conflicting = make_dataset(
        Spec(
            study_uid=original.StudyInstanceUID,
            series_uid=original.SeriesInstanceUID,
            sop_uid=original.SOPInstanceUID,
            seed=11,  # other pixels under the same SOP Instance UID
        )
    )
    good = make_dataset(Spec(seed=12))
    bad = invalid_uid(Spec(seed=13))
    response = stow(client, encode(good), encode(bad), encode(conflicting))
    assert response.status_code == 202, response.text
    answer = response.json()
    assert stored(answer) == [good.SOPInstanceUID]
    assert failures(answer) == {
        "1.2.abc.3": CANNOT_UNDERSTAND,
        original.SOPInstanceUID: DUPLICATE_SOP_INSTANCE,
    }
    # the stored copy is still the original, not the conflicting object
    path = (
        f"/dicom-web/studies/{original.StudyInstanceUID}/series/{original.SeriesInstanceUID}"
        f"/instances/{original.SOPInstanceUID}"
    )
    retrieved = client.get(path, headers={"Accept": "multipart/related; transfer-syntax=*"})
    assert encode(original) in retrieved.content


def test_all_failed_is_409(client: httpx.Client) -> None:
    response = stow(client, encode(invalid_uid(Spec(seed=20))), b"not dicom at all")
    assert response.status_code == 409, response.text
    assert set(failures(response.json()).values()) == {CANNOT_UNDERSTAND}
    assert len(response.json()["00081198"]["Value"]) == 2


def test_an_instance_of_another_study_fails_on_the_study_route(client: httpx.Client) -> None:
    study = Spec().study_uid
    belongs = make_dataset(Spec(study_uid=study, seed=30))
    stranger = make_dataset(Spec(seed=31))
    response = stow(client, encode(belongs), encode(stranger), study=study)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert stored(answer) == [belongs.SOPInstanceUID]
    assert failures(answer) == {stranger.SOPInstanceUID: DATA_SET_DOES_NOT_MATCH}
    assert answer["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{study}")
    missing = client.get(
        f"/dicom-web/studies/{stranger.StudyInstanceUID}/series/{stranger.SeriesInstanceUID}"
        f"/instances/{stranger.SOPInstanceUID}/metadata"
    )
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "content_type",
    ["application/dicom", "application/json", 'multipart/related; type="image/png"; boundary=x'],
)
def test_wrong_media_type_is_415(client: httpx.Client, content_type: str) -> None:
    ds = make_dataset(Spec(seed=40))
    response = client.post(
        "/dicom-web/studies", content=body(encode(ds)), headers={"Content-Type": content_type}
    )
    assert response.status_code == 415, response.text
    assert response.json()["reason"]


def test_a_body_beyond_the_limit_is_413_and_stores_nothing(client: httpx.Client) -> None:
    study = Spec().study_uid
    objects = [encode(make_dataset(Spec(study_uid=study, seed=50 + n))) for n in range(40)]
    assert len(body(*objects)) > MAX_BYTES
    response = stow(client, *objects)
    assert response.status_code == 413, response.text
    assert client.get(f"/dicom-web/studies/{study}/metadata").status_code == 404


def test_a_malformed_multipart_body_is_400(client: httpx.Client) -> None:
    response = client.post(
        "/dicom-web/studies", content=b"--other\r\n\r\nxx", headers={"Content-Type": MULTIPART}
    )
    assert response.status_code == 400, response.text
    assert response.json()["reason"]


def test_storing_needs_credentials(archive: RunningArchive) -> None:
    response = httpx.post(
        f"{archive.base_url}/dicom-web/studies",
        content=body(encode(make_dataset(Spec(seed=60)))),
        headers={"Content-Type": MULTIPART},
    )
    assert response.status_code == 401
