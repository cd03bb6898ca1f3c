"""WADO-RS beyond whole objects: transfer-syntax negotiation, frames (native, encapsulated,
multi-frame, as OHIF asks for them), bulk data, rendered at every level, gzip, ETag/304, CORS,
and that these reads are audited and fail closed when the audit cannot be written."""

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
from pydicom.encaps import get_frame
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from arkiv.audit import Actor
from storage.errors import IndexUnavailable
from storage.index import IndexTransaction
from storage.records import AuditQuery
from tests.conftest import RunningArchive, _start_archive
from tests.dicom_factory import Spec, encode, make_dataset

SENSOR = Actor(name="MODALITY", kind="dicom-ae", county="vestfold", address="127.0.0.1")
OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"
ORIGIN = "https://viewer.klinikk.example"


@dataclass(frozen=True)
class Stored:
    ds: Dataset
    part10: bytes

    @property
    def path(self) -> str:
        ds = self.ds
        return (
            f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )


def _multiframe(spec: Spec, frames: int) -> Dataset:
    ds = make_dataset(spec)
    rng = np.random.default_rng(spec.seed)
    pixels = rng.integers(0, 4000, size=(frames, spec.rows, spec.columns), dtype=np.uint16)
    ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    return ds


def _store(running: RunningArchive, ds: Dataset) -> Stored:
    part10 = encode(ds)
    running.archive.ingest.ingest_dicom(part10, SENSOR)
    return Stored(ds, part10)


@dataclass
class Corpus:
    running: RunningArchive
    client: httpx.Client
    native: Stored
    rle: Stored
    multiframe: Stored
    rle_multiframe: Stored


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    start = contextlib.contextmanager(_start_archive)
    with start(tmp_path_factory.mktemp("wado") / "data") as running:
        study = Spec().study_uid
        native = _store(running, make_dataset(Spec(study_uid=study, seed=1)))
        rle_ds = make_dataset(Spec(study_uid=study, seed=2))
        rle_ds.compress(RLELossless, generate_instance_uid=False)
        rle = _store(running, rle_ds)
        multiframe = _store(running, _multiframe(Spec(study_uid=study, seed=3), 3))
        rle_multi_ds = _multiframe(Spec(study_uid=study, seed=4), 4)
        rle_multi_ds.compress(RLELossless, generate_instance_uid=False)
        rle_multiframe = _store(running, rle_multi_ds)
        with running.add_user("tannlege") as client:
            yield Corpus(running, client, native, rle, multiframe, rle_multiframe)


def parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related answer."""
    assert response.status_code == 200, response.text
    media_type = response.headers["content-type"]
    assert media_type.startswith("multipart/related")
    boundary = media_type.split("boundary=")[1].split(";")[0].strip('"')
    pieces = response.content.split(f"--{boundary}".encode())
    assert pieces[-1].strip() == b"--"
    found = []
    for piece in pieces[1:-1]:
        head, _, body = piece.partition(b"\r\n\r\n")
        content_type = head.decode().split("Content-Type:")[1].strip()
        found.append((content_type, body.removesuffix(b"\r\n")))
    return found


def reason(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    text: str = response.json()["reason"]
    assert text
    return text


# -- transfer syntaxes -----------------------------------------------------------------------------


def test_an_rle_object_comes_back_byte_identical_with_transfer_syntax_any(corpus: Corpus) -> None:
    response = corpus.client.get(
        corpus.rle.path,
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    [(content_type, body)] = parts(response)
    assert content_type.startswith("application/dicom")
    assert body == corpus.rle.part10


def test_an_rle_object_comes_decoded_by_default(corpus: Corpus) -> None:
    """No transfer-syntax parameter means Explicit VR Little Endian (PS3.18 8.7.3.5.2)."""
    response = corpus.client.get(
        corpus.rle.path, headers={"Accept": 'multipart/related; type="application/dicom"'}
    )
    [(content_type, body)] = parts(response)
    assert f"transfer-syntax={ExplicitVRLittleEndian}" in content_type
    decoded = dcmread(io.BytesIO(body))
    assert decoded.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert decoded.SOPInstanceUID == corpus.rle.ds.SOPInstanceUID
    original = dcmread(io.BytesIO(corpus.rle.part10))
    assert np.array_equal(decoded.pixel_array, original.pixel_array)


def test_a_study_retrieved_in_an_explicit_syntax_has_every_object_in_it(corpus: Corpus) -> None:
    study = corpus.native.ds.StudyInstanceUID
    response = corpus.client.get(
        f"/dicom-web/studies/{study}",
        headers={
            "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={RLELossless}'
        },
    )
    found = parts(response)
    assert len(found) == 4
    for _, body in found:
        assert dcmread(io.BytesIO(body)).file_meta.TransferSyntaxUID == RLELossless


@pytest.mark.parametrize(
    "accept",
    [
        # lossy: the archive never makes a lossy copy
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
        'multipart/related; type="image/png"',
        "text/html",
    ],
)
def test_what_cannot_be_produced_is_406_with_a_reason(corpus: Corpus, accept: str) -> None:
    response = corpus.client.get(corpus.rle.path, headers={"Accept": accept})
    reason(response, 406)


# -- frames ----------------------------------------------------------------------------------------


def test_native_frames_of_a_multiframe_object_in_the_order_asked(corpus: Corpus) -> None:
    ds = corpus.multiframe.ds
    size = ds.Rows * ds.Columns * 2
    raw = bytes(ds.PixelData)
    response = corpus.client.get(
        f"{corpus.multiframe.path}/frames/3,1", headers={"Accept": OHIF_FRAMES}
    )
    found = parts(response)
    assert [body for _, body in found] == [raw[2 * size : 3 * size], raw[0:size]]
    assert all(ct.startswith("application/octet-stream") for ct, _ in found)


def test_ohif_gets_encapsulated_frames_as_stored(corpus: Corpus) -> None:
    response = corpus.client.get(
        f"{corpus.rle_multiframe.path}/frames/2,4", headers={"Accept": OHIF_FRAMES}
    )
    found = parts(response)
    stored = dcmread(io.BytesIO(corpus.rle_multiframe.part10))
    expected = [get_frame(stored.PixelData, i, number_of_frames=4) for i in (1, 3)]
    assert [body for _, body in found] == expected
    assert all(f"transfer-syntax={RLELossless}" in ct for ct, _ in found)


def test_encapsulated_frames_decoded_for_a_client_that_wants_native(corpus: Corpus) -> None:
    response = corpus.client.get(
        f"{corpus.rle_multiframe.path}/frames/2",
        headers={"Accept": "multipart/related; type=application/octet-stream"},
    )
    [(content_type, body)] = parts(response)
    assert content_type.startswith("application/octet-stream")
    pixels = dcmread(io.BytesIO(corpus.rle_multiframe.part10)).pixel_array
    assert body == pixels[1].tobytes()


def test_single_frame_of_a_native_image(corpus: Corpus) -> None:
    response = corpus.client.get(f"{corpus.native.path}/frames/1", headers={"Accept": OHIF_FRAMES})
    [(_, body)] = parts(response)
    assert body == bytes(corpus.native.ds.PixelData)


@pytest.mark.parametrize(
    ("frames", "status"), [("5", 404), ("0", 400), ("1,x", 400), ("", 404), ("-1", 400)]
)
def test_wrong_frame_numbers_get_a_reason(corpus: Corpus, frames: str, status: int) -> None:
    response = corpus.client.get(
        f"{corpus.rle_multiframe.path}/frames/{frames}", headers={"Accept": OHIF_FRAMES}
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")


# -- bulk data and metadata ------------------------------------------------------------------------


def test_metadata_bulkdata_uris_resolve_to_the_values(corpus: Corpus) -> None:
    [item] = corpus.client.get(f"{corpus.multiframe.path}/metadata").json()
    uri = item["7FE00010"]["BulkDataURI"]
    assert uri.startswith(f"{corpus.running.base_url}/dicom-web/studies/")
    response = corpus.client.get(uri, headers={"Accept": OHIF_FRAMES})
    assert b"".join(body for _, body in parts(response)) == bytes(corpus.multiframe.ds.PixelData)


def test_unknown_bulkdata_tags_are_refused(corpus: Corpus) -> None:
    reason(corpus.client.get(f"{corpus.native.path}/bulkdata/00091234"), 404)
    reason(corpus.client.get(f"{corpus.native.path}/bulkdata/zz"), 400)


def test_study_metadata_is_gzipped_for_clients_that_take_it(corpus: Corpus) -> None:
    study = corpus.native.ds.StudyInstanceUID
    url = f"/dicom-web/studies/{study}/metadata"
    zipped = corpus.client.get(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.num_bytes_downloaded < len(zipped.content)  # compressed on the wire
    plain = corpus.client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.json() == zipped.json()
    assert len(plain.json()) == 4


def test_dicom_payloads_are_never_gzipped(corpus: Corpus) -> None:
    response = corpus.client.get(
        corpus.native.path,
        headers={"Accept-Encoding": "gzip", "Accept": "multipart/related; transfer-syntax=*"},
    )
    assert response.status_code == 200
    assert "content-encoding" not in response.headers


# -- ETag and 304 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["/metadata", "/rendered", "/thumbnail"])
def test_etag_and_304(corpus: Corpus, suffix: str) -> None:
    url = corpus.native.path + suffix
    first = corpus.client.get(url)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    again = corpus.client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert corpus.client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


def test_render_parameters_change_the_etag(corpus: Corpus) -> None:
    url = corpus.native.path + "/rendered"
    plain = corpus.client.get(url).headers["etag"]
    windowed = corpus.client.get(url, params={"window": "100,200"}).headers["etag"]
    assert plain != windowed
    assert corpus.client.get(url, params={"window": "100,200"}).headers["etag"] == windowed


def test_a_304_still_needs_credentials(corpus: Corpus) -> None:
    etag = corpus.client.get(corpus.native.path + "/metadata").headers["etag"]
    anonymous = httpx.get(
        f"{corpus.running.base_url}{corpus.native.path}/metadata",
        headers={"If-None-Match": etag},
    )
    assert anonymous.status_code == 401


# -- rendered at every level -----------------------------------------------------------------------


@pytest.mark.parametrize("level", ["study", "series", "frame"])
def test_rendered_at_every_level(corpus: Corpus, level: str) -> None:
    ds = corpus.multiframe.ds
    url = {
        "study": f"/dicom-web/studies/{ds.StudyInstanceUID}/rendered",
        "series": (
            f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/rendered"
        ),
        "frame": f"{corpus.multiframe.path}/frames/2/rendered",
    }[level]
    response = corpus.client.get(url, params={"accept": "image/png", "viewport": "32,32"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert max(image.size) <= 32


def test_frame_thumbnail(corpus: Corpus) -> None:
    response = corpus.client.get(f"{corpus.multiframe.path}/frames/3/thumbnail")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"


# -- audit -----------------------------------------------------------------------------------------


def test_frames_and_bulkdata_reads_are_audited(corpus: Corpus) -> None:
    with corpus.running.add_user("revisor-frames") as client:
        client.get(f"{corpus.native.path}/frames/1", headers={"Accept": OHIF_FRAMES})
        client.get(f"{corpus.native.path}/bulkdata/7FE00010", headers={"Accept": OHIF_FRAMES})
    events = corpus.running.archive.index.find_audit_events(
        AuditQuery(actor="revisor-frames", limit=100)
    )
    reads = {e.details.get("purpose"): e for e in events if e.details.get("purpose")}
    assert {"frames", "bulkdata"} <= set(reads)
    for purpose in ("frames", "bulkdata"):
        assert reads[purpose].study_uids == (corpus.native.ds.StudyInstanceUID,)
        assert reads[purpose].patient_ids == (corpus.native.ds.PatientID,)


def test_nothing_is_served_when_the_audit_cannot_be_written(
    corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    def audit_disk_full(*_args: object, **_kwargs: object) -> None:
        raise IndexUnavailable("disk full")

    with corpus.running.add_user("revisor-closed") as client:
        assert client.get("/dicom-web/studies").status_code == 200
        monkeypatch.setattr(IndexTransaction, "append_audit", audit_disk_full)
        ds = corpus.rle.ds
        for path in (
            f"{corpus.rle.path}/frames/1",
            f"{corpus.rle.path}/bulkdata/7FE00010",
            f"/dicom-web/studies/{ds.StudyInstanceUID}/rendered",
            f"/wado?requestType=WADO&studyUID={ds.StudyInstanceUID}"
            f"&seriesUID={ds.SeriesInstanceUID}&objectUID={ds.SOPInstanceUID}"
            "&contentType=application/dicom",
        ):
            accept = OHIF_FRAMES if "/frames/" in path or "/bulkdata/" in path else "*/*"
            response = client.get(path, headers={"Accept": accept})
            assert response.status_code == 503, (path, response.text)
            assert ds.PatientID.encode() not in response.content


# -- CORS ------------------------------------------------------------------------------------------


def test_no_cors_headers_by_default(corpus: Corpus) -> None:
    response = corpus.client.get(corpus.native.path + "/metadata", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers
    preflight = httpx.options(
        f"{corpus.running.base_url}/dicom-web/studies",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_for_configured_origins(tmp_path_factory: pytest.TempPathFactory) -> None:
    start = contextlib.contextmanager(_start_archive)
    overrides = {"cors_origins": (ORIGIN,)}
    with start(tmp_path_factory.mktemp("cors") / "data", overrides) as running:
        spec = Spec()
        stored = _store(running, make_dataset(spec))
        preflight = httpx.options(
            f"{running.base_url}/dicom-web/studies",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization, Accept",
            },
        )
        assert preflight.status_code == 200  # no credentials needed for the preflight
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        with running.add_user("tannlege") as client:
            answer = client.get(stored.path + "/metadata", headers={"Origin": ORIGIN})
            assert answer.headers["access-control-allow-origin"] == ORIGIN
            assert "etag" in answer.headers["access-control-expose-headers"].lower()
            stranger = client.get(
                stored.path + "/metadata", headers={"Origin": "https://evil.example"}
            )
            assert "access-control-allow-origin" not in stranger.headers
        refused = httpx.options(
            f"{running.base_url}/dicom-web/studies",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in refused.headers
