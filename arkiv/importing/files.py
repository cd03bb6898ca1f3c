"""What `arkiv import PATH…` finds on disk: folders, DICOMDIR media and zip archives.

An old image store is rarely tidy: files with and without `.dcm`, datasets written without
preamble or file meta, index files, thumbnails, half-copied files, CDs with a DICOMDIR, zipped
studies. Every file is judged by its content, never its name, and every one ends in exactly one
place: a Part 10 object for the ingest path (with its origin, so the auditor can trace it), a
refusal with the reason, or the list of files that are not DICOM at all.

Files are read one at a time as the walk reaches them, so a tree of any size needs memory for
one object (per worker), never for the tree. Zip members are checked against declared sizes
before anything is decompressed, so a zip bomb is refused instead of filling memory.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from io import BytesIO
from pathlib import Path
from typing import IO

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

DICOMDIR_NAME = "DICOMDIR"
MEDIA_DIRECTORY_CLASS = "1.2.840.10008.1.3.10"
"""Media Storage Directory Storage: a DICOMDIR is an index of media, not an image to import."""

_PREAMBLE = b"\0" * 128
_MAGIC = b"DICM"
_HEAD = 132
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_UNDEFINED_LENGTH = 0xFFFFFFFF
_VR_LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class Limits:
    """Bounds that keep one hostile or damaged file from exhausting the importer's memory."""

    max_object_bytes: int
    """Largest single object taken (a file or a zip member); larger DICOM is refused."""
    zip_ratio: float = 100.0
    """A zip whose members together are this many times larger than the zip itself is taken
    for a zip bomb (DICOM rarely deflates beyond 10:1) ..."""
    zip_floor_bytes: int = 64 * 1024 * 1024
    """... once they total more than this: a small archive cannot hurt, whatever its ratio."""


class Kind(StrEnum):
    DICOM = "dicom"
    NOT_DICOM = "not DICOM"
    REFUSED = "refused"


@dataclass(frozen=True)
class Found:
    """One file or zip member and what became of it."""

    origin: str
    size: int
    """Bytes of the source this accounts for (the progress bar's unit)."""
    kind: Kind
    data: bytes = b""
    """Part 10 bytes, for `Kind.DICOM`."""
    reason: str = ""


@dataclass
class Survey:
    """The cheap pre-pass: how many files and bytes the progress bar has ahead of it."""

    files: int = 0
    bytes: int = 0


class SourcePathError(ValueError):
    """A PATH on the command line cannot be imported at all (a usage error, exit 2)."""


def check_paths(paths: Sequence[Path]) -> list[Path]:
    """Absolute paths, each an existing file or directory; raises SourcePathError naming the
    first that is not, before anything is imported."""
    checked: list[Path] = []
    for path in paths:
        absolute = Path(os.path.abspath(path))
        if not absolute.exists():
            raise SourcePathError(f"{path} does not exist; give a folder, DICOMDIR or zip file")
        if not (absolute.is_dir() or absolute.is_file()):
            raise SourcePathError(f"{path} is neither a folder nor a file")
        checked.append(absolute)
    return checked


def survey(paths: Sequence[Path]) -> Survey:
    """Count files (zip members for zips) and their bytes, reading only directories and zip
    central directories, so the estimate costs a fraction of the import."""
    total = Survey()
    for path in paths:
        if path.is_dir():
            for file in _walk(path):
                _survey_file(file, total)
        else:
            _survey_file(path, total)
    return total


def _survey_file(path: Path, total: Survey) -> None:
    if path.name.upper() == DICOMDIR_NAME:
        return
    try:
        size = path.stat().st_size
        if _is_zip(path):
            with zipfile.ZipFile(path) as archive:
                for info in _members(archive):
                    total.files += 1
                    total.bytes += info.file_size
            return
    except (OSError, zipfile.BadZipFile, ValueError):
        size = 0
    total.files += 1
    total.bytes += size


def find(paths: Sequence[Path], limits: Limits) -> Iterator[Found]:
    """Everything under `paths`, one file at a time, in a stable order."""
    for path in paths:
        if path.is_dir():
            yield from _directory(path, limits)
        elif path.name.upper() == DICOMDIR_NAME or _is_dicomdir(path):
            yield from _dicomdir(path, limits, set())
        else:
            yield from _file(path, limits)


