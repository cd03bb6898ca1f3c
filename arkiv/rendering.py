"""Turn stored DICOM images into JPEG or PNG for browsers.

DICOMweb "rendered" and "thumbnail" resources and the browser viewer all need
an 8-bit picture, whereas the archive stores whatever the modality sent:
12- or 16-bit intra-oral and panoramic X-rays, signed CBCT volumes, RGB or
YCbCr photographs, palette ultrasound, in any transfer syntax.  This module
is the one place where those are turned into something a browser can show.

Rendering runs on files uploaded by outside systems, so every declared size
is checked against the bytes actually stored and against fixed limits before
anything is decoded: a forged header must produce a clear refusal, never a
multi-gigabyte allocation.  Only the requested frame is read and decoded, so
scrolling through a large CBCT volume in the viewer costs one slice per
request rather than the whole volume.
"""

import os
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from io import BytesIO
from typing import Any, BinaryIO, Final, cast

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi
from pydicom.pixels.utils import pixel_array
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

__all__ = [
    "MAX_DECODED_BYTES",
    "MAX_PIXELS",
    "CorruptImage",
    "FrameOutOfRange",
    "ImageTooLarge",
    "NotAnImage",
    "OutputFormat",
    "RenderError",
    "RenderRequest",
    "UnsupportedImage",
    "Window",
    "frame_count",
    "render",
    "render_dataset",
]

MAX_PIXELS: int = 2**28
"""Most samples (Rows × Columns × Samples per Pixel) one frame may declare.

Far above any dental sensor, panoramic, cephalometric or camera image, yet
low enough that a forged header cannot make us allocate without bound.  Read
at call time, so a deployment (or a test) may lower it.
"""

MAX_DECODED_BYTES: int = 2**30
"""Most bytes the decoded frame of one request may occupy."""

Pixels = npt.NDArray[Any]
Rgb8 = npt.NDArray[np.uint8]

_PIXEL_DATA: Final = 0x7FE00010
_FLOAT_PIXEL_DATA: Final = (0x7FE00008, 0x7FE00009)
# Elements larger than this stay on disk until needed, so reading the header
# of a 500 MB volume costs kilobytes.
_DEFER_SIZE: Final = 64 * 1024
# Non-seekable uploads are spooled; small ones stay in memory.
_SPOOL_IN_MEMORY: Final = 16 * 1024 * 1024

_GRAYSCALE: Final = frozenset({"MONOCHROME1", "MONOCHROME2"})
_PALETTE: Final = "PALETTE COLOR"
# YBR_FULL(_422) are converted to RGB by pydicom; YBR_ICT/RCT by the JPEG 2000
# decoder itself.  Partial-range YBR only occurs with MPEG, which we cannot decode.
_COLOUR: Final = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"})

# Attributes that grayscale transforms read; enhanced multi-frame objects
# move some of them into functional groups.
_PIXEL_VALUE_KEYWORDS: Final = (
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "ModalityLUTSequence",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
)
_FUNCTIONAL_GROUP_MACROS: Final = ("PixelValueTransformationSequence", "FrameVOILUTSequence")

# Start-of-frame markers of JPEG (ITU T.81) and JPEG-LS (SOF55).
_JPEG_SOF_MARKERS: Final = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
)
_J2K_SOC_SIZ: Final = b"\xff\x4f\xff\x51"
# A JP2 wrapper puts a few header boxes before the codestream.
_J2K_HEADER_SEARCH: Final = 4096


class RenderError(Exception):
    """Base of every refusal to render.

    The message is written for the person who asked for the image, so an API
    layer can pass it on unchanged; subclasses let it choose the status code.
    """


class NotAnImage(RenderError):
    """The object has no pixel data (structured report, encapsulated PDF, ...)."""


class UnsupportedImage(RenderError):
    """The pixels exist but cannot be shown: no decoder, or an unknown colour model."""


class ImageTooLarge(RenderError):
    """Declared dimensions exceed the limits or disagree with the stored bytes.

    Both cases are refused before decoding because both are how a malformed or
    hostile file makes a decoder allocate far more than the file contains.
    """


class FrameOutOfRange(RenderError):
    """The requested frame number does not exist in the object."""


class CorruptImage(RenderError):
    """The header looks sound but the data cannot be read or decoded."""


class OutputFormat(StrEnum):
    """Encodings a browser displays natively, named by their media type."""

    JPEG = "image/jpeg"
    PNG = "image/png"


