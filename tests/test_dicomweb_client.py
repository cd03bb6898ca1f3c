"""Every DICOMweb route the `dicomweb-client` library has, used as a client application uses it:
store a study with STOW-RS, find it with QIDO-RS, read it back with WADO-RS whole, as metadata,
frames, bulk data and rendered images, on both storage backends."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_auth
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless

from tests.conftest import BACKENDS, PASSWORD, RunningArchive, _start_archive, backend_settings
from tests.dicom_factory import Spec, encode, make_dataset


@dataclass
class Setup:
    running: RunningArchive
    client: DICOMwebClient
    study_uid: str
    native: Dataset
    rle: Dataset
    multiframe: Dataset


def _multiframe(spec: Spec, frames: int) -> Dataset:
    ds = make_dataset(spec)
    rng = np.random.default_rng(spec.seed)
    ds.NumberOfFrames = frames
    ds.PixelData = rng.integers(0, 4000, (frames, spec.rows, spec.columns), np.uint16).tobytes()
    return ds


@pytest.fixture(scope="module", params=BACKENDS)
def setup(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Setup]:
    start = contextlib.contextmanager(_start_archive)
    with (
        backend_settings(request, request.param) as overrides,
        start(tmp_path_factory.mktemp("dwc") / "data", overrides) as running,
    ):
        running.add_user("tannlege").close()  # the account; the library signs in itself
        session = create_session_from_auth(requests.auth.HTTPBasicAuth("tannlege", PASSWORD))
        session.trust_env = False  # loopback only
        client = DICOMwebClient(url=f"{running.base_url}/dicom-web", session=session)
        study = Spec(patient_name="Ødegård^Åse").study_uid
        native = make_dataset(Spec(study_uid=study, patient_name="Ødegård^Åse", seed=1))
        rle = make_dataset(Spec(study_uid=study, patient_name="Ødegård^Åse", seed=2))
        rle.compress(RLELossless, generate_instance_uid=False)
        multiframe = _multiframe(Spec(study_uid=study, patient_name="Ødegård^Åse", seed=3), 3)
        answer = client.store_instances([native, rle, multiframe])  # as built in memory
        assert len(answer.ReferencedSOPSequence) == 3
        try:
            yield Setup(running, client, study, native, rle, multiframe)
        finally:
            session.close()


def ids(ds: Dataset) -> tuple[str, str, str]:
    """Study, series and instance UID, as the library's retrieve methods take them."""
    return (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))


def test_store_reports_a_failed_instance(setup: Setup) -> None:
    """dicomweb-client raises on 409 (nothing stored) and hands back the 202 answer."""
    duplicate = make_dataset(
        Spec(
            study_uid=setup.native.StudyInstanceUID,
            series_uid=setup.native.SeriesInstanceUID,
            sop_uid=setup.native.SOPInstanceUID,
            seed=99,
        )
    )
    fresh = make_dataset(Spec(study_uid=setup.study_uid, seed=98))
    answer = setup.client.store_instances([fresh, duplicate])
    assert [i.ReferencedSOPInstanceUID for i in answer.ReferencedSOPSequence] == [
        fresh.SOPInstanceUID
    ]
    [failed] = answer.FailedSOPSequence
    assert failed.ReferencedSOPInstanceUID == duplicate.SOPInstanceUID
    assert failed.FailureReason == 0x0111


def test_search_for_studies_series_and_instances(setup: Setup) -> None:
    [study] = setup.client.search_for_studies(
        search_filters={"PatientName": "ødegård*"}, fields=["all"]
    )
    assert study["0020000D"]["Value"] == [setup.study_uid]
    assert study["00100010"]["Value"][0]["Alphabetic"] == "Ødegård^Åse"
    series = setup.client.search_for_series(study_instance_uid=setup.study_uid)
    assert len(series) == 4  # make_dataset gives every image a series of its own
    instances = setup.client.search_for_instances(
        study_instance_uid=setup.study_uid, limit=2, offset=0
    )
    assert len(instances) == 2


def test_retrieve_instance_series_and_study(setup: Setup) -> None:
    instance = setup.client.retrieve_instance(*ids(setup.native))
    assert instance.SOPInstanceUID == setup.native.SOPInstanceUID
    assert instance.PixelData == setup.native.PixelData
    as_stored = setup.client.retrieve_instance(
        *ids(setup.rle), media_types=(("application/dicom", "*"),)
    )
    assert as_stored.file_meta.TransferSyntaxUID == RLELossless
    assert as_stored.PixelData == setup.rle.PixelData
    [one] = setup.client.retrieve_series(setup.study_uid, setup.native.SeriesInstanceUID)
    assert one.SOPInstanceUID == setup.native.SOPInstanceUID
    study = setup.client.retrieve_study(setup.study_uid)
    assert setup.native.SOPInstanceUID in {ds.SOPInstanceUID for ds in study}
    assert len(study) >= 3


def test_retrieve_metadata_at_every_level(setup: Setup) -> None:
    instance = setup.client.retrieve_instance_metadata(*ids(setup.multiframe))
    assert instance["00280008"]["Value"] == [3]
    series = setup.client.retrieve_series_metadata(
        setup.study_uid, setup.multiframe.SeriesInstanceUID
    )
    assert series == [instance]
    study = setup.client.retrieve_study_metadata(setup.study_uid)
    assert instance in study


def test_retrieve_instance_frames(setup: Setup) -> None:
    frames = setup.client.retrieve_instance_frames(*ids(setup.multiframe), frame_numbers=[2, 3])
    size = setup.multiframe.Rows * setup.multiframe.Columns * 2
    raw = bytes(setup.multiframe.PixelData)
    assert frames == [raw[size : 2 * size], raw[2 * size : 3 * size]]
    [decoded] = setup.client.retrieve_instance_frames(*ids(setup.rle), frame_numbers=[1])
    assert decoded == dcmread(io.BytesIO(encode(setup.rle))).pixel_array.tobytes()
    [encoded] = setup.client.retrieve_instance_frames(
        *ids(setup.rle),
        frame_numbers=[1],
        media_types=(("image/x-dicom-rle", RLELossless),),
    )
    assert encoded != decoded and len(encoded) > 0


def test_retrieve_bulkdata(setup: Setup) -> None:
    metadata = setup.client.retrieve_instance_metadata(*ids(setup.native))
    # dicomweb-client sends `Host` without the port for non-streamed GETs, so the absolute URI
    # the server builds from it lacks the port; take the path and ask on the client's origin.
    path = urlsplit(metadata["7FE00010"]["BulkDataURI"]).path
    assert path.endswith(f"/instances/{setup.native.SOPInstanceUID}/bulkdata/7FE00010")
    [pixels] = setup.client.retrieve_bulkdata(setup.running.base_url + path)
    assert pixels == bytes(setup.native.PixelData)


def test_retrieve_rendered_at_every_level(setup: Setup) -> None:
    def image(data: bytes) -> Image.Image:
        opened = Image.open(io.BytesIO(data))
        opened.load()
        return opened

    rendered = setup.client.retrieve_instance_rendered(
        *ids(setup.native), media_types=("image/png",)
    )
    assert image(rendered).size == (setup.native.Columns, setup.native.Rows)
    frame = setup.client.retrieve_instance_frames_rendered(
        *ids(setup.multiframe), frame_numbers=[2]
    )
    assert image(frame).format == "JPEG"
    series = setup.client.retrieve_series_rendered(
        setup.study_uid, setup.native.SeriesInstanceUID, params={"viewport": "24,24"}
    )
    assert max(image(series).size) <= 24
