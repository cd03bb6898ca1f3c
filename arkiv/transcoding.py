"""Changing a stored object's transfer syntax, for a receiver that accepts nothing else.

The archive keeps every object exactly as it was received and sends it that way whenever the
receiver takes it (C-MOVE, C-GET, WADO-RS with `transfer-syntax=*`). Only when a receiver
accepts no context in the stored syntax does the object go out transcoded, and then only
losslessly: decoded to a native syntax, or re-encoded with a lossless codec (RLE, JPEG 2000
lossless). A lossy stored image may be decoded (what it shows does not change); nothing is ever
made lossy on the way out, since a diagnostic image must not silently lose detail.
"""

from __future__ import annotations

from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from arkiv.errors import ArkivError

NATIVE_TARGETS = frozenset(
    {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)
"""Native syntaxes the archive writes. Explicit VR big endian is retired (PS3.5 A.3) and never
produced."""

LOSSLESS_ENCODED_TARGETS = frozenset({RLELossless, JPEG2000Lossless})
"""Compressed syntaxes the archive encodes to: lossless, with an encoder installed."""

_PIXEL_DATA = 0x7FE00010


class TranscodeError(ArkivError):
    """The object cannot be given the requested transfer syntax (no decoder, a lossy target,
    a malformed object); the message says which."""


def can_transcode(source_uid: str, target_uid: str, has_pixels: bool = True) -> bool:
    """Whether `transcode` would turn an object in `source_uid` into `target_uid`.

    Decides from the syntaxes alone (and whether the object has pixel data), so a sender can
    choose among the contexts a receiver accepted before reading any object.
    """
    source, target = UID(source_uid), UID(target_uid)
    if source == target:
        return True
    if not (source.is_transfer_syntax and target.is_transfer_syntax):
        return False
    if source == ExplicitVRBigEndian:
        return False  # pydicom cannot re-encode a big endian dataset as little endian
    if target in NATIVE_TARGETS:
        return not (source.is_compressed and has_pixels) or _decodable(source)
    if target in LOSSLESS_ENCODED_TARGETS and has_pixels:
        return (not source.is_compressed or _decodable(source)) and _encodable(target)
    return False


def transcode(data: bytes, transfer_syntax_uid: str) -> bytes:
    """The Part 10 object `data` in `transfer_syntax_uid`: the bytes unchanged when already in
    it, else decoded (and re-encoded losslessly if the target is compressed)."""
    target = UID(transfer_syntax_uid)
    try:
        ds = dcmread(BytesIO(data), force=False)
    except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
        raise TranscodeError(f"the stored object cannot be read: {exc}") from exc
    source = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    if source == target:
        return data
    has_pixels = _PIXEL_DATA in ds
    if not can_transcode(source, target, has_pixels):
        raise TranscodeError(
            f"cannot change {_name(source)} to {_name(target)}: "
            + _why_not(source, target, has_pixels)
        )
    try:
        if source.is_compressed and has_pixels:
            # The same instance, losslessly re-encoded: it keeps its SOP Instance UID.
            ds.decompress(generate_instance_uid=False)  # YBR photos become RGB
        if target in LOSSLESS_ENCODED_TARGETS:
            ds.compress(target, generate_instance_uid=False)
        return _write(ds, target)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError, TypeError) as exc:
        raise TranscodeError(f"changing {_name(source)} to {_name(target)} failed: {exc}") from exc


def _write(ds: Dataset, target: UID) -> bytes:
    ds.file_meta.TransferSyntaxUID = target
    buffer = BytesIO()
    ds.save_as(
        buffer,
        implicit_vr=target == ImplicitVRLittleEndian,
        little_endian=True,
        enforce_file_format=True,
    )
    return buffer.getvalue()


def _decodable(syntax: UID) -> bool:
    try:
        return bool(get_decoder(syntax).is_available)
    except NotImplementedError:
        return False


def _encodable(syntax: UID) -> bool:
    try:
        return bool(get_encoder(syntax).is_available)
    except NotImplementedError:
        return False


def _name(syntax: UID) -> str:
    return syntax.name if syntax.is_transfer_syntax else f"unknown transfer syntax {syntax!r}"


def _why_not(source: UID, target: UID, has_pixels: bool) -> str:
    if not source.is_transfer_syntax or not target.is_transfer_syntax:
        return "not a transfer syntax the archive knows"
    if source == ExplicitVRBigEndian:
        return "objects stored in the retired big endian syntax are served only as stored"
    if target not in NATIVE_TARGETS | LOSSLESS_ENCODED_TARGETS:
        return "the archive only produces native or lossless compressed copies"
    if target in LOSSLESS_ENCODED_TARGETS and not has_pixels:
        return "the object has no pixel data to compress"
    if source.is_compressed and not _decodable(source):
        return "no decoder for the stored syntax is installed"
    return "no encoder for the requested syntax is installed"
