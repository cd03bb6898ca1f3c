"""Transcoding a stored object for a receiver that accepts nothing else: lossless only, the
picture unchanged, and a clear refusal where it cannot be done."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from arkiv.transcoding import TranscodeError, can_transcode, transcode
from tests.dicom_factory import Spec, encode, make_dataset


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(dcmread(BytesIO(data)).pixel_array)


def _stored(syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds = make_dataset(Spec(rows=128, columns=96))  # JPEG 2000's six resolutions need the size
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    return encode(ds)


def _jpeg_baseline() -> bytes:
    """An 8-bit RGB photo stored as JPEG baseline, as a camera sends it."""
    ds = make_dataset(Spec(rows=32, columns=24))
    rgb = np.random.default_rng(3).integers(0, 255, (32, 24, 3), dtype=np.uint8)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = rgb.tobytes()
    from PIL import Image

    out = BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=95)
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([out.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return encode(ds)


def test_the_stored_syntax_comes_back_unchanged() -> None:
    stored = _stored()
    assert transcode(stored, ExplicitVRLittleEndian) is stored


@pytest.mark.parametrize(
    "target",
    [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless, JPEG2000Lossless],
)
def test_native_to_every_target_keeps_every_pixel(target: str) -> None:
    stored = _stored()
    copy = transcode(stored, target)
    ds = dcmread(BytesIO(copy))
    assert ds.file_meta.TransferSyntaxUID == target
    assert ds.SOPInstanceUID == dcmread(BytesIO(stored)).SOPInstanceUID
    assert np.array_equal(_pixels(copy), _pixels(stored))


@pytest.mark.parametrize("source", [RLELossless, JPEG2000Lossless])
def test_lossless_compressed_to_native_keeps_every_pixel(source: str) -> None:
    stored = _stored(source)
    copy = transcode(stored, ImplicitVRLittleEndian)
    ds = dcmread(BytesIO(copy))
    assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert ds.SOPInstanceUID == dcmread(BytesIO(stored)).SOPInstanceUID
    assert np.array_equal(ds.pixel_array, _pixels(stored))


def test_a_jpeg_photo_is_decoded_to_rgb_for_a_native_only_receiver() -> None:
    stored = _jpeg_baseline()
    copy = dcmread(BytesIO(transcode(stored, ExplicitVRLittleEndian)))
    assert copy.PhotometricInterpretation == "RGB"
    assert np.array_equal(copy.pixel_array, _pixels(stored))


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (JPEGBaseline8Bit, "native or lossless"),
        (ExplicitVRBigEndian, "native or lossless"),
        ("1.2.3.4", "not a transfer syntax"),
    ],
)
def test_lossy_retired_and_unknown_targets_are_refused(target: str, reason: str) -> None:
    stored = _stored()
    assert not can_transcode(ExplicitVRLittleEndian, target)
    with pytest.raises(TranscodeError, match=reason):
        transcode(stored, target)


def test_an_object_without_pixels_is_not_compressed() -> None:
    ds = make_dataset(Spec())
    del ds.PixelData
    assert not can_transcode(ExplicitVRLittleEndian, RLELossless, has_pixels=False)
    with pytest.raises(TranscodeError, match="no pixel data"):
        transcode(encode(ds), RLELossless)
    assert dcmread(BytesIO(transcode(encode(ds), ImplicitVRLittleEndian))).PatientID


def test_a_big_endian_object_is_served_only_as_stored() -> None:
    ds = make_dataset(Spec())
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    buffer = BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=False, enforce_file_format=True)
    stored = buffer.getvalue()
    assert not can_transcode(ExplicitVRBigEndian, ExplicitVRLittleEndian)
    assert transcode(stored, ExplicitVRBigEndian) is stored
    with pytest.raises(TranscodeError, match="big endian"):
        transcode(stored, ExplicitVRLittleEndian)


def test_a_damaged_object_is_refused_with_a_reason() -> None:
    with pytest.raises(TranscodeError, match="cannot be read"):
        transcode(b"not dicom at all" * 20, ImplicitVRLittleEndian)
