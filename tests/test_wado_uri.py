"""WADO-URI (PS3.18 9): the object itself or a rendered image, by query parameters; wrong or
missing parameters get a 400 with a reason; reads are audited like WADO-RS."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from arkiv.audit import Actor
from storage.records import AuditQuery
from tests.conftest import RunningArchive, _start_archive
from tests.dicom_factory import Spec, encode, make_dataset

SENSOR = Actor(name="MODALITY", kind="dicom-ae", county="vestfold", address="127.0.0.1")


@dataclass
class Stored:
    running: RunningArchive
    client: httpx.Client
    ds: Dataset
    part10: bytes

    def params(self, **extra: str) -> dict[str, str]:
        return {
            "requestType": "WADO",
            "studyUID": self.ds.StudyInstanceUID,
            "seriesUID": self.ds.SeriesInstanceUID,
            "objectUID": self.ds.SOPInstanceUID,
            **extra,
        }


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    start = contextlib.contextmanager(_start_archive)
    with start(tmp_path_factory.mktemp("wado-uri") / "data") as running:
        ds = make_dataset(Spec(rows=80, columns=60))
        ds.compress(RLELossless, generate_instance_uid=False)
        part10 = encode(ds)
        running.archive.ingest.ingest_dicom(part10, SENSOR)
        with running.add_user("tannlege") as client:
            yield Stored(running, client, ds, part10)


def test_a_jpeg_by_default(stored: Stored) -> None:
    response = stored.client.get("/wado", params=stored.params())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (60, 80)


def test_png_scaled_to_rows_and_columns(stored: Stored) -> None:
    response = stored.client.get(
        "/wado", params=stored.params(contentType="image/png", rows="40", columns="30")
    )
    assert response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (30, 40)


def test_window_changes_the_picture(stored: Stored) -> None:
    def pixels(**window: str) -> bytes:
        response = stored.client.get(
            "/wado", params=stored.params(contentType="image/png", **window)
        )
        assert response.status_code == 200, response.text
        return Image.open(io.BytesIO(response.content)).tobytes()

    assert pixels() != pixels(windowCenter="500", windowWidth="100")


def test_application_dicom_in_the_stored_syntax_when_asked_by_uid(stored: Stored) -> None:
    response = stored.client.get(
        "/wado", params=stored.params(contentType="application/dicom", transferSyntax=RLELossless)
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom"
    assert response.content == stored.part10


def test_application_dicom_is_explicit_little_endian_by_default(stored: Stored) -> None:
    response = stored.client.get("/wado", params=stored.params(contentType="application/dicom"))
    decoded = dcmread(io.BytesIO(response.content))
    assert decoded.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    original = dcmread(io.BytesIO(stored.part10))
    assert np.array_equal(decoded.pixel_array, original.pixel_array)


@pytest.mark.parametrize(
    "change",
    [
        {"requestType": "RETRIEVE"},
        {"objectUID": ""},
        {"contentType": "text/html"},
        {"frameNumber": "x"},
        {"rows": "100000"},
        {"windowCenter": "40"},
        {"windowCenter": "40", "windowWidth": "nan"},
        {"sneaky": "1"},
        {"contentType": "image/jpeg", "transferSyntax": RLELossless},
        {"contentType": "application/dicom", "rows": "10"},
    ],
)
def test_wrong_parameters_are_400_with_a_reason(stored: Stored, change: dict[str, str]) -> None:
    response = stored.client.get("/wado", params=stored.params(**change))
    assert response.status_code == 400, response.text
    assert response.json()["reason"]


def test_a_lossy_syntax_is_406(stored: Stored) -> None:
    response = stored.client.get(
        "/wado",
        params=stored.params(
            contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.4.50"
        ),
    )
    assert response.status_code == 406
    assert response.json()["reason"]


def test_an_unknown_object_is_404(stored: Stored) -> None:
    response = stored.client.get("/wado", params=stored.params(objectUID="1.2.3.4"))
    assert response.status_code == 404


def test_reads_are_audited_as_rendered_and_transferred(stored: Stored) -> None:
    with stored.running.add_user("revisor-uri") as client:
        assert client.get("/wado", params=stored.params()).status_code == 200
        dicom = client.get("/wado", params=stored.params(contentType="application/dicom"))
        assert dicom.status_code == 200
    events = stored.running.archive.index.find_audit_events(
        AuditQuery(actor="revisor-uri", limit=100)
    )
    purposes = {e.details.get("purpose"): e.event_id for e in events if e.details.get("purpose")}
    assert purposes == {"rendered": "110103", "retrieve": "110104"}
