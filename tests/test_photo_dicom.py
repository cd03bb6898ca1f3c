"""The DICOM wrappers of clinical photos (VL Photographic) and videos (Video Photographic).

dciodvfy (dicom3tools) must report no errors. The warnings it gives and that cannot be avoided:
- "Missing attribute or value that would be needed to build DICOMDIR - Study Time": Study Time
  is left empty (Type 2) because one study holds a day's photos taken at different times.
- "Value dubious for this VR - Operators' Name ... Retired Person Name form": the operator is a
  user name (one PN component, no "^"), not a family^given name.
"""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from fractions import Fraction
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import generate_fragments

from arkiv.photo_dicom import (
    CATEGORY_LABELS,
    NotWrappable,
    PhotoContext,
    PhotoPatient,
    choose_video_syntax,
    jpeg_facts,
    mp4_audio_channels,
    wrap_jpeg,
    wrap_video,
)
from arkiv.teeth import tooth_code, tooth_from_code
from arkiv.video import VideoProbe
from tests.conftest import require_tool

VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
VL_VIDEO = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

PATIENT = PhotoPatient("01018012345", "Ødegård^Åse Marie", "19800101", "F")


def context(
    category: str = "intraoral", teeth: tuple[int, ...] = (11, 21, 36), note: str = ""
) -> PhotoContext:
    return PhotoContext(
        study_uid="2.25.1001",
        series_uid="2.25.1002",
        sop_uid="2.25.1003",
        instance_number=101500,
        taken_at=datetime(2026, 11, 20, 10, 15, 30),
        category=category,
        teeth=teeth,
        note=note,
        county="Vestfold",
        operator="kari",
        study_description="Kliniske foto",
        series_description="Kliniske foto",
    )