def shown(path: Path) -> str:
    """A path as origins name it. Old stores copied from Windows often have file names in
    Latin-1, which Linux hands over as undecodable bytes; those are written as \\xNN escapes,
    so the origin stays exact and can still be stored in the index and the report."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


# -- folders ---------------------------------------------------------------------------------------


def _walk(top: Path) -> Iterator[Path]:
    """Visible files at any depth, sorted; hidden files and folders (`.Trashes`, `.DS_Store`)
    and symbolic links to folders (which can loop) are left out."""
    for folder, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        # A DICOMDIR first: the files it lists, in this folder too, are then known as listed.
        for name in sorted(files, key=lambda n: (n.upper() != DICOMDIR_NAME, n)):
            if not name.startswith("."):
                yield Path(folder) / name


def _directory(top: Path, limits: Limits) -> Iterator[Found]:
    """A folder tree; media with a DICOMDIR are read through it, and the files it lists are
    not taken a second time by the walk."""
    listed: set[Path] = set()
    for path in _walk(top):
        if path.name.upper() == DICOMDIR_NAME:
            yield from _dicomdir(path, limits, listed)
            continue
        if path in listed:
            listed.discard(path)  # each is met once; the set shrinks back as the walk goes on
            continue
        yield from _file(path, limits)


def _file(path: Path, limits: Limits) -> Iterator[Found]:
    origin = f"file:{shown(path)}"
    try:
        if _is_zip(path):
            yield from _zip(path, limits)
            return
        size = path.stat().st_size
        with path.open("rb") as handle:
            yield _judge(origin, size, handle, limits)
    except OSError as exc:
        yield Found(origin, 0, Kind.REFUSED, reason=f"cannot read the file: {exc.strerror or exc}")


# -- DICOMDIR media --------------------------------------------------------------------------------


def _is_dicomdir(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(1024)
    except OSError:
        return False
    return head[128:132] == _MAGIC and MEDIA_DIRECTORY_CLASS.encode() in head


def _dicomdir(path: Path, limits: Limits, listed: set[Path]) -> Iterator[Found]:
    """The files a DICOMDIR's records refer to. Their paths join `listed`, so the folder walk
    skips them; a DICOMDIR that cannot be read is refused and the walk then finds its files."""
    path = Path(os.path.abspath(path))
    try:
        directory = pydicom.dcmread(path, force=True)
        records = list(directory.get("DirectoryRecordSequence", []))
    except Exception as exc:  # pydicom raises many kinds on a damaged file
        reason = f"unreadable DICOMDIR: {exc}"
        yield Found(f"dicomdir:{shown(path)}", 0, Kind.REFUSED, reason=reason)
        return
    seen: set[tuple[str, ...]] = set()
    for record in records:
        value = record.get("ReferencedFileID")
        if not value:
            continue
        parts = tuple(str(v).strip() for v in ([value] if isinstance(value, str) else value))
        if parts in seen:
            continue
        seen.add(parts)
        origin = f"dicomdir:{shown(path)}!{'/'.join(parts)}"
        target = _resolve(path.parent, parts)
        if target is None:
            yield Found(
                origin,
                0,
                Kind.REFUSED,
                reason="the DICOMDIR lists this file but it is not on the media "
                "(copied incompletely?); copy it and run the import again",
            )
            continue
        listed.add(target)
        try:
            with target.open("rb") as handle:
                yield _judge(origin, target.stat().st_size, handle, limits)
        except OSError as exc:
            reason = f"cannot read the file: {exc.strerror or exc}"
            yield Found(origin, 0, Kind.REFUSED, reason=reason)


def _resolve(base: Path, parts: tuple[str, ...]) -> Path | None:
    """A Referenced File ID on this filesystem: media are written in upper case but often
    mounted or copied in lower case, so each component is matched without regard to case.
    Components that would leave the media (`..`, absolute) resolve to nothing."""
    current = base
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\\" in part:
            return None
        candidate = current / part
        if not candidate.exists():
            try:
                matches = [p for p in current.iterdir() if p.name.upper() == part.upper()]
            except OSError:
                return None
            if not matches:
                return None
            candidate = sorted(matches)[0]
        current = candidate
    return current if current.is_file() else None


# -- zip archives ----------------------------------------------------------------------------------


def _is_zip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) in _ZIP_MAGIC


def _members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Files in the zip, at any depth; folders, hidden files and macOS resource forks
    (`__MACOSX/`) are not content, and a DICOMDIR's files are members in their own right."""
    chosen = []
    for info in archive.infolist():
        parts = [p for p in info.filename.replace("\\", "/").split("/") if p]
        if info.is_dir() or not parts:
            continue
        if any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        if parts[-1].upper() == DICOMDIR_NAME:
            continue
        chosen.append(info)
    return chosen


