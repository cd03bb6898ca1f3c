"""What kind of file a photo or video upload is, decided from its first bytes, never its name.

A file whose content does not match what it claims (its part's Content-Type or its file name's
extension) is refused: a `.jpg` that is a PNG is a mistake or a disguise, and either way the
clinic should know rather than have the archive guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from arkiv.errors import UnsupportedObject


class MediaMismatch(UnsupportedObject):
    """The file's content is not what its name or declared type says."""


class UnknownMediaType(UnsupportedObject):
    """The content is none of the photo and video formats the archive takes."""


@dataclass(frozen=True)
class MediaFormat:
    name: str
    """"jpeg", "png", "tiff", "heif", "mp4" or "mov"."""
    media_type: str
    kind: str
    """"photo" or "video"."""
    pillow_format: str
    """Pillow's format name, for opening photos with that decoder only; "" for video."""
    extensions: tuple[str, ...]
    claims: tuple[str, ...]
    """Media types a client may send for this content (besides the generic ones)."""


JPEG = MediaFormat("jpeg", "image/jpeg", "photo", "JPEG", (".jpg", ".jpeg", ".jpe"), ("image/jpg",))
PNG = MediaFormat("png", "image/png", "photo", "PNG", (".png",), ())
TIFF = MediaFormat("tiff", "image/tiff", "photo", "TIFF", (".tif", ".tiff"), ())
HEIF = MediaFormat(
    "heif", "image/heic", "photo", "HEIF", (".heic", ".heif", ".hif"), ("image/heif",)
)
MP4 = MediaFormat("mp4", "video/mp4", "video", "", (".mp4", ".m4v"), ("video/x-m4v",))
MOV = MediaFormat("mov", "video/quicktime", "video", "", (".mov", ".qt"), ())
FORMATS = (JPEG, PNG, TIFF, HEIF, MP4, MOV)

_GENERIC = {"", "application/octet-stream", "binary/octet-stream", "application/x-download"}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_MP4_BRANDS = {
    b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1",
    b"M4V ", b"MSNV", b"dash", b"3gp4", b"3gp5", b"3g2a",
}  # fmt: skip
_QUICKTIME_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


def sniff(data: bytes) -> MediaFormat:
    """The format of `data` from its signature; UnknownMediaType when it is none we take."""
    if data[:3] == b"\xff\xd8\xff":
        return JPEG
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return PNG
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return TIFF
    if data[4:8] == b"ftyp":
        major = data[8:12]
        size = int.from_bytes(data[:4], "big")
        brands = {major} | {data[i : i + 4] for i in range(16, min(size, 64, len(data)), 4)}
        if b"avif" in brands or b"avis" in brands:
            raise UnknownMediaType("AVIF images are not taken; export the photo as JPEG or HEIC")
        if major == b"qt  ":
            return MOV
        if brands & _HEIF_BRANDS and not brands & _MP4_BRANDS - {b"isom"}:
            return HEIF
        if brands & _MP4_BRANDS or major in _MP4_BRANDS:
            return MP4
        if b"qt  " in brands:
            return MOV
    if data[4:8] in _QUICKTIME_ATOMS:
        return MOV
    raise UnknownMediaType(
        "the file is not a JPEG, PNG, TIFF or HEIC photo nor an MP4 or MOV video "
        "(the type is read from the content, not the name)"
    )


def check_claim(found: MediaFormat, declared_type: str, filename: str) -> None:
    """Refuse a file whose declared media type or file name extension says otherwise."""
    declared = declared_type.split(";")[0].strip().lower()
    if declared not in _GENERIC and declared not in (found.media_type, *found.claims):
        raise MediaMismatch(
            f"the file is declared as {declared} but its content is {found.media_type}"
        )
    suffix = PurePath(filename).suffix.lower() if filename else ""
    known = {ext for fmt in FORMATS for ext in fmt.extensions}
    if suffix in known and suffix not in found.extensions:
        raise MediaMismatch(
            f"the file is named {suffix} but its content is {found.media_type}; "
            "rename it or export it again"
        )