def picture(mode: str = "RGB", width: int = 160, height: int = 120) -> Image.Image:
    """Smooth gradients with some detail: JPEG-friendly, and every channel differs."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x * 3 + y * 5) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB").convert(mode)


def encode(image: Image.Image, **options: object) -> bytes:
    out = BytesIO()
    image.save(out, "JPEG", quality=90, **options)
    return out.getvalue()


def dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(
        [require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60
    )
    output = (result.stdout + result.stderr).splitlines()
    return [line for line in output if "Error" in line or "Abort" in line]


def fragments(ds: pydicom.Dataset) -> list[bytes]:
    """The Pixel Data items after the Basic Offset Table, which must be empty."""
    items = list(generate_fragments(ds.PixelData))
    assert items[0] == b""  # empty Basic Offset Table
    return items[1:]


def unpadded(fragment: bytes, original: bytes) -> bytes:
    assert len(fragment) % 2 == 0
    assert len(fragment) - len(original) in (0, 1)
    assert fragment[len(original) :] in (b"", b"\x00")
    return fragment[: len(original)]


# -- JPEG facts -------------------------------------------------------------------------------


def test_jpeg_facts_of_pillow_jpegs() -> None:
    facts = jpeg_facts(encode(picture(width=64, height=48)))
    assert (facts.width, facts.height, facts.components, facts.precision) == (64, 48, 3, 8)
    assert (facts.process, facts.subsampling, facts.has_jfif) == ("baseline", "4:2:0", True)
    assert facts.adobe_transform is None
    assert jpeg_facts(encode(picture(), subsampling=0)).subsampling == "4:4:4"
    assert jpeg_facts(encode(picture(), subsampling=1)).subsampling == "4:2:2"
    grey = jpeg_facts(encode(picture("L")))
    assert (grey.components, grey.subsampling) == (1, "4:0:0")
    assert jpeg_facts(encode(picture(), progressive=True)).process == "progressive"
    rgb = jpeg_facts(encode(picture(), keep_rgb=True, subsampling=0))
    assert (rgb.adobe_transform, rgb.has_jfif) == (0, False)
    cmyk = jpeg_facts(encode(picture("CMYK")))
    assert cmyk.components == 4 and cmyk.adobe_transform is not None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff\xe0\x00",  # truncated segment length
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # segment longer than the data
        b"\xff\xd8\xff\xd9",  # EOI before any scan
        b"\xff\xd8\xff\xda\x00\x02",  # scan without a frame header
        b"\xff\xd8\xff\xc0\x00\x05\x08\x00",  # frame header too short
        b"\xff\xd8" + b"\xff\xe0\x00\x02" * 5000,  # endless empty segments: bounded
    ],
)
def test_jpeg_facts_rejects_malformed_input(data: bytes) -> None:
    with pytest.raises(ValueError):
        jpeg_facts(data)


def test_jpeg_facts_stops_at_the_first_scan() -> None:
    jpeg = encode(picture())
    scan = jpeg.index(b"\xff\xda")
    # Garbage after the scan header does not matter: the walk stops at SOS.
    assert jpeg_facts(jpeg[: scan + 20] + b"\x00" * 10).width == 160


# -- JPEG wrapper ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "options", "photometric"),
    [
        ("RGB", {}, "YBR_FULL_422"),  # Pillow's default: 4:2:0
        ("RGB", {"subsampling": 1}, "YBR_FULL_422"),
        ("RGB", {"subsampling": 0}, "YBR_FULL_422"),  # VL Image module: not YBR_FULL
        ("L", {}, "MONOCHROME2"),
    ],
)
def test_jpeg_is_wrapped_as_is_and_decodes_like_pillow(
    tmp_path: Path, mode: str, options: dict[str, object], photometric: str
) -> None:
    jpeg = encode(picture(mode), **options)
    path = tmp_path / "photo.dcm"
    path.write_bytes(wrap_jpeg(jpeg, PATIENT, context(), recompressed=False))
    assert dciodvfy_errors(path) == []

    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == JPEG_BASELINE
    assert ds.SOPClassUID == VL_PHOTO and ds.Modality == "XC"
    assert ds.PhotometricInterpretation == photometric
    assert (ds.Rows, ds.Columns) == (120, 160)
    assert ds.SamplesPerPixel == (1 if mode == "L" else 3)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (8, 8, 7, 0)
    assert ds.get("PlanarConfiguration", 0) == 0
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY"]
    assert "DerivationDescription" not in ds
    [fragment] = fragments(ds)
    assert unpadded(fragment, jpeg) == jpeg

    expected = np.asarray(Image.open(BytesIO(jpeg)).convert(mode)).astype(int)
    # Pillow's decoder through pydicom: the same IDCT and upsampling, so only the rounding of
    # pydicom's own YCbCr → RGB conversion differs.
    ds.pixel_array_options(decoding_plugin="pillow")
    assert np.abs(ds.pixel_array.astype(int) - expected).max() <= 2
    # Any other decoder pydicom picks (pylibjpeg's libjpeg) upsamples chroma in its own way.
    ds.pixel_array_options(decoding_plugin="")
    assert np.abs(ds.pixel_array.astype(int) - expected).mean() < 1.5


def test_photo_attributes(tmp_path: Path) -> None:
    ctx = context("before-treatment", (36, 11), "Misfarging på 11, kontroll om 3 mnd – «ÆØÅ»")
    data = wrap_jpeg(encode(picture()), PATIENT, ctx, recompressed=True)
    path = tmp_path / "photo.dcm"
    path.write_bytes(data)
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Ødegård^Åse Marie"
    assert (ds.PatientID, ds.PatientBirthDate, ds.PatientSex) == ("01018012345", "19800101", "F")
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == (
        "2.25.1001",
        "2.25.1002",
        "2.25.1003",
    )
    assert ds.file_meta.MediaStorageSOPInstanceUID == "2.25.1003"
    assert (ds.StudyDate, ds.ContentDate, ds.ContentTime) == ("20261120", "20261120", "101530")
    assert ds.AcquisitionDateTime == "20261120101530"
    assert ds.InstanceNumber == 101500
    assert ds.InstitutionName == "Vestfold" and ds.Manufacturer == "arkiv"
    assert str(ds.OperatorsName) == "kari"
    assert ds.ImageComments == "Før behandling: Misfarging på 11, kontroll om 3 mnd – «ÆØÅ»"
    # Re-encoded by the archive: said so.
    assert list(ds.ImageType) == ["DERIVED", "PRIMARY"]
    assert "Omkodet" in ds.DerivationDescription
    # Teeth as PS3.16 CID 4018 codes, in FDI order; the region is the mouth.
    items = ds.PrimaryAnatomicStructureSequence
    teeth = [tooth_from_code(i.CodingSchemeDesignator, i.CodeValue) for i in items]
    assert teeth == [11, 36]
    first = ds.PrimaryAnatomicStructureSequence[0]
    assert (first.CodingSchemeDesignator, first.CodeValue) == ("SCT", "422653006")
    assert first.CodeMeaning == tooth_code(11).meaning
    [region] = ds.AnatomicRegionSequence
    assert (region.CodingSchemeDesignator, region.CodeValue) == ("SCT", "123851003")


@pytest.mark.parametrize(
    ("category", "teeth", "region", "identifiable"),
    [
        ("intraoral", (), "123851003", False),
        ("extraoral", (11,), "774007", True),
        ("orthodontic", (), "774007", True),
        ("orthodontic", (16, 26), "123851003", True),
        ("radiograph-photo", (46,), "123851003", False),
        ("after-treatment", (), "774007", False),
    ],
)
def test_category_sets_region_and_comments(
    tmp_path: Path, category: str, teeth: tuple[int, ...], region: str, identifiable: bool
) -> None:
    path = tmp_path / "photo.dcm"
    path.write_bytes(
        wrap_jpeg(encode(picture()), PATIENT, context(category, teeth), recompressed=False)
    )
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.ImageComments == CATEGORY_LABELS[category]
    assert ds.AnatomicRegionSequence[0].CodeValue == region
    assert len(ds.get("PrimaryAnatomicStructureSequence", [])) == len(teeth)
    assert (ds.get("RecognizableVisualFeatures") == "YES") is identifiable


def test_wrapping_is_deterministic() -> None:
    jpeg = encode(picture())
    first = wrap_jpeg(jpeg, PATIENT, context(), recompressed=False)
    assert first == wrap_jpeg(jpeg, PATIENT, context(), recompressed=False)


@pytest.mark.parametrize(
    ("jpeg", "reason"),
    [
        (encode(picture(), progressive=True), "progressive"),
        (encode(picture("CMYK")), "4 components"),
        (encode(picture(), keep_rgb=True, subsampling=0), "not YCbCr (Adobe transform 0)"),
        (b"\x89PNG\r\n\x1a\n", "not a JPEG"),
    ],
)
def test_what_is_not_wrappable(jpeg: bytes, reason: str) -> None:
    with pytest.raises(NotWrappable) as caught:
        wrap_jpeg(jpeg, PATIENT, context(), recompressed=False)
    assert reason in caught.value.reason


def test_twelve_bit_jpeg_is_not_wrappable() -> None:
    jpeg = bytearray(encode(picture("L")))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 1] = 0xC1  # extended sequential …
    jpeg[sof + 4] = 12  # … with 12-bit samples
    with pytest.raises(NotWrappable, match="extended"):
        wrap_jpeg(bytes(jpeg), PATIENT, context(), recompressed=False)


# -- video -------------------------------------------------------------------------------------


def make_video(
    path: Path, *extra: str, size: str = "640x480", rate: int = 25, codec: str = "libx264"
) -> Path:
    subprocess.run(
        [
            require_tool("ffmpeg"), "-v", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc=duration=2:size={size}:rate={rate}",
            *extra,
            "-c:v", codec, "-pix_fmt", "yuv420p", str(path),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    return path


def probe(path: Path) -> VideoProbe:
    """A VideoProbe made by hand from ffprobe's JSON (arkiv.video has the real one)."""
    result = subprocess.run(
        [
            require_tool("ffprobe"), "-v", "error", "-print_format", "json",
            "-show_streams", "-show_format", str(path),
        ],
        capture_output=True, check=True, text=True, timeout=60,
    )  # fmt: skip
    info = json.loads(result.stdout)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    return VideoProbe(
        container="mp4",
        codec=video["codec_name"],
        profile=video.get("profile", ""),
        level=int(video.get("level", 0)),
        width=int(video["width"]),
        height=int(video["height"]),
        rotation=0,
        frame_rate=Fraction(video["avg_frame_rate"]),
        frames=int(video.get("nb_frames", 0)),
        duration_seconds=float(info["format"]["duration"]),
        creation_time=None,
        has_audio=any(s["codec_type"] == "audio" for s in info["streams"]),
    )


