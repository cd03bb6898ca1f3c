"""Removing location and other identifying metadata from photos while keeping their bytes.

A phone writes where a photo was taken (EXIF GPS, XMP), its own serial number, the owner's name
and software traces into the file. None of that belongs in a patient's record, and the location
of a home visit is itself health information. What a clinician needs stays: the capture time,
the orientation and the colour profile. Everything else in the metadata goes.

The pixels are never decoded and re-encoded here. JPEG and PNG are rewritten segment by segment
(chunk by chunk) with the image data copied as is; in HEIF the metadata items are overwritten
in place with a minimal EXIF and an empty XMP packet of the same length, so every offset in the
file stays valid. TIFF has no such seam (the GPS directory hangs off the image's own directory)
and is written again losslessly by the caller.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from PIL import Image

from arkiv.errors import InvalidObject


class CorruptMedia(InvalidObject):
    """The file's structure is broken (truncated, or a length pointing past its end)."""


_EXIF_PREFIX = b"Exif\x00\x00"
_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_OFFSET_TIME_ORIGINAL = 0x9011
_TRACES = (b"GPSLatitude", b"GPSLongitude", b"GPSPosition", b"GPSAltitude")
"""XMP and EXIF names that betray a location left behind; their presence fails the upload."""


@dataclass(frozen=True)
class KeptExif:
    """The EXIF a stored photo keeps."""

    orientation: int = 1
    taken_at: str | None = None
    """DateTimeOriginal as written, "YYYY:MM:DD HH:MM:SS"."""
    offset: str | None = None
    """OffsetTimeOriginal, "+01:00"."""


def minimal_exif(kept: KeptExif) -> bytes:
    """An APP1-ready EXIF block ("Exif\\0\\0" + TIFF) with only what `kept` holds."""
    exif = Image.Exif()
    if kept.orientation != 1:
        exif[_ORIENTATION] = kept.orientation
    sub = exif.get_ifd(_EXIF_IFD)
    if kept.taken_at:
        sub[_DATETIME_ORIGINAL] = kept.taken_at
    if kept.offset:
        sub[_OFFSET_TIME_ORIGINAL] = kept.offset
    return exif.tobytes()


def traces(data: bytes) -> list[str]:
    """Names of location metadata found anywhere in `data` (the backstop after cleaning)."""
    return [t.decode() for t in _TRACES if t in data]


# -- JPEG ------------------------------------------------------------------------------------------


def _keep_jpeg_app(marker: int, payload: bytes) -> bool:
    if marker == 0xE0:
        return payload.startswith((b"JFIF\x00", b"JFXX\x00"))
    if marker == 0xE2:
        return payload.startswith(b"ICC_PROFILE\x00")
    if marker == 0xEE:
        return payload.startswith(b"Adobe")  # the colour transform flag decoders need
    return False


