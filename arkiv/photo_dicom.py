"""DICOM Part 10 wrappers for clinical photos (VL Photographic Image) and videos (Video
Photographic Image), so that DICOM and DICOMweb clients find them beside the patient's X-rays.

The compressed bitstream goes into the Pixel Data as it is: a baseline JPEG as one fragment of
the JPEG Baseline transfer syntax, an MP4 file as one fragment of the MPEG-4 AVC/H.264 or HEVC
transfer syntax its stream meets. Nothing is decoded or re-encoded here, so the wrapper shows
exactly the pixels the archive keeps as the photo; when a file cannot be carried that way the
photo is still kept as a photo, and `NotWrappable` says why there is no DICOM copy.

Attributes follow the VL Photographic Image and Video Photographic Image IODs (PS3.3 Annex
A.32) with the Type 1 and 2 attributes of their mandatory modules: Patient, General Study,
General Series, General Equipment, General Acquisition, General Image, Image Pixel, Acquisition
Context, VL Image, SOP Common, and for video also Cine and Multi-frame; dicom3tools' dciodvfy
finds no errors in them (see the tests). The output is deterministic: the same inputs give
the same bytes (no creation time stamp is added).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from math import ceil

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    HEVCMP51,
    MPEG4HP41,
    MPEG4HP422D,
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    JPEGBaseline8Bit,
)

from arkiv.teeth import tooth_code
from arkiv.video import VideoProbe

VL_PHOTOGRAPHIC_IMAGE = UID("1.2.840.10008.5.1.4.1.1.77.1.4")
VIDEO_PHOTOGRAPHIC_IMAGE = UID("1.2.840.10008.5.1.4.1.1.77.1.4.1")

CATEGORY_LABELS = {
    "intraoral": "Intraoralt",
    "extraoral": "Ekstraoralt",
    "radiograph-photo": "Foto av røntgenbilde",
    "before-treatment": "Før behandling",
    "after-treatment": "Etter behandling",
    "orthodontic": "Kjeveortopedisk",
}
"""The photo categories of the shared contract, with their Bokmål labels."""

# Anatomic Region Sequence codes (SNOMED CT), the same as the open-ortho DENT-OIP profile uses
# for dental photographs (open-ortho.org/dent-oip): "Mouth" 123851003 for intra-oral views
# (PS3.16 CID 4 Anatomic Region) and "Head and Neck" 774007 for extra-oral views (PS3.16
# CID 4031 Common Anatomic Region, also CID 4028 Craniofacial Anatomic Region).
_MOUTH = ("123851003", "SCT", "Mouth")
_HEAD_AND_NECK = ("774007", "SCT", "Head and Neck")

# Audio channel source for video with sound: PS3.16 CID 3000 Audio Channel Source.
_AMBIENT_ROOM = ("109112", "DCM", "Ambient room environment")

_MAX_FRAGMENT = 0xFFFF_FFFE  # the largest even Item length (PS3.5 7.5)


class NotWrappable(Exception):
    """The photo or video cannot be carried in a DICOM wrapper as it is; the reason says why.

    Not a user error: the photo is kept as a photo all the same, only without a DICOM copy.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PhotoPatient:
    patient_id: str
    name: str
    """DICOM PN form, e.g. "Nordmann^Åse"."""
    birth_date: str
    """"YYYYMMDD" or ""."""
    sex: str
    """"M", "F", "O" or ""."""


@dataclass(frozen=True)
class PhotoContext:
    study_uid: str
    series_uid: str
    sop_uid: str
    instance_number: int
    taken_at: datetime
    """Naive local time of capture."""
    category: str
    """One of CATEGORY_LABELS."""
    teeth: tuple[int, ...]
    """FDI numbers."""
    note: str
    county: str
    """The owning county; becomes Institution Name."""
    operator: str
    """User name of the uploader; becomes Operators' Name."""
    study_description: str
    series_description: str


@dataclass(frozen=True)
class JpegFacts:
    """What the frame header of a JPEG says, read from its markers without decoding it."""

    width: int
    height: int
    components: int
    precision: int
    process: str
    """"baseline", "extended", "progressive", "lossless" or "arithmetic"."""
    subsampling: str
    """"4:4:4", "4:2:2", "4:2:0", "4:4:0", "4:1:1", "4:0:0" (one component), or the sampling
    factors as "HxV,HxV,…" for anything else."""
    adobe_transform: int | None
    """The APP14 "Adobe" segment's colour transform (0 none/RGB, 1 YCbCr, 2 YCCK)."""
    has_jfif: bool


