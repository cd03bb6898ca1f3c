"""Accept-header negotiation for WADO-RS (PS3.18 8.7): which representation a client asked for.

Clients name the part type and transfer syntax as parameters of `multipart/related`
(`multipart/related; type="application/dicom"; transfer-syntax=*`); OHIF and dicomweb-client
send exactly such headers, sometimes with the quotes left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.uid import ExplicitVRLittleEndian

from arkiv.errors import InvalidQuery

ANY_SYNTAX = "*"
DEFAULT_SYNTAX = str(ExplicitVRLittleEndian)
"""PS3.18 8.7.3.5.2: without a transfer-syntax parameter the default for application/dicom and
for uncompressed bulk data is Explicit VR Little Endian."""

FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}
"""The media type of one compressed frame in its stored syntax (PS3.18 Table 8.7.3-2)."""


@dataclass(frozen=True)
class MediaRange:
    media_type: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def part_type(self) -> str | None:
        """The part type of a multipart range (`type=`), or the range itself otherwise."""
        if self.media_type in ("multipart/related", "multipart/*"):
            return self.params.get("type")
        return self.media_type

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def parse_accept(header: str) -> list[MediaRange]:
    """The ranges of an Accept header in the order given (q-values are not ranked: the first
    acceptable range wins, which is what the clients in use expect)."""
    ranges: list[MediaRange] = []
    for item in header.split(","):
        media, *raw_params = [piece.strip() for piece in item.split(";")]
        if not media:
            continue
        params = {}
        for raw in raw_params:
            name, _, value = raw.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        ranges.append(MediaRange(media.lower(), params))
    return ranges


def _wildcard(media_type: str) -> bool:
    return media_type in ("*/*", "multipart/*")


def dicom_transfer_syntax(header: str) -> str:
    """The transfer syntax a retrieve of whole objects must send: `*` for as stored, else a
    UID. Raises InvalidQuery (406 at the route) when no range accepts application/dicom."""
    ranges = parse_accept(header) or [MediaRange("*/*")]
    for media in ranges:
        if media.media_type == "*/*":
            return media.transfer_syntax or DEFAULT_SYNTAX
        if media.media_type in ("multipart/related", "multipart/*") and media.part_type in (
            None,
            "application/dicom",
        ):
            return media.transfer_syntax or DEFAULT_SYNTAX
        if media.media_type == "application/dicom":
            return media.transfer_syntax or DEFAULT_SYNTAX
    raise NotAcceptable('objects are served as multipart/related; type="application/dicom"')


@dataclass(frozen=True)
class FrameChoice:
    """How to send frames: as stored (compressed frames in their own media type) or decoded
    to native application/octet-stream."""

    as_stored: bool


def frame_choice(header: str, stored_syntax: str) -> FrameChoice:
    """Frames go out as stored when the client accepts the stored form (`transfer-syntax=*`,
    the stored syntax itself, or the compressed frame's media type); native octet-streams are
    always stored as they are; otherwise they are decoded to native pixels."""
    compressed_type = FRAME_MEDIA_TYPES.get(stored_syntax)
    ranges = parse_accept(header) or [MediaRange("*/*")]
    for media in ranges:
        part = media.part_type
        syntax = media.transfer_syntax
        if compressed_type is None:
            if part in (None, "application/octet-stream", "*/*") or _wildcard(part or ""):
                return FrameChoice(as_stored=True)
            continue
        if part == compressed_type and syntax in (None, ANY_SYNTAX, stored_syntax):
            return FrameChoice(as_stored=True)
        if syntax in (ANY_SYNTAX, stored_syntax) and part in (
            None,
            "application/octet-stream",
            "*/*",
        ):
            return FrameChoice(as_stored=True)
        if part in (None, "application/octet-stream", "*/*") and syntax in (None, DEFAULT_SYNTAX):
            return FrameChoice(as_stored=False)
    raise NotAcceptable(
        "frames are served as multipart/related with application/octet-stream"
        + (f" or {compressed_type} (transfer-syntax=*)" if compressed_type else "")
    )


class NotAcceptable(InvalidQuery):
    """No representation the client accepts can be produced (HTTP 406)."""