def clean_jpeg(data: bytes, exif: bytes) -> bytes:
    """`data` with every APPn segment but JFIF, ICC profile and Adobe removed, no comments, the
    new `exif` block as APP1, and nothing after the end of the image (where phones append
    secondary images with their own metadata). The coded image data is copied byte for byte."""
    if data[:2] != b"\xff\xd8":
        raise CorruptMedia("not a JPEG file")
    out = [b"\xff\xd8"]
    pending_exif = exif
    pos, end = 2, len(data)
    while True:
        if pos + 2 > end:
            raise CorruptMedia("the JPEG file is truncated (no end of image)")
        if data[pos] != 0xFF:
            raise CorruptMedia(f"the JPEG file is corrupt at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            out.append(b"\xff\xd9")
            return b"".join(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out.append(data[pos : pos + 2])
            pos += 2
            continue
        if pos + 4 > end:
            raise CorruptMedia("the JPEG file is truncated")
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        segment_end = pos + 2 + length
        if length < 2 or segment_end > end:
            raise CorruptMedia(f"a JPEG segment at byte {pos} runs past the end of the file")
        is_app = 0xE0 <= marker <= 0xEF
        if pending_exif and not (
            marker == 0xE0 and _keep_jpeg_app(marker, data[pos + 4 : pos + 9])
        ):
            out.append(_app1(pending_exif))
            pending_exif = b""
        if marker == 0xDA:
            scan_end = _scan_end(data, segment_end)
            out.append(data[pos:scan_end])
            pos = scan_end
            continue
        if (is_app and _keep_jpeg_app(marker, data[pos + 4 : segment_end])) or (
            not is_app and marker != 0xFE
        ):
            out.append(data[pos:segment_end])
        pos = segment_end


def _app1(exif: bytes) -> bytes:
    if len(exif) + 2 > 0xFFFF:
        raise ValueError("EXIF block too long for one segment")
    return b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif


def _scan_end(data: bytes, pos: int) -> int:
    """Where the entropy-coded data after a start of scan ends: the next marker that is not a
    stuffed zero or a restart marker."""
    while True:
        found = data.find(b"\xff", pos)
        if found < 0 or found + 1 >= len(data):
            raise CorruptMedia("the JPEG file is truncated inside its image data")
        following = data[found + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos = found + 1 if following == 0xFF else found + 2
            continue
        return found


# -- PNG -------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEEP = {
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB",
    b"bKGD", b"pHYs", b"cICP", b"mDCV", b"cLLI",
}  # fmt: skip
"""Chunks that carry the image or how to show it; text, time and EXIF chunks are dropped."""


def clean_png(data: bytes, exif: bytes) -> bytes:
    """`data` with only image and colour chunks, the new `exif` as an eXIf chunk before the
    image data, and nothing after IEND."""
    if not data.startswith(_PNG_SIGNATURE):
        raise CorruptMedia("not a PNG file")
    out = [_PNG_SIGNATURE]
    pos = len(_PNG_SIGNATURE)
    tiff = exif[len(_EXIF_PREFIX) :] if exif.startswith(_EXIF_PREFIX) else exif
    while True:
        if pos + 8 > len(data):
            raise CorruptMedia("the PNG file is truncated (no IEND chunk)")
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kind = data[pos + 4 : pos + 8]
        chunk_end = pos + 12 + length
        if chunk_end > len(data):
            raise CorruptMedia(f"a PNG chunk at byte {pos} runs past the end of the file")
        if kind == b"IDAT" and tiff:
            out.append(_png_chunk(b"eXIf", tiff))
            tiff = b""
        if kind in _PNG_KEEP:
            out.append(data[pos:chunk_end])
        if kind == b"IEND":
            return b"".join(out)
        pos = chunk_end


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


# -- HEIF ------------------------------------------------------------------------------------------

_EMPTY_XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>'


def clean_heif(data: bytes, exif: bytes) -> bytes:
    """`data` with its Exif items overwritten by `exif` and its XMP items by an empty packet,
    each padded to the item's length so that no offset in the file moves."""
    out = bytearray(data)
    for item_type, start, length in _heif_metadata_items(data):
        if item_type == b"Exif":
            header = int.from_bytes(data[start : start + 4], "big") if length >= 4 else 0
            tiff_at = start + 4 + header
            tiff = exif[len(_EXIF_PREFIX) :] if exif.startswith(_EXIF_PREFIX) else exif
            room = start + length - tiff_at
            if header > length - 4 or len(tiff) > room:
                tiff = b"MM\x00*\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00"  # no entries at all
            if len(tiff) > room:
                out[start : start + length] = bytes(length)
                continue
            out[tiff_at : start + length] = tiff + bytes(room - len(tiff))
        else:
            packet = _EMPTY_XMP if len(_EMPTY_XMP) <= length else b""
            out[start : start + length] = packet + b" " * (length - len(packet))
    return bytes(out)


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the ISO BMFF boxes between start and end."""
    found = []
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        header = 8
        if size == 1:
            if pos + 16 > end:
                raise CorruptMedia("a HEIF box header is truncated")
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise CorruptMedia(f"a HEIF box at byte {pos} runs past its container")
        found.append((kind, pos + header, pos + size))
        pos += size
    return found


def _heif_metadata_items(data: bytes) -> list[tuple[bytes, int, int]]:
    """(item type, file offset, length) of every Exif and XMP item stored in the file."""
    metas = [(s, e) for kind, s, e in _boxes(data, 0, len(data)) if kind == b"meta"]
    if not metas:
        raise CorruptMedia("the HEIF file has no meta box")
    meta_start, meta_end = metas[0]
    children = {kind: (s, e) for kind, s, e in _boxes(data, meta_start + 4, meta_end)}
    if b"iinf" not in children or b"iloc" not in children:
        return []
    wanted = _metadata_item_ids(data, *children[b"iinf"])
    if not wanted:
        return []
    return [
        (wanted[item_id], offset, length)
        for item_id, offset, length in _item_locations(data, *children[b"iloc"])
        if item_id in wanted
    ]


def _metadata_item_ids(data: bytes, start: int, end: int) -> dict[int, bytes]:
    version = data[start]
    pos = start + 4 + (2 if version == 0 else 4)
    ids: dict[int, bytes] = {}
    for kind, s, e in _boxes(data, pos, end):
        if kind != b"infe" or data[s] < 2:
            continue
        infe_version = data[s]
        p = s + 4
        width = 2 if infe_version == 2 else 4
        item_id = int.from_bytes(data[p : p + width], "big")
        p += width + 2
        item_type = data[p : p + 4]
        if item_type == b"Exif":
            ids[item_id] = b"Exif"
        elif item_type == b"mime":
            name_end = data.find(b"\x00", p + 4, e)
            content_type_end = data.find(b"\x00", name_end + 1, e) if name_end >= 0 else -1
            if name_end >= 0 and b"xml" in data[name_end + 1 : content_type_end]:
                ids[item_id] = b"mime"
    return ids


def _item_locations(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    version = data[start]
    p = start + 4
    sizes = (data[p] >> 4, data[p] & 15, data[p + 1] >> 4, data[p + 1] & 15)
    offset_size, length_size, base_size, index_size = sizes
    p += 2
    id_width = 2 if version < 2 else 4
    count = int.from_bytes(data[p : p + id_width], "big")
    p += id_width

    def take(width: int) -> int:
        nonlocal p
        if p + width > end:
            raise CorruptMedia("the HEIF item locations are truncated")
        value = int.from_bytes(data[p : p + width], "big")
        p += width
        return value

    found = []
    for _ in range(count):
        item_id = take(id_width)
        method = take(2) & 15 if version in (1, 2) else 0
        take(2)  # data reference index
        base = take(base_size)
        extents = take(2)
        for _extent in range(extents):
            if version in (1, 2) and index_size:
                take(index_size)
            offset, length = take(offset_size), take(length_size)
            if method == 0 and base + offset + length <= len(data):
                found.append((item_id, base + offset, length))
            elif method == 0:
                raise CorruptMedia("a HEIF item lies past the end of the file")
    return found