def video_context() -> PhotoContext:
    ctx = context("intraoral", (46,), "Åpning, kjeveledd")
    return PhotoContext(**{**ctx.__dict__, "sop_uid": "2.25.2003", "series_uid": "2.25.2002"})


def test_h264_video_is_wrapped_whole_as_mp4(tmp_path: Path) -> None:
    mp4 = make_video(tmp_path / "clip.mp4")
    data = mp4.read_bytes()
    info = probe(mp4)
    assert (info.codec, info.profile, info.level) == ("h264", "High", 30)
    path = tmp_path / "video.dcm"
    path.write_bytes(wrap_video(data, info, PATIENT, video_context()))
    assert dciodvfy_errors(path) == []

    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == VL_VIDEO and ds.Modality == "XC"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.102"  # High Profile / L4.1
    assert (ds.Rows, ds.Columns, ds.NumberOfFrames) == (480, 640, 50)
    assert ds.PhotometricInterpretation == "YBR_PARTIAL_420"
    assert (ds.SamplesPerPixel, ds.PlanarConfiguration) == (3, 0)
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (8, 8, 7)
    assert float(ds.FrameTime) == 40.0 and ds.CineRate == 25
    assert ds.FrameIncrementPointer == 0x00181063
    assert ds.LossyImageCompressionMethod == "ISO_14496_10"
    assert ds.ImageComments == "Intraoralt: Åpning, kjeveledd"
    assert "MultiplexedAudioChannelsDescriptionCodeSequence" not in ds
    # PS3.5 8.2.7–8.2.9 / A.4: the MP4 file as it is, in one fragment after an empty offset table.
    [fragment] = fragments(ds)
    assert unpadded(fragment, data) == data
    assert fragment[4:8] == b"ftyp"


