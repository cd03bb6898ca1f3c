"""Frames and bulk data of a stored object, for WADO-RS (PS3.18 10.4.1.1.3 and 10.4.1.1.4).

A viewer asks for frames one or a few at a time; sending them in their stored encoding saves the
archive a decode and the network the inflated pixels, so that is what happens whenever the
client accepts it. Decoding is the fallback for clients that only take native pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import pixel_array
from pydicom.tag import Tag
from pydicom.uid import UID

from arkiv.errors import InvalidObject, InvalidQuery, NotFound

PIXEL_DATA = 0x7FE00010
_MAX_FRAMES_PER_REQUEST = 1000


@dataclass(frozen=True)
class Frames:
    """The frames asked for, in the order asked, and the transfer syntax they are in."""

    frames: list[bytes]
    transfer_syntax_uid: str
    encapsulated: bool


def parse_frame_list(text: str) -> list[int]:
    """`1,3,4` → [1, 3, 4]; frame numbers are 1-based (PS3.18 8.3.3.1.1.1)."""
    try:
        numbers = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise InvalidQuery(
            "frame list must be comma-separated frame numbers, such as 1,2,3"
        ) from None
    if not numbers:
        raise InvalidQuery("frame list is empty")
    if len(numbers) > _MAX_FRAMES_PER_REQUEST:
        raise InvalidQuery(f"at most {_MAX_FRAMES_PER_REQUEST} frames per request")
    if min(numbers) < 1:
        raise InvalidQuery("frame numbers start at 1")
    return numbers


def _read(data: bytes) -> Dataset:
    try:
        return dcmread(BytesIO(data))
    except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
        raise InvalidObject(f"the stored object cannot be read: {exc}") from exc


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def extract_frames(data: bytes, numbers: Sequence[int], decode: bool) -> Frames:
    """Frames `numbers` of the Part 10 object `data`: as stored (compressed frames as their
    codestream, native frames as their bytes), or decoded to native little-endian pixels."""
    ds = _read(data)
    if PIXEL_DATA not in ds:
        raise NotFound("this instance has no pixel data, so it has no frames")
    count = number_of_frames(ds)
    beyond = [n for n in numbers if n > count]
    if beyond:
        raise NotFound(f"frame {beyond[0]} does not exist: the instance has {count} frame(s)")
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1")))
    if syntax.is_compressed and not decode:
        try:
            frames = [get_frame(ds.PixelData, n - 1, number_of_frames=count) for n in numbers]
        except Exception as exc:  # malformed item tags surface as several types
            raise InvalidObject(f"the pixel data of this instance is malformed: {exc}") from exc
        return Frames(frames, str(syntax), encapsulated=True)
    if syntax.is_compressed:
        # Only the frames asked for are decoded: a viewer scrolling a CBCT asks for one slice
        # at a time, and decoding the whole volume for each would make scrolling crawl.
        try:
            decoded = [pixel_array(ds, index=n - 1).tobytes() for n in numbers]
        except Exception as exc:  # missing decoder or corrupt codestream
            raise InvalidObject(f"the frames of this instance cannot be decoded: {exc}") from exc
        return Frames(decoded, "1.2.840.10008.1.2.1", encapsulated=False)
    raw = bytes(ds.PixelData)
    size = _native_frame_bytes(ds)
    if size * count > len(raw):
        raise InvalidObject("the pixel data of this instance is shorter than its attributes say")
    frames = [raw[(n - 1) * size : n * size] for n in numbers]
    return Frames(frames, str(syntax), encapsulated=False)


def _native_frame_bytes(ds: Dataset) -> int:
    bits = int(ds.get("BitsAllocated", 8))
    samples = int(ds.get("SamplesPerPixel", 1))
    pixels = int(ds.Rows) * int(ds.Columns) * samples
    if bits == 1:
        return (pixels + 7) // 8
    return pixels * (bits // 8)


def bulk_value(data: bytes, tag_text: str) -> bytes:
    """The value of top-level attribute `tag_text` (eight hex digits) as stored: what a
    BulkDataURI in the metadata points at."""
    try:
        tag = Tag(int(tag_text, 16))
    except ValueError:
        raise InvalidQuery("bulk data is addressed by an eight-digit hex tag") from None
    ds = _read(data)
    if tag not in ds:
        raise NotFound(f"this instance has no attribute ({tag.group:04X},{tag.element:04X})")
    value = ds[tag].value
    if isinstance(value, bytes):
        return value
    raise InvalidQuery(f"({tag.group:04X},{tag.element:04X}) is not bulk data")