@dataclass(frozen=True)
class Window:
    """A linear VOI window in modality units (PS3.3 C.11.2.1.2).

    A width below 1 has no meaning in the standard's formula, so it is
    rejected here rather than producing a division by zero later.
    """

    center: float
    width: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.center) and np.isfinite(self.width)) or self.width < 1:
            raise ValueError(
                f"A window needs a finite center and a width of at least 1, "
                f"got center={self.center}, width={self.width}"
            )


@dataclass(frozen=True)
class RenderRequest:
    """What the caller wants to see; defaults give a full-size JPEG of frame 1.

    `frame` is 1-based as in DICOMweb and is checked against the object at
    render time (FrameOutOfRange).  `window` of None means the dataset's own
    window, else the full range of the frame.  `max_size` fits the picture
    inside a square of that many pixels, `viewport` (width, height) inside
    that rectangle; neither ever enlarges it.
    """

    frame: int = 1
    window: Window | None = None
    max_size: int | None = None
    viewport: tuple[int, int] | None = None
    output: OutputFormat = OutputFormat.JPEG
    quality: int = 90
    invert: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ValueError(f"JPEG quality must be between 1 and 100, got {self.quality}")
        if self.max_size is not None and self.max_size < 1:
            raise ValueError(f"max_size must be at least 1 pixel, got {self.max_size}")
        if self.viewport is not None and min(self.viewport) < 1:
            raise ValueError(f"viewport sides must be at least 1 pixel, got {self.viewport}")