def test_hevc_video_is_wrapped_whole_as_mp4(tmp_path: Path) -> None:
    mp4 = make_video(tmp_path / "clip.mp4", "-x265-params", "log-level=error", codec="libx265")
    data = mp4.read_bytes()
    info = probe(mp4)
    assert (info.codec, info.profile) == ("hevc", "Main")
    assert info.level > 62  # ffprobe gives HEVC's general_level_idc (30 × level)
    dicom = wrap_video(data, info, PATIENT, video_context())
    ds = pydicom.dcmread(BytesIO(dicom))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.107"  # HEVC Main / L5.1
    assert ds.LossyImageCompressionMethod == "ISO_23008_2"
    [fragment] = fragments(ds)
    assert unpadded(fragment, data) == data
    # dicom3tools (2022) does not know the HEVC transfer syntaxes and then cannot read the
    # encapsulated Pixel Data; the IOD is checked on a copy labelled H.264 (same UID length).
    # Its one further warning: ISO_23008_2 is not among its Lossy Image Compression Methods.
    path = tmp_path / "video.dcm"
    path.write_bytes(dicom.replace(b"1.2.840.10008.1.2.4.107", b"1.2.840.10008.1.2.4.102", 1))
    assert dciodvfy_errors(path) == []


@pytest.mark.parametrize(("channels", "mode"), [(1, "MONO"), (2, "STEREO")])
def test_video_with_sound_declares_its_audio_channel(
    tmp_path: Path, channels: int, mode: str
) -> None:
    mp4 = make_video(
        tmp_path / "clip.mp4",
        "-f", "lavfi", "-i", "sine=duration=2",
        "-c:a", "aac", "-ac", str(channels), "-shortest",
    )  # fmt: skip
    data = mp4.read_bytes()
    assert mp4_audio_channels(data) == channels
    info = probe(mp4)
    assert info.has_audio
    path = tmp_path / "video.dcm"
    path.write_bytes(wrap_video(data, info, PATIENT, video_context()))
    assert dciodvfy_errors(path) == []
    [channel] = pydicom.dcmread(path).MultiplexedAudioChannelsDescriptionCodeSequence
    assert channel.ChannelMode == mode
    assert channel.ChannelSourceSequence[0].CodeValue == "109112"


