"""A structural check of an encoded DICOM object: every element is whole.

pydicom reads a truncated dataset without complaint (it stops at the end of the bytes), so a
transfer cut short could be stored as if complete. This walker follows element headers, item
and delimiter tags through the whole encoding and refuses anything that ends early or overruns.
It also reports where the top-level Pixel Data lies, so that ingest can compare its length with
what Rows, Columns and the other attributes declare.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from arkiv.errors import InvalidObject

_UNDEFINED = 0xFFFFFFFF
_ITEM = (0xFFFE, 0xE000)
_ITEM_END = (0xFFFE, 0xE00D)
_SEQUENCE_END = (0xFFFE, 0xE0DD)
_PIXEL_DATA = (0x7FE0, 0x0010)
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
_DEFLATED = {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"}


@dataclass(frozen=True)
class PixelDataExtent:
    """Where Pixel Data lies; `length` is None for encapsulated (compressed) pixel data."""

    offset: int
    length: int | None


@dataclass(frozen=True)
class Structure:
    dataset_offset: int
    pixel_data: PixelDataExtent | None


def check_part10(data: bytes, transfer_syntax_uid: str) -> Structure:
    """Walk a Part 10 object (preamble, meta group, dataset); raise InvalidObject if not whole."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InvalidObject("not a DICOM Part 10 object: the 'DICM' prefix is missing")
    meta_end = _skip_meta(data, 132)
    body = data
    start = meta_end
    if transfer_syntax_uid in _DEFLATED:
        try:
            body = zlib.decompress(data[meta_end:], -15)
        except zlib.error as exc:
            raise InvalidObject(f"deflated dataset cannot be inflated: {exc}") from exc
        start = 0
    walker = _Walker(
        body,
        explicit=transfer_syntax_uid != _IMPLICIT_LE,
        little=transfer_syntax_uid != _EXPLICIT_BE,
    )
    walker.dataset(start, len(body), top_level=True)
    pixel = walker.pixel_data
    if pixel is not None and transfer_syntax_uid in _DEFLATED:
        pixel = PixelDataExtent(offset=-1, length=pixel.length)
    return Structure(dataset_offset=meta_end, pixel_data=pixel)


def _skip_meta(data: bytes, pos: int) -> int:
    """The meta group is always explicit VR little endian; walk it element by element."""
    while pos + 8 <= len(data):
        group = struct.unpack_from("<H", data, pos)[0]
        if group != 0x0002:
            return pos
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                break
            length = struct.unpack_from("<I", data, pos + 8)[0]
            pos += 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            pos += 8
        if length == _UNDEFINED or pos + length > len(data):
            raise InvalidObject("file meta information is truncated or malformed")
        pos += length
    if pos == len(data):
        return pos
    raise InvalidObject("file meta information is truncated")


class _Walker:
    def __init__(self, buf: bytes, *, explicit: bool, little: bool) -> None:
        self.buf = buf
        self.explicit = explicit
        self.endian = "<" if little else ">"
        self.pixel_data: PixelDataExtent | None = None

    def _tag(self, pos: int) -> tuple[int, int]:
        if pos + 4 > len(self.buf):
            raise InvalidObject(f"dataset is truncated at byte {pos}")
        group, element = struct.unpack_from(self.endian + "HH", self.buf, pos)
        return group, element

    def _u32(self, pos: int) -> int:
        if pos + 4 > len(self.buf):
            raise InvalidObject(f"dataset is truncated at byte {pos}")
        value: int = struct.unpack_from(self.endian + "I", self.buf, pos)[0]
        return value

    def dataset(
        self,
        pos: int,
        end: int,
        *,
        top_level: bool = False,
        implicit: bool = False,
        until_item_end: bool = False,
    ) -> int:
        """Walk elements from pos; stop at end, or after an item delimiter when asked."""
        while pos < end:
            tag = self._tag(pos)
            if tag == _ITEM_END:
                if not until_item_end:
                    raise InvalidObject(f"unexpected item delimiter at byte {pos}")
                return pos + 8
            explicit = self.explicit and not implicit
            vr = self.buf[pos + 4 : pos + 6] if explicit else b""
            if explicit and vr in _LONG_VRS:
                length = self._u32(pos + 8)
                value_at = pos + 12
            elif explicit:
                if pos + 8 > len(self.buf):
                    raise InvalidObject(f"dataset is truncated at byte {pos}")
                length = struct.unpack_from(self.endian + "H", self.buf, pos + 6)[0]
                value_at = pos + 8
            else:
                length = self._u32(pos + 4)
                value_at = pos + 8
            if length == _UNDEFINED:
                nested_implicit = implicit or vr == b"UN"
                if tag == _PIXEL_DATA or vr in (b"OB", b"OW"):
                    pos = self._fragments(value_at)
                    if top_level and tag == _PIXEL_DATA:
                        self.pixel_data = PixelDataExtent(offset=value_at, length=None)
                else:
                    pos = self._sequence(value_at, implicit=nested_implicit)
                continue
            if value_at + length > end:
                name = f"({tag[0]:04X},{tag[1]:04X})"
                raise InvalidObject(
                    f"dataset is truncated: element {name} declares {length} bytes but only "
                    f"{max(0, end - value_at)} remain"
                )
            if top_level and tag == _PIXEL_DATA:
                self.pixel_data = PixelDataExtent(offset=value_at, length=length)
            if vr == b"SQ" and length:
                self._items(value_at, value_at + length, implicit=implicit)
            pos = value_at + length
        if until_item_end:
            raise InvalidObject("dataset is truncated: an item has no delimiter")
        return pos

    def _items(self, pos: int, end: int, *, implicit: bool) -> None:
        while pos < end:
            tag = self._tag(pos)
            length = self._u32(pos + 4)
            if tag != _ITEM:
                raise InvalidObject(f"malformed sequence item at byte {pos}")
            if length == _UNDEFINED:
                pos = self.dataset(pos + 8, end, implicit=implicit, until_item_end=True)
            else:
                if pos + 8 + length > end:
                    raise InvalidObject(f"sequence item at byte {pos} overruns its sequence")
                self.dataset(pos + 8, pos + 8 + length, implicit=implicit)
                pos += 8 + length

    def _sequence(self, pos: int, *, implicit: bool) -> int:
        """An undefined-length sequence: items until the sequence delimiter."""
        end = len(self.buf)
        while True:
            tag = self._tag(pos)
            length = self._u32(pos + 4)
            if tag == _SEQUENCE_END:
                return pos + 8
            if tag != _ITEM:
                raise InvalidObject(f"malformed sequence item at byte {pos}")
            if length == _UNDEFINED:
                pos = self.dataset(pos + 8, end, implicit=implicit, until_item_end=True)
            else:
                if pos + 8 + length > end:
                    raise InvalidObject(f"dataset is truncated inside a sequence item at {pos}")
                self.dataset(pos + 8, pos + 8 + length, implicit=implicit)
                pos += 8 + length

    def _fragments(self, pos: int) -> int:
        """Encapsulated pixel data: defined-length items until the sequence delimiter."""
        while True:
            tag = self._tag(pos)
            length = self._u32(pos + 4)
            if tag == _SEQUENCE_END:
                return pos + 8
            if tag != _ITEM or length == _UNDEFINED:
                raise InvalidObject(f"malformed pixel data fragment at byte {pos}")
            if pos + 8 + length > len(self.buf):
                raise InvalidObject("dataset is truncated inside the encapsulated pixel data")
            pos += 8 + length
