"""The blob store: durable, immutable objects under keys the core derives from validated UIDs.

Objects are written once and never modified in place. The filesystem store makes an object durable
before it becomes visible (temporary file, fsync, atomic rename, fsync of the directory), so a crash
leaves either nothing or the whole object under its final key; leftovers in the temporary folder are
removed at start.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from storage.errors import BlobNotFound, BlobStoreUnavailable

_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredBlob:
    """What the store knows of a durable object."""

    key: str
    size: int
    sha256: str


class BlobStore(Protocol):
    """The interface every blob store (filesystem, S3) offers to the core.

    Every method raises `BlobStoreUnavailable` when the store cannot be reached or written, and
    `open`/`read` raise `BlobNotFound` for a key that holds no object.
    """

    def put(self, key: str, data: bytes, sha256: str) -> StoredBlob:
        """Make `data` durable under `key`; `sha256` (hex) is the caller's digest of it.

        Keys carry the content hash, so an object already under `key` is this object: putting
        it again succeeds and writes nothing new.
        """
        ...

    def open(self, key: str) -> BinaryIO: ...

    def read(self, key: str) -> bytes: ...

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """`length` bytes from offset `start` (fewer at the end of the object), without reading
        the rest: a video player seeks, and a seek must not cost the whole file."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def keys(self) -> Iterator[str]: ...

    def check(self) -> None:
        """Readiness: raise `BlobStoreUnavailable` unless objects can be written now."""
        ...

    def describe(self) -> str:
        """Where the objects are, for messages an operator reads."""
        ...

    def restore(self, key: str, sha256: str) -> bool:
        """Make an earlier intact copy of `key` (one whose content hashes to `sha256`) the
        current object again; False when the store keeps no such copy."""
        ...


def validate_key(key: str) -> str:
    """Refuse keys that could escape the store (keys come from validated UIDs; a backstop)."""
    if not _KEY_PATTERN.match(key) or ".." in key.split("/"):
        raise ValueError(f"blob key {key!r} is not a safe relative key")
    return key


class FileBlobStore:
    """Blobs as files under a root directory: the embedded default."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._objects = root / "objects"
        self._tmp = root / "tmp"
        try:
            self._objects.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BlobStoreUnavailable(f"cannot create blob store under {root}: {exc}") from exc
        self._clean_tmp()

    def _clean_tmp(self) -> None:
        """Remove partial writes of processes that are gone (a crash never made them visible).

        Temporary names start with the writer's process id, so several processes sharing the
        store (DICOM workers, a second node) never remove each other's writes in flight.
        """
        for leftover in self._tmp.iterdir():
            owner = leftover.name.split("-", 1)[0]
            if not owner.isdigit() or not _process_alive(int(owner)):
                leftover.unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        return self._objects / validate_key(key)

    def put(self, key: str, data: bytes, sha256: str) -> StoredBlob:
        """Write durably; `sha256` is the caller's digest of `data` (hashed once, at ingest)."""
        final = self._path(key)
        if final.is_file():  # a resend: the key names this content, which is durable already
            return StoredBlob(key=key, size=len(data), sha256=sha256)
        tmp = self._tmp / f"{os.getpid()}-{uuid.uuid4().hex}.part"
        try:
            _make_durable_dirs(final.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise BlobStoreUnavailable(f"cannot write blob {key}: {exc}") from exc
        return StoredBlob(key=key, size=len(data), sha256=sha256)

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(f"blob {key} is missing from the store") from exc
        except OSError as exc:
            raise BlobStoreUnavailable(f"cannot read blob {key}: {exc}") from exc

    def read(self, key: str) -> bytes:
        with self.open(key) as handle:
            return handle.read()

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with self.open(key) as handle:
            handle.seek(start)
            return handle.read(length)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self) -> Iterator[str]:
        for path in self._objects.rglob("*"):
            if path.is_file():
                yield path.relative_to(self._objects).as_posix()

    def describe(self) -> str:
        return f"files under {self._objects}"

    def restore(self, key: str, sha256: str) -> bool:
        """A filesystem keeps one copy of each object: there is nothing earlier to go back to."""
        return False

    def check(self) -> None:
        """Readiness: the store can create and remove a file."""
        probe = self._tmp / f"{os.getpid()}-ready-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise BlobStoreUnavailable(f"blob store at {self.root} is not writable: {exc}") from exc


def sha256_of(handle: BinaryIO) -> str:
    """Hash a stream in chunks, for verifying what a store holds without loading it whole."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _make_durable_dirs(directory: Path) -> None:
    """Create missing directories and fsync each one's parent, so that a new study's folder
    survives a power cut together with the object acknowledged inside it."""
    missing: list[Path] = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        _fsync_dir(folder.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