@dataclass(frozen=True)
class _Geometry:
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int

    @property
    def samples_per_frame(self) -> int:
        return self.rows * self.columns * self.samples_per_pixel

    @property
    def decoded_frame_bytes(self) -> int:
        # 1-bit data is unpacked to one byte per sample.
        return self.samples_per_frame * max(1, self.bits_allocated // 8)


# --------------------------------------------------------------------------- public API


def render(source: BinaryIO | str | os.PathLike[str], request: RenderRequest) -> bytes:
    """Render one frame of a DICOM Part 10 file (path or stream read from its start).

    Unlike `render_dataset`, the pixel data stays on disk and only the
    requested frame is read, which keeps viewer scrolling through large
    multi-frame volumes cheap.
    """
    with _seekable(source) as stream:
        ds = _read_dataset(stream)
        return _render(ds, request, _pixel_stream(ds, stream))


def render_dataset(ds: Dataset, request: RenderRequest) -> bytes:
    """Render one frame of an already-read dataset (which needs its file meta)."""
    return _render(ds, request, None)


def frame_count(ds: Dataset) -> int:
    """Number of frames a viewer can ask for: 0 for non-images, else at least 1.

    A missing or zero Number of Frames means a single frame, as pydicom and
    most viewers read it; a value that is not a number makes the object
    unreadable and raises CorruptImage.
    """
    if not _has_pixels(ds):
        return 0
    value = ds.get("NumberOfFrames")
    if value is None or value == "":
        return 1
    try:
        return max(int(value), 1)
    except (TypeError, ValueError):
        raise CorruptImage(f"Number of Frames {value!r} is not a whole number") from None


# --------------------------------------------------------------------------- pipeline


def _render(ds: Dataset, request: RenderRequest, stream: BinaryIO | None) -> bytes:
    index = _check_renderable(ds, request.frame, stream)
    frame = _decode_frame(ds, index, stream)
    pixels = _display_pixels(frame, ds, index, request)
    image = _fit(Image.fromarray(np.ascontiguousarray(pixels)), request)
    return _encode(image, request, _icc_profile(ds))


def _check_renderable(ds: Dataset, frame: int, stream: BinaryIO | None) -> int:
    """Refuse everything we can refuse from the header; return the 0-based frame index.

    The order matters: cheap header checks first, then the size limits, and
    only then anything that reads pixel data.
    """
    _check_has_pixels(ds)
    syntax = _transfer_syntax(ds)
    _check_decoder(syntax)
    geometry = _geometry(ds)
    _check_photometric(_photometric(ds), geometry)
    _check_limits(geometry)
    index = _frame_index(ds, frame)
    if syntax.is_encapsulated:
        _check_codestream(_encoded_frame(ds, index, stream), geometry)
    else:
        _check_native_length(ds, geometry, stream)
    return index


def _decode_frame(ds: Dataset, index: int, stream: BinaryIO | None) -> Pixels:
    """Decode just one frame; colour is returned as RGB, bits beyond Bits Stored cleared."""
    try:
        if stream is not None:
            return pixel_array(stream, index=index)
        return pixel_array(ds, index=index)
    except MemoryError:
        raise
    except Exception as exc:  # pydicom and its plugins raise many unrelated types
        raise CorruptImage(
            f"The pixel data could not be decoded ({_transfer_syntax(ds).name}): {exc}"
        ) from exc


def _display_pixels(frame: Pixels, ds: Dataset, index: int, request: RenderRequest) -> Rgb8:
    photometric = _photometric(ds)
    if photometric in _GRAYSCALE:
        attributes = _pixel_value_attributes(ds, index)
        pixels = _grayscale_to_8bit(frame, attributes, request.window)
        if photometric == "MONOCHROME1":
            # MONOCHROME1 stores "more is darker"; windows still work on the
            # stored values, only the display is reversed.
            pixels = _inverted(pixels)
    elif photometric == _PALETTE:
        pixels = _palette_to_rgb(frame, ds)
    else:
        pixels = _colour_to_8bit(frame, ds)
    return _inverted(pixels) if request.invert else pixels


# --------------------------------------------------------------------------- reading


@contextmanager
def _seekable(source: BinaryIO | str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a seekable stream positioned at the start of the file.

    Deferred reads and per-frame decoding seek around the file, so a pipe or
    socket is first spooled (to disk once it is large).
    """
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as file:
            yield file
    elif source.seekable():
        source.seek(0)
        yield source
    else:
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
            shutil.copyfileobj(source, spool)
            spool.seek(0)
            yield cast(BinaryIO, spool)


def _read_dataset(stream: BinaryIO) -> Dataset:
    try:
        return dcmread(stream, defer_size=_DEFER_SIZE)
    except (InvalidDicomError, EOFError, struct.error) as exc:
        raise CorruptImage(f"The file is not a readable DICOM Part 10 file: {exc}") from exc


def _pixel_stream(ds: Dataset, stream: BinaryIO) -> BinaryIO | None:
    """The stream to decode from, or None when the dataset must be used instead.

    Decoding from the file reads one frame; decoding from the dataset loads the
    whole Pixel Data.  The file route re-parses the header strictly by the
    transfer syntax, so it is only taken when that is how the file is really
    encoded; deflated files are compressed as a whole and never qualify.
    """
    syntax = _transfer_syntax_or_none(ds)
    element = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if (
        syntax is None
        or syntax == DeflatedExplicitVRLittleEndian
        or not isinstance(element, RawDataElement)
        or element.is_implicit_VR != syntax.is_implicit_VR
        or element.is_little_endian != syntax.is_little_endian
    ):
        return None
    return stream


def _deferred_pixel_data(ds: Dataset) -> RawDataElement | None:
    """The Pixel Data element if its value is still on disk, without reading it."""
    element = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if isinstance(element, RawDataElement) and element.value is None:
        return element
    return None


def _stored_pixel_bytes(ds: Dataset, stream: BinaryIO | None) -> int:
    """Bytes of native Pixel Data really present, which a truncated file makes
    smaller than the element length written in its header."""
    element = _deferred_pixel_data(ds)
    if stream is None or element is None:
        return len(ds.PixelData)
    end_of_file = stream.seek(0, os.SEEK_END)
    return max(0, min(element.length, end_of_file - element.value_tell))


def _encoded_frame(ds: Dataset, index: int, stream: BinaryIO | None) -> bytes:
    """The compressed bytes of one frame, read from disk when still deferred."""
    element = _deferred_pixel_data(ds)
    options: dict[str, Any] = {
        "number_of_frames": frame_count(ds),
        "extended_offsets": _extended_offsets(ds),
    }
    try:
        if stream is None or element is None:
            return get_frame(ds.PixelData, index, **options)
        stream.seek(element.value_tell)
        return get_frame(stream, index, **options)
    except Exception as exc:  # malformed item tags surface as several types
        raise CorruptImage(
            f"Frame {index + 1} could not be found in the pixel data: {exc}"
        ) from exc


def _extended_offsets(ds: Dataset) -> tuple[bytes, bytes] | None:
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        return (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    return None


# --------------------------------------------------------------------------- header checks


def _has_pixels(ds: Dataset) -> bool:
    return _PIXEL_DATA in ds or any(tag in ds for tag in _FLOAT_PIXEL_DATA)


def _check_has_pixels(ds: Dataset) -> None:
    if _PIXEL_DATA in ds:
        return
    if _has_pixels(ds):
        raise UnsupportedImage("Floating-point pixel data (parametric maps) cannot be rendered")
    sop_class = ds.get("SOPClassUID")
    kind = f"This {UID(sop_class).name} object" if sop_class else "This object"
    raise NotAnImage(f"{kind} has no Pixel Data, so there is no image to render")


def _transfer_syntax_or_none(ds: Dataset) -> UID | None:
    file_meta = getattr(ds, "file_meta", None)
    value = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    return UID(value) if value else None


def _transfer_syntax(ds: Dataset) -> UID:
    syntax = _transfer_syntax_or_none(ds)
    if syntax is None:
        raise UnsupportedImage(
            "The object has no Transfer Syntax UID, so its pixel data cannot be interpreted"
        )
    return syntax


def _check_decoder(syntax: UID) -> None:
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise UnsupportedImage(
            f"Images stored as {syntax.name} ({syntax}) cannot be decoded here"
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise UnsupportedImage(f"Decoding {syntax.name} needs a plugin that is missing: {missing}")


def _geometry(ds: Dataset) -> _Geometry:
    values: dict[str, int] = {}
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated"):
        value = ds.get(keyword, 1 if keyword == "SamplesPerPixel" else None)
        if not isinstance(value, int) or value < 1:
            raise CorruptImage(f"{keyword} is {value!r}; the image dimensions are unusable")
        values[keyword] = value
    bits = values["BitsAllocated"]
    if bits != 1 and (bits % 8 or bits > 64):
        raise UnsupportedImage(f"Bits Allocated of {bits} is not a supported sample size")
    return _Geometry(
        rows=values["Rows"],
        columns=values["Columns"],
        samples_per_pixel=values["SamplesPerPixel"],
        bits_allocated=bits,
    )


def _photometric(ds: Dataset) -> str:
    return str(ds.get("PhotometricInterpretation", "")).strip().upper()


def _check_photometric(photometric: str, geometry: _Geometry) -> None:
    if photometric in _GRAYSCALE or photometric == _PALETTE:
        expected_samples = 1
    elif photometric in _COLOUR:
        expected_samples = 3
    else:
        raise UnsupportedImage(
            f"Photometric Interpretation {photometric or '(missing)'} cannot be displayed"
        )
    if geometry.samples_per_pixel != expected_samples:
        raise UnsupportedImage(
            f"{photometric} needs {expected_samples} sample(s) per pixel, "
            f"the object declares {geometry.samples_per_pixel}"
        )


def _check_limits(geometry: _Geometry) -> None:
    """Bound a single frame, which is all one request ever decodes.

    The frame count is not limited here: only one frame is decoded, native
    data must be fully present on disk (`_check_native_length`), and a
    compressed frame is compared with its own codestream header.
    """
    dimensions = f"{geometry.columns}×{geometry.rows}×{geometry.samples_per_pixel}"
    if geometry.samples_per_frame > MAX_PIXELS:
        raise ImageTooLarge(
            f"The image declares {dimensions} = {geometry.samples_per_frame} samples per frame, "
            f"more than the limit of {MAX_PIXELS}; it is refused rather than decoded"
        )
    if geometry.decoded_frame_bytes > MAX_DECODED_BYTES:
        raise ImageTooLarge(
            f"One decoded frame of {dimensions} at {geometry.bits_allocated} bits would take "
            f"{geometry.decoded_frame_bytes} bytes, more than the limit of {MAX_DECODED_BYTES}"
        )


def _frame_index(ds: Dataset, frame: int) -> int:
    count = frame_count(ds)
    if not 1 <= frame <= count:
        raise FrameOutOfRange(
            f"Frame {frame} was requested but the image has {count} frame(s), numbered from 1"
        )
    return frame - 1


def _declared_native_bytes(ds: Dataset, geometry: _Geometry) -> int:
    samples = geometry.samples_per_frame * frame_count(ds)
    if geometry.bits_allocated == 1:
        return (samples + 7) // 8
    length = samples * (geometry.bits_allocated // 8)
    if _photometric(ds) == "YBR_FULL_422":
        # PS3.5 8.2.1: native 4:2:2 stores two chroma samples per two pixels.
        length = length // 3 * 2
    return length


def _check_native_length(ds: Dataset, geometry: _Geometry, stream: BinaryIO | None) -> None:
    declared = _declared_native_bytes(ds, geometry)
    stored = _stored_pixel_bytes(ds, stream)
    if stored < declared:
        raise ImageTooLarge(
            f"The image declares {declared} bytes of pixel data but only {stored} are stored; "
            "the file is truncated or its Rows, Columns or Number of Frames are wrong"
        )


def _check_codestream(encoded: bytes, geometry: _Geometry) -> None:
    """Refuse a compressed frame whose own header is bigger than the dataset says.

    Codecs allocate from the codestream header, not from DICOM Rows/Columns,
    so a small dataset can carry a 65535×65535 JPEG.
    """
    samples = _codestream_samples(encoded)
    if samples is not None and samples > geometry.samples_per_frame:
        raise ImageTooLarge(
            f"The compressed frame declares {samples} samples but the dataset only "
            f"{geometry.samples_per_frame}; it is refused rather than decoded"
        )


def _codestream_samples(encoded: bytes) -> int | None:
    """Samples declared by a JPEG, JPEG-LS or JPEG 2000 header; None if not one of those."""
    try:
        if encoded.startswith(b"\xff\xd8"):
            return _jpeg_samples(encoded)
        return _j2k_samples(encoded)
    except (struct.error, IndexError):
        return None


def _jpeg_samples(encoded: bytes) -> int | None:
    position = 2
    while position + 4 <= len(encoded):
        if encoded[position] != 0xFF:
            return None
        marker = encoded[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _JPEG_SOF_MARKERS:
            height, width = struct.unpack_from(">HH", encoded, position + 5)
            return int(height * width * encoded[position + 9])
        (length,) = struct.unpack_from(">H", encoded, position + 2)
        position += 2 + length
    return None


def _j2k_samples(encoded: bytes) -> int | None:
    start = encoded.find(_J2K_SOC_SIZ, 0, _J2K_HEADER_SEARCH)
    if start < 0:
        return None
    width, height, x_offset, y_offset = struct.unpack_from(">IIII", encoded, start + 8)
    (components,) = struct.unpack_from(">H", encoded, start + 40)
    return int(max(0, width - x_offset) * max(0, height - y_offset) * components)


# --------------------------------------------------------------------------- grayscale


def _pixel_value_attributes(ds: Dataset, index: int) -> Dataset:
    """The attributes that transform this frame's values.

    Enhanced multi-frame objects (enhanced CT, some CBCT exports) keep Rescale
    and Window in shared or per-frame functional groups, per-frame winning;
    classic objects have them at the top level and are returned unchanged.
    """
    items = [
        *_macro_items(ds.get("SharedFunctionalGroupsSequence"), 0),
        *_macro_items(ds.get("PerFrameFunctionalGroupsSequence"), index),
    ]
    if not items:
        return ds
    view = Dataset()
    if hasattr(ds, "file_meta"):
        view.file_meta = ds.file_meta  # LUT Data endianness comes from here
    for keyword in _PIXEL_VALUE_KEYWORDS:
        if keyword in ds:
            view[keyword] = ds[keyword]
    for item in items:
        for element in item:
            view[element.tag] = element
    return view


def _macro_items(groups: Sequence[Dataset] | None, index: int) -> list[Dataset]:
    if not groups or index >= len(groups):
        return []
    group = groups[index]
    return [group[k].value[0] for k in _FUNCTIONAL_GROUP_MACROS if k in group and group[k].value]


def _grayscale_to_8bit(frame: Pixels, attributes: Dataset, window: Window | None) -> Rgb8:
    """Modality LUT, then VOI: request window, dataset window, VOI LUT, full range."""
    values = apply_modality_lut(frame, attributes)
    chosen = window or _dataset_window(attributes)
    if chosen is None and attributes.get("VOILUTSequence"):
        return _apply_voi_lut(values, attributes)
    return _apply_window(values, chosen or _full_range_window(values))


def _dataset_window(attributes: Dataset) -> Window | None:
    """The first Window Center/Width pair, or None when absent or unusable."""
    center = _first_value(attributes.get("WindowCenter"))
    width = _first_value(attributes.get("WindowWidth"))
    try:
        return Window(center=float(center), width=float(width))
    except (TypeError, ValueError):
        return None


def _first_value(value: Any) -> Any:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return value[0] if len(value) else None
    return value


def _full_range_window(values: Pixels) -> Window:
    """A window whose formula maps the frame's minimum to 0 and maximum to 255."""
    low, high = float(values.min()), float(values.max())
    return Window(center=(low + high + 1) / 2, width=high - low + 1)


def _apply_window(values: Pixels, window: Window) -> Rgb8:
    """Linear VOI function of PS3.3 C.11.2.1.2.1 with an 8-bit output range.

    Clipping ((x - (c - 0.5)) / (w - 1) + 0.5) to [0, 1] is exactly the
    standard's three cases; a width of 1 is its degenerate threshold.
    """
    center, width = window.center, window.width
    if width == 1:
        return np.where(values > center - 0.5, 255, 0).astype(np.uint8)
    scaled = np.array(values, dtype=np.float64)  # private copy, modified in place
    scaled -= center - 0.5
    scaled /= width - 1
    scaled += 0.5
    np.clip(scaled, 0.0, 1.0, out=scaled)
    scaled *= 255.0
    return np.rint(scaled, out=scaled).astype(np.uint8)


def _apply_voi_lut(values: Pixels, attributes: Dataset) -> Rgb8:
    """Apply the first VOI LUT (common on "for presentation" DX), scaled to 8 bits."""
    if values.dtype.kind == "f":
        values = np.rint(values).astype(np.int64)  # LUTs are indexed by integers
    bits = int(attributes.VOILUTSequence[0].LUTDescriptor[2])
    mapped = apply_voi(values, attributes, index=0).astype(np.float64)
    mapped *= 255.0 / (2**bits - 1)
    return np.rint(np.clip(mapped, 0.0, 255.0)).astype(np.uint8)


# --------------------------------------------------------------------------- colour


def _colour_to_8bit(frame: Pixels, ds: Dataset) -> Rgb8:
    """Keep the most significant 8 of Bits Stored; pydicom already made it RGB."""
    if frame.dtype == np.uint8:
        return cast(Rgb8, frame)
    bits_stored = int(ds.get("BitsStored") or frame.dtype.itemsize * 8)
    shifted: Pixels = np.right_shift(frame, max(bits_stored - 8, 0))
    return np.clip(shifted, 0, 255).astype(np.uint8)


def _palette_to_rgb(frame: Pixels, ds: Dataset) -> Rgb8:
    try:
        rgb = apply_color_lut(frame, ds)
    except Exception as exc:  # missing, malformed or unsupported LUT
        raise UnsupportedImage(f"The palette colour lookup table cannot be used: {exc}") from exc
    rgb = rgb[..., :3]  # drop an alpha palette, browsers get opaque images
    if rgb.dtype == np.uint8 or rgb.max() <= 255:
        # Some writers declare 16-bit entries but fill only 8 bits; scaling
        # those down would render an almost black image.
        return rgb.astype(np.uint8)
    return (rgb >> 8).astype(np.uint8)


def _icc_profile(ds: Dataset) -> bytes | None:
    """Colour photographs (shade matching!) keep their profile for the browser."""
    if _photometric(ds) in _GRAYSCALE:
        return None
    profile = ds.get("ICCProfile")
    return bytes(profile) if profile else None


# --------------------------------------------------------------------------- output


def _inverted(pixels: Rgb8) -> Rgb8:
    return np.subtract(255, pixels, dtype=np.uint8)


def _fit(image: Image.Image, request: RenderRequest) -> Image.Image:
    """Shrink to fit the square and the viewport asked for; never enlarge (the browser can)."""
    width, height = image.size
    scale = 1.0
    if request.max_size is not None:
        scale = min(scale, request.max_size / max(width, height))
    if request.viewport is not None:
        scale = min(scale, request.viewport[0] / width, request.viewport[1] / height)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _encode(image: Image.Image, request: RenderRequest, icc_profile: bytes | None) -> bytes:
    """Encode for the browser.

    JPEG keeps full chroma resolution (4:4:4): the usual 4:2:0 smears thin
    coloured annotations burned into secondary captures and shifts the tooth
    shades that clinical photographs are taken to record.
    """
    buffer = BytesIO()
    options: dict[str, Any] = {"icc_profile": icc_profile} if icc_profile else {}
    if request.output is OutputFormat.JPEG:
        image.save(buffer, format="JPEG", quality=request.quality, subsampling=0, **options)
    else:
        image.save(buffer, format="PNG", **options)
    return buffer.getvalue()