def _zip(path: Path, limits: Limits) -> Iterator[Found]:
    origin = f"zip:{shown(path)}"
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, ValueError) as exc:
        yield Found(origin, path.stat().st_size, Kind.REFUSED, reason=f"not a readable zip: {exc}")
        return
    with archive:
        members = _members(archive)
        total = sum(info.file_size for info in members)
        compressed = path.stat().st_size
        if total > max(limits.zip_ratio * compressed, limits.zip_floor_bytes):
            yield Found(
                origin,
                total,
                Kind.REFUSED,
                reason=f"the zip would unpack to {total / 1e6:,.0f} MB from {compressed / 1e6:,.1f}"
                f" MB (more than {limits.zip_ratio:.0f} times its size): a zip bomb or a damaged "
                "central directory; nothing in it was imported. Unpack it with a trusted tool "
                "and import the folder",
            )
            return
        for info in members:
            member = f"{origin}!{info.filename}"
            try:
                with archive.open(info) as handle:
                    yield _judge(member, info.file_size, handle, limits)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as exc:
                yield Found(member, info.file_size, Kind.REFUSED, reason=f"damaged member: {exc}")
            except RuntimeError as exc:  # encrypted members
                yield Found(member, info.file_size, Kind.REFUSED, reason=str(exc))
            except (OSError, EOFError, ValueError) as exc:
                reason = f"cannot read the member: {exc}"
                yield Found(member, info.file_size, Kind.REFUSED, reason=reason)


# -- what a file holds -----------------------------------------------------------------------------


def _judge(origin: str, size: int, handle: IO[bytes], limits: Limits) -> Found:
    """Read only the head first: only what looks like DICOM is read whole, and only within
    the bound, so a film or disk image in the tree costs 132 bytes."""
    head = handle.read(_HEAD)
    part10 = head[128:132] == _MAGIC
    encoding = None if part10 else _raw_encoding(head)
    bare_meta = _bare_meta(head)
    if not part10 and encoding is None and not bare_meta:
        return Found(origin, size, Kind.NOT_DICOM)
    if size > limits.max_object_bytes:
        return Found(
            origin,
            size,
            Kind.REFUSED,
            reason=f"{size / 1e6:,.1f} MB is more than the {limits.max_object_bytes / 1e6:,.0f} MB "
            "an object may be (--max-object-mb)",
        )
    data = head + handle.read(limits.max_object_bytes + 1 - len(head))
    if len(data) > limits.max_object_bytes:
        return Found(
            origin,
            size,
            Kind.REFUSED,
            reason=f"longer than the {limits.max_object_bytes / 1e6:,.0f} MB an object may be",
        )
    if part10:
        return Found(origin, size, Kind.DICOM, data)
    if bare_meta:
        # A file meta group without the preamble in front of it: only the preamble is missing.
        return Found(origin, size, Kind.DICOM, _PREAMBLE + _MAGIC + data)
    return _from_raw(origin, size, data)


def _bare_meta(head: bytes) -> bool:
    """A file meta group with no preamble before it: (0002,0000) UL or (0002,0001) OB first."""
    return (head[0:4] == b"\x02\x00\x00\x00" and head[4:6] == b"UL") or (
        head[0:4] == b"\x02\x00\x01\x00" and head[4:6] == b"OB"
    )


def _raw_encoding(head: bytes) -> str | None:
    """Could this be a dataset written without preamble and file meta? Such a file begins
    with an element of group 0008 (identifying attributes, SOP Class UID among them)."""
    if len(head) < 8:
        return None
    if head[0:2] == b"\x08\x00":
        explicit = head[4] in _VR_LETTERS and head[5] in _VR_LETTERS
        return ExplicitVRLittleEndian if explicit else ImplicitVRLittleEndian
    if head[0:2] == b"\x00\x08" and head[4] in _VR_LETTERS and head[5] in _VR_LETTERS:
        return ExplicitVRBigEndian
    return None


def _from_raw(origin: str, size: int, data: bytes) -> Found:
    """A bare dataset becomes Part 10 by putting a preamble and a file meta group in front of
    its unchanged bytes; the transfer syntax is the one it was read in. Compressed pixel data
    cannot be told apart by codec without file meta, so such a dataset is refused."""
    try:
        dataset = pydicom.dcmread(BytesIO(data), force=True)
        sop_class = str(dataset.get("SOPClassUID", "") or "")
        sop_instance = str(dataset.get("SOPInstanceUID", "") or "")
        implicit, little = dataset.original_encoding
        pixels = dataset.get_item("PixelData") if "PixelData" in dataset else None
    except Exception:  # force=True on arbitrary bytes can fail in any way
        return Found(origin, size, Kind.NOT_DICOM)
    if not sop_class or not sop_instance:
        return Found(origin, size, Kind.NOT_DICOM)
    if pixels is not None and getattr(pixels, "length", 0) == _UNDEFINED_LENGTH:
        return Found(
            origin,
            size,
            Kind.REFUSED,
            reason="a dataset without file meta whose pixel data is compressed: its transfer "
            "syntax cannot be known; export it again as a DICOM Part 10 file",
        )
    if implicit:
        syntax = ImplicitVRLittleEndian
    else:
        syntax = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    buffer = DicomBytesIO()
    try:
        write_file_meta_info(buffer, meta, enforce_standard=True)
    except (ValueError, struct.error) as exc:
        return Found(origin, size, Kind.REFUSED, reason=f"cannot add file meta: {exc}")
    return Found(origin, size, Kind.DICOM, _PREAMBLE + _MAGIC + buffer.getvalue() + data)