def test_audio_channels_of_files_without_sound() -> None:
    assert mp4_audio_channels(b"") is None
    assert mp4_audio_channels(b"\x00\x00\x00\x08free") is None
    assert mp4_audio_channels(b"\x00\x00\x10\x00moov") is None  # box larger than the data


def hand_probe(**changes: object) -> VideoProbe:
    base: dict[str, object] = {
        "container": "mp4", "codec": "h264", "profile": "High", "level": 40,
        "width": 1920, "height": 1080, "rotation": 90, "frame_rate": Fraction(30000, 1001),
        "frames": 300, "duration_seconds": 10.0, "creation_time": None, "has_audio": True,
    }  # fmt: skip
    base.update(changes)
    return VideoProbe(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "syntax"),
    [
        ({}, "1.2.840.10008.1.2.4.102"),
        ({"profile": "Main", "level": 31, "width": 1280, "height": 720}, "1.2.840.10008.1.2.4.102"),
        (
            {"profile": "Constrained Baseline", "level": 30, "width": 640, "height": 480},
            "1.2.840.10008.1.2.4.102",
        ),
        ({"width": 1080, "height": 1920}, "1.2.840.10008.1.2.4.102"),  # coded portrait
        ({"level": 42, "frame_rate": Fraction(60)}, "1.2.840.10008.1.2.4.104"),
        # Declared 4.1 but 1080p60 needs 4.2's macroblock rate: the stronger syntax is chosen.
        ({"level": 41, "frame_rate": Fraction(60)}, "1.2.840.10008.1.2.4.104"),
        (
            {"codec": "hevc", "profile": "Main", "level": 153, "width": 3840, "height": 2160},
            "1.2.840.10008.1.2.4.107",
        ),
        ({"codec": "hevc", "profile": "Main", "level": 41}, "1.2.840.10008.1.2.4.107"),
    ],
)
def test_video_transfer_syntax_choice(changes: dict[str, object], syntax: str) -> None:
    assert choose_video_syntax(hand_probe(**changes)) == syntax


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"container": "mov"}, "remux it to MP4"),
        ({"profile": "High 10"}, "not within High Profile"),
        ({"profile": "Baseline"}, "not within High Profile"),
        ({"profile": "High 4:2:2"}, "not within High Profile"),
        ({"level": 50}, "level 5.0 is above 4.2"),
        ({"level": 0}, "level is unknown"),
        ({"width": 3840, "height": 2160, "level": 42}, "3840×2160 is larger than 1920×1080"),
        (
            {"level": 42, "frame_rate": Fraction(120), "width": 1280, "height": 720},
            "120.00 frames/s is above 60",
        ),
        ({"codec": "hevc", "profile": "Main 10", "level": 153}, "Main 10"),
        ({"codec": "hevc", "profile": "Main", "level": 156}, "level 5.2 is above 5.1"),
        ({"codec": "vp9", "profile": "0"}, "vp9 has no DICOM transfer syntax"),
    ],
)
def test_video_not_wrappable_says_which_constraint_fails(
    changes: dict[str, object], reason: str
) -> None:
    with pytest.raises(NotWrappable) as caught:
        choose_video_syntax(hand_probe(**changes))
    assert reason in caught.value.reason
    with pytest.raises(NotWrappable):
        wrap_video(b"\x00" * 16, hand_probe(**changes), PATIENT, video_context())