# -- JPEG ------------------------------------------------------------------------------------------

_SOF_PROCESS = {
    0xC0: "baseline",
    0xC1: "extended",
    0xC2: "progressive",
    0xC3: "lossless",
    0xC5: "extended",  # differential (hierarchical) sequential
    0xC6: "progressive",  # differential progressive
    0xC7: "lossless",  # differential lossless
    0xC9: "arithmetic",
    0xCA: "arithmetic",
    0xCB: "arithmetic",
    0xCD: "arithmetic",
    0xCE: "arithmetic",
    0xCF: "arithmetic",
}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0–7: markers without a length
_MAX_SEGMENTS = 4096


def jpeg_facts(data: bytes) -> JpegFacts:
    """The frame facts of a JPEG, from its markers up to the first SOS; ValueError if `data` is
    not a well-formed JPEG up to there."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG: no SOI marker")
    pos = 2
    frame: tuple[int, int, int, int, int, list[tuple[int, int, int]]] | None = None
    adobe: int | None = None
    jfif = False
    for _ in range(_MAX_SEGMENTS):
        if pos >= len(data) or data[pos] != 0xFF:
            raise ValueError(f"not a JPEG: expected a marker at byte {pos}")
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes before the marker code
            pos += 1
        if pos >= len(data):
            raise ValueError("not a JPEG: ends inside a marker")
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD8, 0xD9, 0x00):
            raise ValueError(f"not a JPEG: unexpected marker 0xFF{marker:02X} before the scan")
        if pos + 2 > len(data):
            raise ValueError("not a JPEG: ends inside a segment length")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2 or pos + length > len(data):
            raise ValueError(f"not a JPEG: segment 0xFF{marker:02X} has a bad length {length}")
        body = data[pos + 2 : pos + length]
        pos += length
        if marker == 0xDA:  # SOS: the entropy-coded data follows
            if frame is None:
                raise ValueError("not a JPEG: scan before the frame header")
            return _facts(frame, adobe, jfif)
        if marker == 0xE0 and body[:5] == b"JFIF\x00":
            jfif = True
        elif marker == 0xEE and body[:5] == b"Adobe" and len(body) >= 12:
            adobe = body[11]
        elif marker in _SOF_PROCESS and frame is None:
            frame = _frame_header(marker, body)
    raise ValueError(f"not a JPEG: no scan within {_MAX_SEGMENTS} segments")


def _frame_header(
    marker: int, body: bytes
) -> tuple[int, int, int, int, int, list[tuple[int, int, int]]]:
    if len(body) < 6:
        raise ValueError("not a JPEG: frame header too short")
    precision, height, width, count = struct.unpack(">BHHB", body[:6])
    if count == 0 or len(body) < 6 + 3 * count:
        raise ValueError("not a JPEG: frame header with a bad component count")
    components = [
        (body[6 + 3 * i], body[7 + 3 * i] >> 4, body[7 + 3 * i] & 0x0F) for i in range(count)
    ]
    if any(h == 0 or v == 0 for _, h, v in components):
        raise ValueError("not a JPEG: a component has a sampling factor of 0")
    return marker, precision, height, width, count, components


def _facts(
    frame: tuple[int, int, int, int, int, list[tuple[int, int, int]]],
    adobe: int | None,
    jfif: bool,
) -> JpegFacts:
    marker, precision, height, width, count, components = frame
    return JpegFacts(
        width=width,
        height=height,
        components=count,
        precision=precision,
        process=_SOF_PROCESS[marker],
        subsampling=_subsampling([(h, v) for _, h, v in components]),
        adobe_transform=adobe,
        has_jfif=jfif,
    )


def _subsampling(factors: list[tuple[int, int]]) -> str:
    if len(factors) == 1:
        return "4:0:0"
    if all(f == factors[0] for f in factors):
        return "4:4:4"
    if len(factors) == 3 and factors[1] == factors[2]:
        (h0, v0), (h1, v1) = factors[0], factors[1]
        if h0 % h1 == 0 and v0 % v1 == 0:
            named = {(2, 1): "4:2:2", (2, 2): "4:2:0", (1, 2): "4:4:0", (4, 1): "4:1:1"}
            key = (h0 // h1, v0 // v1)
            if key in named:
                return named[key]
    return ",".join(f"{h}x{v}" for h, v in factors)


def _photometric(facts: JpegFacts) -> str:
    """Photometric Interpretation of a baseline JPEG in a VL image: MONOCHROME2 for one
    component, YBR_FULL_422 for three (YCbCr), whether or not the chrominance is subsampled.

    PS3.5 8.2.1 (with CP-1654) would call unsubsampled YCbCr YBR_FULL and untransformed
    components RGB, but the VL Image module (PS3.3 C.8.12.1.1.1) restricts a VL image in a
    lossy transfer syntax to "YBR_FULL_422 for other lossy compressed transfer syntaxes", and
    dciodvfy rejects both YBR_FULL and RGB there. For JPEG the bitstream's own sampling factors
    govern decoding (PS3.5 8.2.1), so a 4:4:4 JPEG labelled YBR_FULL_422 is shown correctly
    (the tests check this). An RGB JPEG (Adobe transform 0) cannot be labelled YCbCr without
    being shown in the wrong colours, so it is not wrappable: re-encode it.
    """
    return "MONOCHROME2" if facts.components == 1 else "YBR_FULL_422"


def why_not_wrappable(facts: JpegFacts) -> str | None:
    """Why a JPEG with these facts cannot go into a VL Photographic Image as it is, or None
    when it can. The upload pipeline uses it to decide whether to re-encode first."""
    if facts.process != "baseline":
        return (
            f"the JPEG is {facts.process}, not baseline; JPEG Baseline (1.2.840.10008.1.2.4.50) "
            "carries only baseline sequential JPEG"
        )
    if facts.precision != 8:
        return f"the JPEG has {facts.precision}-bit samples, not 8"
    if facts.components not in (1, 3):
        return f"the JPEG has {facts.components} components (only 1 or 3 are taken)"
    if facts.components == 3 and facts.adobe_transform is not None and facts.adobe_transform != 1:
        return (
            f"the JPEG's colour components are not YCbCr (Adobe transform "
            f"{facts.adobe_transform}); a VL image in JPEG Baseline must be YBR_FULL_422"
        )
    if facts.height == 0 or facts.width == 0:
        return "the JPEG's frame header does not give its size (DNL marker)"
    return None


def wrap_jpeg(
    jpeg: bytes, patient: PhotoPatient, context: PhotoContext, *, recompressed: bool
) -> bytes:
    """A VL Photographic Image (Part 10 bytes) holding `jpeg` unchanged in JPEG Baseline.

    `recompressed` says the JPEG was made by the archive from the upload (HEIC, PNG, TIFF, or to
    apply the EXIF orientation); the wrapper then says so in Derivation Description.

    The category goes where every DICOM viewer shows it per image: at the start of Image
    Comments, as its Bokmål label followed by the uploader's note ("Før behandling: …"). Not in
    Series Description or Protocol Name, which are series attributes while photos of every
    category taken the same day share one series; not as Image Type value 3, whose values the
    VL Photographic Image IOD defines (dciodvfy rejects others); and the Acquisition Context
    Sequence has no standard concept for it. The Anatomic Region Sequence follows from the
    category too (see `_anatomic_region`).

    Raises NotWrappable unless the JPEG is baseline (process 1), 8-bit, greyscale or YCbCr
    (see `why_not_wrappable`).
    """
    try:
        facts = jpeg_facts(jpeg)
    except ValueError as exc:
        raise NotWrappable(str(exc)) from exc
    reason = why_not_wrappable(facts)
    if reason is not None:
        raise NotWrappable(reason)
    if len(jpeg) > _MAX_FRAGMENT:
        raise NotWrappable("the JPEG is too large for one DICOM fragment")
    photometric = _photometric(facts)

    ds = _common(patient, context, VL_PHOTOGRAPHIC_IMAGE, series_number=1)
    ds.ImageType = ["DERIVED" if recompressed else "ORIGINAL", "PRIMARY"]
    if recompressed:
        ds.DerivationDescription = (
            "Omkodet til JPEG baseline av arkivet fra opplastet fil "
            "(format eller orientering); originalen er lagret som foto"
        )
    ds.SamplesPerPixel = facts.components
    ds.PhotometricInterpretation = photometric
    if facts.components > 1:
        ds.PlanarConfiguration = 0
    ds.Rows = facts.height
    ds.Columns = facts.width
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ratio = facts.width * facts.height * facts.components / len(jpeg)
    ds.LossyImageCompressionRatio = f"{ratio:.2f}"[:16]
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    return _part10(ds, JPEGBaseline8Bit, jpeg)


# -- video -----------------------------------------------------------------------------------------

# H.264 profiles whose bitstreams a High Profile decoder decodes (ITU-T H.264 A.2: Constrained
# Baseline and Main are subsets of High; "Progressive/Constrained High" restrict High). Plain
# Baseline and Extended allow tools (FMO, ASO, data partitioning) that High lacks.
_AVC_HIGH_COMPATIBLE = {
    "constrained baseline",
    "main",
    "high",
    "progressive high",
    "constrained high",
}


@dataclass(frozen=True)
class _VideoSyntax:
    uid: UID
    name: str
    section: str
    max_level: int
    """As ffprobe reports H.264 levels: 41 means 4.1."""
    max_frame_macroblocks: int
    """MaxFS of that level (H.264 Table A-1), or MaxLumaPs / 256 for HEVC (H.265 Table A.8)."""
    max_macroblock_rate: int
    """MaxMBPS of that level (H.264 Table A-1), or MaxLumaSr / 256 for HEVC."""
    max_long_edge: int
    max_short_edge: int
    max_frame_rate: int


_AVC_41 = _VideoSyntax(
    MPEG4HP41, "MPEG-4 AVC/H.264 High Profile / Level 4.1", "PS3.5 8.2.7",
    41, 8192, 245_760, 1920, 1080, 60,
)  # fmt: skip
_AVC_42 = _VideoSyntax(
    MPEG4HP422D, "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video", "PS3.5 8.2.8",
    42, 8704, 522_240, 1920, 1080, 60,
)  # fmt: skip
_HEVC_51 = _VideoSyntax(
    HEVCMP51, "HEVC/H.265 Main Profile / Level 5.1", "PS3.5 8.2.10",
    51, 8_912_896 // 256, 534_773_760 // 256, 4096, 2176, 60,
)  # fmt: skip


def choose_video_syntax(video: VideoProbe) -> UID:
    """The transfer syntax whose constraints the video meets; NotWrappable naming the one that
    fails when none does.

    Checked: the MP4 container; the profile (H.264 High or a subset of it, HEVC Main); the
    level the stream declares against the syntax's level; the coded frame size against the
    HD (1920×1080, either orientation) or 4K (4096×2176) bound of the syntax; the frame rate
    (at most 60/s); and frame size and macroblock rate against the level limits of H.264
    Table A-1 / H.265 Table A.8, so a stream that declares too low a level is still placed
    where it fits. The higher H.264 syntax (Level 4.2, 2D) is tried only when Level 4.1 fails.
    """
    return _choose(video).uid


def _choose(video: VideoProbe) -> _VideoSyntax:
    if video.container != "mp4":
        raise NotWrappable(
            f"the video is in a {video.container or 'unknown'} container; DICOM takes H.264 and "
            "HEVC in MP4 (ISO/IEC 14496-14) or MPEG-2 TS only (PS3.5 8.2.8): remux it to MP4"
        )
    codec = video.codec.lower()
    profile = video.profile.strip().lower()
    if codec == "h264":
        if profile not in _AVC_HIGH_COMPATIBLE:
            raise NotWrappable(
                f"H.264 profile {video.profile or 'unknown'} is not within High Profile "
                "(PS3.5 8.2.7/8.2.8 take High Profile 8-bit 4:2:0 only)"
            )
        level = video.level
        candidates = [_AVC_41, _AVC_42]
    elif codec == "hevc":
        if profile != "main":
            raise NotWrappable(
                f"HEVC profile {video.profile or 'unknown'} is not Main: Main 10 has 10-bit "
                "samples, and the VL Image module allows 8-bit samples only (PS3.3 C.8.12.1)"
            )
        level = _hevc_level(video.level)
        candidates = [_HEVC_51]
    else:
        raise NotWrappable(
            f"the video codec {video.codec or 'unknown'} has no DICOM transfer syntax "
            "(H.264 and HEVC are taken)"
        )
    if level <= 0:
        raise NotWrappable("the video's level is unknown, so no transfer syntax can be chosen")
    failures = []
    for syntax in candidates:
        failure = _fails(syntax, video, level)
        if failure is None:
            return syntax
        failures.append(f"{syntax.name} ({syntax.section}): {failure}")
    raise NotWrappable("; ".join(failures))


def _hevc_level(level: int) -> int:
    """HEVC level in the "41 means 4.1" scale: ffprobe may report general_level_idc, which is
    30 times the level (153 for 5.1)."""
    return level // 3 if level > 62 else level


def _fails(syntax: _VideoSyntax, video: VideoProbe, level: int) -> str | None:
    width, height, rate = video.width, video.height, video.frame_rate
    if level > syntax.max_level:
        return f"level {level / 10:.1f} is above {syntax.max_level / 10:.1f}"
    if width <= 0 or height <= 0:
        return "the frame size is unknown"
    if max(width, height) > syntax.max_long_edge or min(width, height) > syntax.max_short_edge:
        return f"{width}×{height} is larger than {syntax.max_long_edge}×{syntax.max_short_edge}"
    macroblocks = ceil(width / 16) * ceil(height / 16)
    if macroblocks > syntax.max_frame_macroblocks:
        return f"{width}×{height} is more than the level allows per frame"
    if rate <= 0:
        return "the frame rate is unknown"
    if rate > syntax.max_frame_rate:
        return f"{float(rate):.2f} frames/s is above {syntax.max_frame_rate}"
    if macroblocks * rate > syntax.max_macroblock_rate:
        return f"{width}×{height} at {float(rate):.2f} frames/s is more than the level allows"
    return None


def wrap_video(
    data: bytes, video: VideoProbe, patient: PhotoPatient, context: PhotoContext
) -> bytes:
    """A Video Photographic Image (Part 10 bytes) holding the MP4 file `data` unchanged.

    PS3.5 8.2.7–8.2.9 (H.264) and 8.2.10 (HEVC) make the container format of the encapsulated
    video bit stream "MPEG-2 Transport Stream ... or MPEG-4, a.k.a. MP4 container (ISO/IEC
    14496-12 and 14496-14)", so the fragment holds the whole MP4 file as uploaded, not an
    elementary stream; with the non-fragmentable transfer syntaxes of PS3.5 A.4 the whole
    stream is one fragment after an empty Basic Offset Table, padded with one NUL byte to even
    length. The transfer syntax is the first whose constraints the stream meets (see
    `choose_video_syntax`): H.264 High Profile ≤ 4.1 → 1.2.840.10008.1.2.4.102, ≤ 4.2 → .104;
    HEVC Main ≤ 5.1 → .107.

    Rows and Columns are the coded frame size; a display rotation stays in the MP4's track
    header, inside the fragment. Audio, when present, is declared in the Multiplexed Audio
    Channels Description Code Sequence (Cine module).
    """
    syntax = _choose(video)
    if len(data) > _MAX_FRAGMENT:
        raise NotWrappable("the video is larger than one DICOM fragment can hold (4 GiB)")
    fps = video.frame_rate
    frames = video.frames or round(video.duration_seconds * fps)
    if frames <= 0:
        raise NotWrappable("the video's number of frames is unknown")

    ds = _common(patient, context, VIDEO_PHOTOGRAPHIC_IMAGE, series_number=2)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.Rows = video.height
    ds.Columns = video.width
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = _ds(float(1000 / fps))
    ds.CineRate = round(fps)
    ds.RecommendedDisplayFrameRate = round(fps)
    ds.ActualFrameDuration = round(float(1000 / fps))
    if video.has_audio:
        mode = "MONO" if mp4_audio_channels(data) == 1 else "STEREO"
        ds.MultiplexedAudioChannelsDescriptionCodeSequence = [_audio_channel(mode)]
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_14496_10" if syntax is not _HEVC_51 else "ISO_23008_2"
    return _part10(ds, syntax.uid, data)


def _audio_channel(mode: str) -> Dataset:
    item = Dataset()
    item.ChannelIdentificationCode = "1"
    item.ChannelMode = mode
    item.ChannelSourceSequence = [code_item(*_AMBIENT_ROOM)]
    return item


_MAX_BOXES = 10_000


def mp4_audio_channels(data: bytes) -> int | None:
    """The channel count of the first sound track of an MP4 file, or None when there is none
    or it cannot be read. The Cine module's Channel Mode needs it and `VideoProbe` does not
    carry it. For AAC ("mp4a") the AudioSampleEntry's channelcount is a fixed 2 (ISO/IEC
    14496-14), so the count comes from the AudioSpecificConfig in its "esds" box."""
    entry = _sound_sample_entry(data)
    if entry is None:
        return None
    kind, body = entry
    if kind == b"mp4a":
        channels = _esds_channels(body[28:])
        if channels is not None:
            return channels
    if len(body) >= 20:
        (count,) = struct.unpack(">H", body[16:18])
        return count or None
    return None


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """The boxes between `start` and `end` as (type, body start, box end)."""
    found: list[tuple[bytes, int, int]] = []
    pos = start
    while pos + 8 <= end and len(found) < _MAX_BOXES:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1 and pos + 16 <= end:
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            break
        found.append((kind, pos + header, pos + size))
        pos += size
    return found


def _sound_sample_entry(data: bytes) -> tuple[bytes, bytes] | None:
    """The first sample entry (type, bytes after its 8-byte header) of the first track whose
    handler is "soun"."""
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind != b"moov":
            continue
        for track_kind, t_start, t_end in _boxes(data, start, end):
            if track_kind != b"trak":
                continue
            entry = _track_sound_entry(data, t_start, t_end)
            if entry is not None:
                return entry
    return None


def _track_sound_entry(data: bytes, start: int, end: int) -> tuple[bytes, bytes] | None:
    for kind, m_start, m_end in _boxes(data, start, end):
        if kind != b"mdia":
            continue
        media = _boxes(data, m_start, m_end)
        handlers = [data[b + 8 : b + 12] for k, b, e in media if k == b"hdlr" and e - b >= 12]
        if handlers != [b"soun"]:
            return None
        path = [b"minf", b"stbl", b"stsd"]
        boxes = media
        for wanted in path:
            inner = [(b, e) for k, b, e in boxes if k == wanted]
            if not inner:
                return None
            b, e = inner[0]
            boxes = _boxes(data, b + 8, e) if wanted == b"stsd" else _boxes(data, b, e)
        if boxes:
            kind, b, e = boxes[0]
            return kind, data[b:e]
    return None


def _esds_channels(children: bytes) -> int | None:
    """channelConfiguration of the AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) inside the
    "esds" box among `children` (the boxes after an AudioSampleEntry's fixed fields)."""
    for kind, start, end in _boxes(children, 0, len(children)):
        if kind != b"esds":
            continue
        pos = start + 4  # version and flags
        tag, pos, size = _descriptor(children, pos, end)
        if tag != 0x03:  # ES_Descriptor
            return None
        flags = children[pos + 2] if pos + 3 <= end else 0
        pos += 3 + (2 if flags & 0x80 else 0)
        if flags & 0x40 and pos < end:
            pos += 1 + children[pos]
        pos += 2 if flags & 0x20 else 0
        tag, pos, size = _descriptor(children, pos, end)
        if tag != 0x04:  # DecoderConfigDescriptor
            return None
        tag, pos, size = _descriptor(children, pos + 13, end)
        if tag != 0x05 or size < 2 or pos + 2 > end:  # DecoderSpecificInfo
            return None
        bits = int.from_bytes(children[pos : min(pos + 5, end)], "big")
        width = 8 * (min(pos + 5, end) - pos)
        offset = 5
        if bits >> (width - 5) == 31:  # escape: the object type takes 6 more bits
            offset += 6
        frequency_index = (bits >> (width - offset - 4)) & 0x0F
        offset += 4 + (24 if frequency_index == 15 else 0)
        if offset + 4 > width:
            return None
        channels = (bits >> (width - offset - 4)) & 0x0F
        return channels if 1 <= channels <= 7 else None
    return None


def _descriptor(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """An MPEG-4 descriptor's (tag, body start, body size) at `pos` (ISO/IEC 14496-1 8.3.3)."""
    if pos >= end:
        return -1, end, 0
    tag, pos, size = data[pos], pos + 1, 0
    for _ in range(4):
        if pos >= end:
            return -1, end, 0
        byte = data[pos]
        pos += 1
        size = (size << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    return tag, pos, size


# -- shared ----------------------------------------------------------------------------------------


def _common(
    patient: PhotoPatient, context: PhotoContext, sop_class: UID, *, series_number: int
) -> Dataset:
    if context.category not in CATEGORY_LABELS:
        raise ValueError(f"unknown photo category {context.category!r}")
    taken = context.taken_at
    date, time = taken.strftime("%Y%m%d"), taken.strftime("%H%M%S")
    ds = Dataset()
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = context.sop_uid
    # Patient
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    # General Study: the study groups one day's photos, so its date is the day taken; its time
    # is left empty (Type 2) rather than differ between the instances of one study.
    ds.StudyInstanceUID = context.study_uid
    ds.StudyDate = date
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = f"FOTO{date}"
    ds.AccessionNumber = ""
    if context.study_description:
        ds.StudyDescription = context.study_description
    # General Series
    ds.Modality = "XC"
    ds.SeriesInstanceUID = context.series_uid
    ds.SeriesNumber = series_number
    if context.series_description:
        ds.SeriesDescription = context.series_description
    ds.OperatorsName = context.operator
    # General Equipment
    ds.Manufacturer = "arkiv"
    ds.InstitutionName = context.county
    # General Image and General Acquisition
    ds.InstanceNumber = context.instance_number
    ds.PatientOrientation = ""
    # Unpaired (mouth, head): answers General Series' Laterality condition (PS3.3 C.7.3.1).
    ds.ImageLaterality = "U"
    ds.ContentDate = date
    ds.ContentTime = time
    ds.AcquisitionDate = date
    ds.AcquisitionTime = time
    ds.AcquisitionDateTime = taken.strftime("%Y%m%d%H%M%S")
    label = CATEGORY_LABELS[context.category]
    note = context.note.strip()
    ds.ImageComments = f"{label}: {note}" if note else label
    if context.category in ("extraoral", "orthodontic"):
        ds.RecognizableVisualFeatures = "YES"  # faces: the photo identifies the patient
    # Acquisition Context: nothing coded is known about the acquisition (Type 2, empty).
    ds.AcquisitionContextSequence = Sequence()
    # VL Image: where the photo was taken, and which teeth it shows.
    ds.AnatomicRegionSequence = [code_item(*_anatomic_region(context))]
    if context.teeth:
        ds.PrimaryAnatomicStructureSequence = [tooth_item(n) for n in sorted(set(context.teeth))]
    return ds


def _anatomic_region(context: PhotoContext) -> tuple[str, str, str]:
    """Mouth for intra-oral photos, head and neck for extra-oral ones; for the other categories
    (before/after treatment, orthodontic, photo of a radiograph) the mouth when teeth are
    named, otherwise head and neck, which contains it."""
    if context.category == "intraoral":
        return _MOUTH
    if context.category == "extraoral":
        return _HEAD_AND_NECK
    return _MOUTH if context.teeth else _HEAD_AND_NECK


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """One Code Sequence Macro item."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def tooth_item(number: int) -> Dataset:
    """A Primary Anatomic Structure Sequence item for FDI tooth `number` (CID 4018/4019)."""
    code = tooth_code(number)
    # Without Context Identifier: naming CID 4018/4019 would also need Context Group Version,
    # a date that pydicom's generated tables do not carry.
    return code_item(code.value, code.scheme_designator, code.meaning)


def _ds(value: float) -> str:
    """A decimal string (DS, at most 16 characters) for `value`."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text[:16]


def _part10(ds: Dataset, syntax: UID, fragment: bytes) -> bytes:
    """The Part 10 file: `ds` in Explicit VR Little Endian, then Pixel Data encapsulated as an
    empty Basic Offset Table and one fragment holding `fragment` (PS3.5 A.4), padded with one
    NUL byte to even length. Written by hand so that a large video is copied only once."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    buffer = BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=True, enforce_file_format=True)
    pad = b"\x00" if len(fragment) % 2 else b""
    return b"".join(
        (
            buffer.getvalue(),
            struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFF_FFFF),
            struct.pack("<HHI", 0xFFFE, 0xE000, 0),
            struct.pack("<HHI", 0xFFFE, 0xE000, len(fragment) + len(pad)),
            fragment,
            pad,
            struct.pack("<HHI", 0xFFFE, 0xE0DD, 0),
        )
    )
