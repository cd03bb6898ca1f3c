"""The S3 blob store: objects in a bucket of any plain S3 server (MinIO, Ceph RGW, SeaweedFS,
AIStor), for the scale-out backend where several nodes share one store.

Only plain S3 operations are used (no vendor admin API), so the server can be swapped. What the
filesystem store gets from fsync and rename, this store gets from the server:

* Integrity in transit: every PUT carries the caller's SHA-256 (`x-amz-checksum-sha256`, per part
  for multipart uploads), so the server refuses bytes that were damaged on the way and stores
  nothing. The hex digest is also kept as user metadata (`x-amz-meta-sha256`), so fsck and
  migration can compare digests without reading the object.
* Write-once: PUTs are conditional (`If-None-Match: *`), so two nodes storing the same key at once
  leave one version, and a different object under an existing key is refused, never overwritten.
* Repair: the bucket is versioned, so an earlier intact version of a damaged or deleted object can
  be made current again (`restore`, used by `arkiv fsck --repair`); with object lock the versions
  cannot be removed during the retention period, not even by an administrator (COMPLIANCE).

Construction never touches the network: a node must start, and say clearly what is wrong, while
the store is down. The bucket is prepared lazily on the first write or readiness check.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import math
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast
from xml.etree import ElementTree as ET

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import COMPLIANCE, ENABLED, GOVERNANCE, CopySource
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.helpers import DictType, check_bucket_name, md5sum_hash
from minio.objectlockconfig import DAYS, ObjectLockConfig
from minio.versioningconfig import VersioningConfig
from minio.xml import Element, SubElement, findtext, getbytes

from storage.blobs import StoredBlob, validate_key
from storage.errors import BlobNotFound, BlobStoreUnavailable

_MIN_PART = 5 * 1024 * 1024  # S3's smallest part (all but the last)
_MAX_PART = 5 * 1024 * 1024 * 1024  # S3's largest part and largest single PUT
_CHUNK = 1 << 20
_CONTENT_TYPE = "application/octet-stream"
_SHA256_META = "x-amz-meta-sha256"
_MISSING_OBJECT = frozenset({"NoSuchKey", "NoSuchVersion"})
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
)
# Conditional PUTs that lose a race: the key holds an object now (412), or the server asks the
# writer to try again because another conditional write was in flight (409).
_ALREADY_STORED = "PreconditionFailed"
_CONDITIONAL_CONFLICT = "ConditionalRequestConflict"
_PUT_ATTEMPTS = 3
_PROBE_PREFIX = "arkiv-probe/"
"""Keys of the write probes readiness makes while writes fail; not archive objects."""
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Transport failures (urllib3's errors, sockets) and answers that are not S3 (a proxy's page,
# malformed XML): both mean the store cannot be used now.
_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (urllib3.exceptions.HTTPError, OSError)
_SERVER_ERRORS: tuple[type[Exception], ...] = (MinioException, ET.ParseError)
_OBJECT_LOCK_MODES = (GOVERNANCE, COMPLIANCE)


@dataclass(frozen=True)
class S3Location:
    """Where the bucket is and how to talk to it; built from the `s3_*` settings."""

    endpoint: str  # "host:port"
    bucket: str
    access_key: str
    secret_key: str
    secure: bool = True  # HTTPS
    region: str = ""
    ca_file: str = ""  # CA bundle for the server's certificate; "" = system/certifi
    object_lock_mode: str = ""  # "", "GOVERNANCE" or "COMPLIANCE"
    object_lock_days: int = 0
    part_size: int = 64 * 1024 * 1024  # objects larger than this go up in parts of this size
    timeout: float = 10.0  # connect and read timeout per request, seconds
    retries: int = 3  # retries after the first attempt, exponential backoff


class _PutRefused(Exception):
    """A conditional write found an object under the key already (or lost track of its own
    multipart upload): what is stored there decides whether the put succeeded."""


class _PutConflict(Exception):
    """The server asked to repeat a conditional write that raced with another one."""


class S3BlobStore:
    """Blobs as objects in an S3 bucket; satisfies `storage.blobs.BlobStore`.

    Thread-safe: the minio client and its urllib3 pool are shared by all ingest threads, and
    `prepare` runs once under a lock.
    """

    def __init__(self, location: S3Location) -> None:
        """Check the configuration and build the client; no request is made here, so a node
        starts (and reports the store as not ready) while the server is down."""
        mode = location.object_lock_mode.upper()
        if mode and mode not in _OBJECT_LOCK_MODES:
            raise ValueError(
                f"S3 object lock mode {location.object_lock_mode!r} is not one of "
                f"{', '.join(_OBJECT_LOCK_MODES)} (or empty for no object lock)"
            )
        if mode and location.object_lock_days < 1:
            raise ValueError(
                f"S3 object lock mode {mode} needs a retention of at least one day "
                f"(object_lock_days is {location.object_lock_days})"
            )
        if not _MIN_PART <= location.part_size <= _MAX_PART:
            raise ValueError(
                f"S3 part size {location.part_size} is outside what S3 allows "
                f"({_MIN_PART} to {_MAX_PART} bytes)"
            )
        if location.timeout <= 0 or location.retries < 0:
            raise ValueError("S3 timeout must be positive and retries not negative")
        try:
            check_bucket_name(location.bucket, strict=True)
        except ValueError as exc:
            raise ValueError(f"S3 bucket name {location.bucket!r} is not valid: {exc}") from exc
        self.location = location
        self._bucket = location.bucket
        self._lock_mode = mode
        self._prepare_lock = threading.Lock()
        self._prepared = False
        self._write_failure: str | None = None
        """Why the last write failed, until one succeeds: a store that answers reads but has
        lost write quorum is not ready, and only a write shows it."""
        try:
            self._client = Minio(
                location.endpoint,
                access_key=location.access_key or None,
                secret_key=location.secret_key or None,
                secure=location.secure,
                region=location.region or None,
                http_client=_pool(location),
            )
        except ValueError as exc:
            raise ValueError(f"S3 endpoint {location.endpoint!r} is not valid: {exc}") from exc

    # -- preparation ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Make the bucket ready: created if missing (with object lock when configured, which
        S3 only allows at creation), versioned, and with the configured default retention.

        Idempotent and thread-safe; every step first reads the current state, so a credential
        allowed to write objects but not to change the bucket works with a bucket an operator
        prepared. Raises `BlobStoreUnavailable` saying what to do.
        """
        if self._prepared:
            return
        with self._prepare_lock:
            if self._prepared:
                return
            self._ensure_bucket()
            self._ensure_versioning()
            if self._lock_mode:
                self._ensure_retention()
            self._prepared = True

    def _ensure_bucket(self) -> None:
        try:
            if self._client.bucket_exists(self._bucket):
                return
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
            raise self._unavailable(exc, f"look up bucket {self._bucket}") from exc
        try:
            self._client.make_bucket(
                self._bucket,
                location=self.location.region or None,
                object_lock=bool(self._lock_mode),
            )
        except S3Error as exc:
            if exc.code == "BucketAlreadyOwnedByYou":  # another node created it just now
                return
            hint = (
                "the name belongs to another account: choose another bucket name"
                if exc.code == "BucketAlreadyExists"
                else "create the bucket on the server (with object lock if configured) "
                "or allow these credentials to create it"
            )
            raise BlobStoreUnavailable(
                f"S3 store {self.describe()} cannot create bucket {self._bucket}: "
                f"{_reason(exc)}; {hint}"
            ) from exc
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
            raise self._unavailable(exc, f"create bucket {self._bucket}") from exc

    def _ensure_versioning(self) -> None:
        """Versions are what `restore` goes back to; without them a damaged object is lost."""
        try:
            if self._client.get_bucket_versioning(self._bucket).status == ENABLED:
                return
            self._client.set_bucket_versioning(self._bucket, VersioningConfig(ENABLED))
        except S3Error as exc:
            raise BlobStoreUnavailable(
                f"S3 store {self.describe()} cannot turn on versioning of bucket {self._bucket}: "
                f"{_reason(exc)}; enable versioning on the server or allow these credentials "
                "to (fsck --repair restores damaged objects from earlier versions)"
            ) from exc
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
            raise self._unavailable(exc, f"turn on versioning of bucket {self._bucket}") from exc

    def _ensure_retention(self) -> None:
        days = self.location.object_lock_days
        try:
            current = self._client.get_object_lock_config(self._bucket)
        except S3Error as exc:
            if exc.code == "ObjectLockConfigurationNotFoundError":
                raise BlobStoreUnavailable(
                    f"S3 store {self.describe()}: bucket {self._bucket} exists without object "
                    "lock, which S3 only turns on when a bucket is created; point the archive at "
                    "a new bucket (it creates it with object lock) or leave object lock off"
                ) from exc
            raise self._unavailable(exc, f"read the object lock of bucket {self._bucket}") from exc
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
            raise self._unavailable(exc, f"read the object lock of bucket {self._bucket}") from exc
        if (current.mode, current.duration, current.duration_unit) == (self._lock_mode, days, DAYS):
            return
        try:
            self._client.set_object_lock_config(
                self._bucket, ObjectLockConfig(self._lock_mode, days, DAYS)
            )
        except S3Error as exc:
            raise BlobStoreUnavailable(
                f"S3 store {self.describe()} cannot set the default retention "
                f"({self._lock_mode}, {days} days) of bucket {self._bucket}: {_reason(exc)}; "
                "set it on the server or allow these credentials to"
            ) from exc
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
            raise self._unavailable(exc, f"set the retention of bucket {self._bucket}") from exc

    # -- writing -------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, sha256: str) -> StoredBlob:
        """Store `data` under `key` once; `sha256` (hex) is the caller's digest of it.

        The server checks the digest against the bytes it received and stores nothing on a
        mismatch. Storing the same object again (a retry, or another node ingesting the same
        instance) succeeds without a second version; a different object under the same key is
        refused, because objects are immutable.
        """
        validate_key(key)
        digest = _digest(sha256)
        try:
            stored = self._store(key, data, sha256.lower(), digest)
        except BlobStoreUnavailable as exc:
            self._write_failure = str(exc)
            raise
        self._write_failure = None
        return stored

    def _store(self, key: str, data: bytes, sha256: str, digest: bytes) -> StoredBlob:
        if not self._prepared:
            self.prepare()
        for _attempt in range(_PUT_ATTEMPTS):
            try:
                if len(data) > self.location.part_size:
                    self._put_multipart(key, data, sha256, digest)
                else:
                    self._put_single(key, data, sha256, digest)
                return StoredBlob(key=key, size=len(data), sha256=sha256)
            except _PutConflict:
                continue
            except _PutRefused:
                stored = self.stored_sha256(key)
                if stored is None:  # deleted again in between: write it anew
                    continue
                if stored == sha256:
                    return StoredBlob(key=key, size=len(data), sha256=sha256)
                raise BlobStoreUnavailable(
                    f"S3 store {self.describe()} already holds a different object under {key} "
                    f"(sha256 {stored}, not {sha256}); objects are never overwritten, so this "
                    "one was not stored"
                ) from None
        raise BlobStoreUnavailable(
            f"S3 store {self.describe()} could not store blob {key}: other writes to the same "
            f"key kept conflicting ({_PUT_ATTEMPTS} attempts)"
        )

    def _put_single(self, key: str, data: bytes, sha256: str, digest: bytes) -> None:
        headers: DictType = {
            "Content-Type": _CONTENT_TYPE,
            "x-amz-checksum-sha256": _b64(digest),
            _SHA256_META: sha256,
            "If-None-Match": "*",
        }
        try:
            self._client._put_object(self._bucket, key, data, headers)
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
            _raise_if_conditional(exc)
            raise self._unavailable(exc, f"store blob {key}") from exc

    def _put_multipart(self, key: str, data: bytes, sha256: str, digest: bytes) -> None:
        """Upload in parts, each with its own SHA-256 the server verifies.

        S3 has no whole-object SHA-256 for multipart uploads (only a checksum of the part
        checksums), so the caller's digest is verified here before anything is sent; the parts
        are then hashed from the same bytes and verified by the server on arrival.
        """
        if hashlib.sha256(data).digest() != digest:
            raise BlobStoreUnavailable(
                f"S3 store {self.describe()} did not store blob {key}: its content does not "
                f"hash to the given sha256 {sha256} (damaged before upload)"
            )
        # Parts are many megabytes: find an object already stored before sending them again.
        if self.stored_sha256(key) is not None:
            raise _PutRefused
        size = self.location.part_size
        try:
            upload_id = self._client._create_multipart_upload(
                self._bucket,
                key,
                {
                    "Content-Type": _CONTENT_TYPE,
                    "x-amz-checksum-algorithm": "SHA256",
                    _SHA256_META: sha256,
                },
            )
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
            raise self._unavailable(exc, f"start the upload of blob {key}") from exc
        try:
            parts: list[tuple[int, str, str]] = []
            for number, start in enumerate(range(0, len(data), size), 1):
                chunk = data[start : start + size]
                checksum = _b64(hashlib.sha256(chunk).digest())
                etag = self._client._upload_part(
                    self._bucket,
                    key,
                    chunk,
                    {"x-amz-checksum-sha256": checksum},
                    upload_id,
                    number,
                )
                parts.append((number, etag, checksum))
            self._complete_multipart(key, upload_id, parts)
        except BaseException as exc:
            self._abort_multipart(key, upload_id)
            if isinstance(exc, (*_TRANSPORT_ERRORS, *_SERVER_ERRORS)):
                _raise_if_conditional(exc)
                raise self._unavailable(exc, f"store blob {key}") from exc
            raise

    def _complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str, str]]
    ) -> None:
        """CompleteMultipartUpload with each part's checksum (minio-py's own omits them) and
        `If-None-Match: *`, so the same race rules hold as for a single PUT."""
        element = Element("CompleteMultipartUpload")
        for number, etag, checksum in parts:
            part = SubElement(element, "Part")
            SubElement(part, "PartNumber", str(number))
            SubElement(part, "ETag", f'"{etag}"')
            SubElement(part, "ChecksumSHA256", checksum)
        body = getbytes(element)
        headers: DictType = {
            "Content-Type": "application/xml",
            "Content-MD5": cast(str, md5sum_hash(body)),
            "If-None-Match": "*",
        }
        try:
            response = self._client._execute(
                "POST",
                self._bucket,
                key,
                body=body,
                headers=headers,
                query_params={"uploadId": upload_id},
            )
        except S3Error as exc:
            if exc.code == "NoSuchUpload":  # completed by an earlier attempt whose answer was lost
                raise _PutRefused from exc
            raise
        # S3 may answer 200 and still fail: the error is then the body of the answer.
        root = ET.fromstring(response.data.decode())
        if root.tag.rsplit("}", 1)[-1] == "Error":
            code = findtext(root, "Code") or "InternalError"
            if code == _ALREADY_STORED:
                raise _PutRefused
            if code == _CONDITIONAL_CONFLICT:
                raise _PutConflict
            raise BlobStoreUnavailable(
                f"S3 store {self.describe()} failed to complete the upload of blob {key}: "
                f"{code}: {findtext(root, 'Message') or ''}"
            )

    def _abort_multipart(self, key: str, upload_id: str) -> None:
        """Best effort: parts of an upload left behind only cost space until the server's
        lifecycle rule (or an operator) removes them; the original error matters more."""
        try:
            self._client._abort_multipart_upload(self._bucket, key, upload_id)
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS):
            pass

    def stored_sha256(self, key: str) -> str | None:
        """The digest of the current object under `key` (None when there is none): its
        metadata when a writer recorded it, otherwise hashed from its content."""
        try:
            stat = self._client.stat_object(self._bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING_OBJECT:
                return None
            raise self._unavailable(exc, f"look up blob {key}") from exc
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
            raise self._unavailable(exc, f"look up blob {key}") from exc
        recorded = stat.metadata.get(_SHA256_META) if stat.metadata is not None else None
        if recorded:
            return str(recorded).lower()
        try:
            return self._hash_version(key, stat.version_id)
        except BlobNotFound:
            return None

    # -- reading -------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        """A stream of the object; closing it releases the connection."""
        return self._open_version(key, None)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with self._open_version(key, None, start, length) as handle:
            return handle.read()

    def _open_version(
        self, key: str, version_id: str | None, offset: int = 0, length: int = 0
    ) -> BinaryIO:
        validate_key(key)
        try:
            response = self._client.get_object(
                self._bucket, key, version_id=version_id, offset=offset, length=length
            )
        except S3Error as exc:
            if exc.code in _MISSING_OBJECT:
                raise BlobNotFound(f"blob {key} is missing from {self.describe()}") from exc
            raise self._unavailable(exc, f"read blob {key}") from exc
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
            raise self._unavailable(exc, f"read blob {key}") from exc
        return cast(BinaryIO, io.BufferedReader(_ResponseReader(response, self, key), _CHUNK))

    def read(self, key: str) -> bytes:
        with self.open(key) as handle:
            return handle.read()

    def exists(self, key: str) -> bool:
        """Whether `key` holds a current object (a delete marker does not count)."""
        validate_key(key)
        if not self._prepared:  # a fresh bucket is made, not reported missing
            self.prepare()
        try:
            self._client.stat_object(self._bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING_OBJECT:
                return False
            raise self._unavailable(exc, f"look up blob {key}") from exc
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
            raise self._unavailable(exc, f"look up blob {key}") from exc
        return True

    def keys(self) -> Iterator[str]:
        """Every current object's key (ListObjectsV2 shows no delete markers)."""
        if not self._prepared:
            self.prepare()
        try:
            for item in self._client.list_objects(self._bucket, recursive=True):
                if not item.is_dir and not str(item.object_name).startswith(_PROBE_PREFIX):
                    yield str(item.object_name)
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
            raise self._unavailable(exc, f"list bucket {self._bucket}") from exc

    # -- removal and repair --------------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Remove the current object. In a versioned bucket this leaves a delete marker and
        keeps the versions (which object lock may also protect), so `restore` can undo it."""
        validate_key(key)
        try:
            self._client.remove_object(self._bucket, key)
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
            raise self._unavailable(exc, f"delete blob {key}") from exc

    def restore(self, key: str, sha256: str) -> bool:
        """Make the newest version of `key` whose content hashes to `sha256` current again.

        Versions are checked by their content, not their recorded digest, because what is being
        repaired may be exactly a version whose bytes no longer match its metadata. The chosen
        version is copied over the key (a new current version), so no history is lost. False
        when no version matches, e.g. when the bucket was never versioned.
        """
        validate_key(key)
        wanted = sha256.lower()
        try:
            listed = list(
                self._client.list_objects(
                    self._bucket, prefix=key, recursive=True, include_version=True
                )
            )
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
            raise self._unavailable(exc, f"list the versions of blob {key}") from exc
        # S3 lists a key's versions newest first; delete markers come in a list of their own.
        versions = [v for v in listed if v.object_name == key and not v.is_delete_marker]
        for version in versions:
            try:
                found = self._hash_version(key, version.version_id)
            except BlobNotFound:  # removed since the listing
                continue
            if found != wanted:
                continue
            if str(version.is_latest).lower() == "true":
                return True  # already the current object: nothing to undo
            try:
                self._client.copy_object(
                    self._bucket,
                    key,
                    CopySource(self._bucket, key, version_id=version.version_id),
                )
            except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
                raise self._unavailable(exc, f"restore blob {key}") from exc
            return True
        return False

    def _hash_version(self, key: str, version_id: str | None) -> str:
        digest = hashlib.sha256()
        with self._open_version(key, version_id) as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest()

    # -- health --------------------------------------------------------------------------------

    def check(self) -> None:
        """Readiness: the bucket is prepared and answers now.

        Bounded by the client's timeouts and retries (about timeout × (retries + 1) when the
        server does not answer at all, much less when it refuses connections).
        """
        try:
            if not self._prepared:
                self.prepare()
            if not self._client.bucket_exists(self._bucket):
                raise BlobStoreUnavailable(
                    f"S3 store {self.describe()} is unreachable: bucket {self._bucket} no longer "
                    "exists (it was removed on the server)"
                )
            if self._write_failure is not None:
                # Writes failed last time: only a write proves they work again. Each probe is a
                # new key (a conditional PUT to a key that exists could be answered from read
                # quorum alone), empty, written only while the store is failing, then deleted.
                probe = f"{_PROBE_PREFIX}{uuid.uuid4().hex}"
                self.put(probe, b"", _EMPTY_SHA256)
                with contextlib.suppress(BlobStoreUnavailable):
                    self.delete(probe)
        except BlobStoreUnavailable as exc:
            # One form for readiness probes and operators: "... is unreachable: <why>".
            detail = str(exc).removeprefix(f"S3 store {self.describe()}").lstrip(" :")
            detail = detail.removeprefix("is unreachable: ")
            raise BlobStoreUnavailable(
                f"S3 store {self.describe()} is unreachable: {detail}"
            ) from exc
        except (*_TRANSPORT_ERRORS, *_SERVER_ERRORS) as exc:
            raise BlobStoreUnavailable(
                f"S3 store {self.describe()} is unreachable: {_reason(exc)}"
            ) from exc

    def describe(self) -> str:
        scheme = "https" if self.location.secure else "http"
        return f"s3://{self._bucket} at {scheme}://{self.location.endpoint}"

    def _unavailable(self, exc: BaseException, action: str) -> BlobStoreUnavailable:
        """An error an operator can act on: where, what was attempted, and why it failed."""
        if isinstance(exc, _TRANSPORT_ERRORS):
            return BlobStoreUnavailable(
                f"S3 store {self.describe()} is unreachable: {_reason(exc)}; could not {action}"
            )
        return BlobStoreUnavailable(
            f"S3 store {self.describe()} refused to {action}: {_reason(exc)}"
        )


class _ResponseReader(io.RawIOBase):
    """An object's body as a raw stream; `close` gives the connection back to the pool (or
    drops it when the body was not read to the end)."""

    def __init__(self, response: Any, store: S3BlobStore, key: str) -> None:
        super().__init__()
        self._response = response
        self._store = store
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return int(self._response.readinto(buffer))
        except _TRANSPORT_ERRORS as exc:
            raise self._store._unavailable(exc, f"read blob {self._key}") from exc

    def close(self) -> None:
        if not self.closed:
            try:
                self._response.close()
                self._response.release_conn()
            finally:
                super().close()


def _pool(location: S3Location) -> urllib3.PoolManager:
    """The HTTP client: bounded timeouts and retries, so a store that is down is reported in
    seconds instead of minio-py's default minutes, and enough connections for ingest threads.

    All methods are retried (PUT and POST included): every write here is idempotent, because
    writes are conditional on the key being free and a repeated one is recognised by its digest.
    """
    retries = urllib3.Retry(
        total=location.retries,
        connect=location.retries,
        read=location.retries,
        status=location.retries,
        allowed_methods=None,
        status_forcelist=(500, 502, 503, 504),
        backoff_factor=0.25,
        backoff_max=2.0,
        retry_after_max=max(1, math.ceil(location.timeout)),
        raise_on_redirect=True,
    )
    timeout = urllib3.Timeout(connect=location.timeout, read=location.timeout)
    if location.secure:
        return urllib3.PoolManager(
            num_pools=4,
            maxsize=32,
            timeout=timeout,
            retries=retries,
            cert_reqs="CERT_REQUIRED",
            ca_certs=location.ca_file or certifi.where(),
        )
    return urllib3.PoolManager(num_pools=4, maxsize=32, timeout=timeout, retries=retries)


def _raise_if_conditional(exc: BaseException) -> None:
    """Turn the answers of a lost conditional-write race into their own signals."""
    status: int | None = None
    code: str | None = None
    if isinstance(exc, S3Error):
        code, status = exc.code, exc.response.status
    elif isinstance(exc, ServerError):
        status = exc.status_code
    if code == _ALREADY_STORED or status == 412:
        raise _PutRefused from exc
    if code == _CONDITIONAL_CONFLICT:
        raise _PutConflict from exc


def _digest(sha256: str) -> bytes:
    try:
        digest = bytes.fromhex(sha256)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError(f"{sha256!r} is not a hex SHA-256 digest")
    return digest


def _b64(digest: bytes) -> str:
    """S3's checksum headers carry the raw digest in base64 (not hex)."""
    return base64.b64encode(digest).decode("ascii")


# urllib3 puts the connection object in its messages: "<HTTPConnection(host=..., port=...) at
# 0x7f...>: Failed to establish a new connection: [Errno 111] Connection refused".
_OBJECT_REPR = re.compile(r"<[^<>]*>[,:]?\s*|^\w+\(host=[^)]*\)[,:]?\s*")


def _reason(exc: BaseException) -> str:
    """A short human reason: S3's code and message, or the network failure without urllib3's
    object addresses."""
    if isinstance(exc, S3Error):
        text = f"{exc.code}: {exc.message}" if exc.message else str(exc.code)
        if exc.code == "AccessDenied":
            return f"{text} (check the access key's permissions on the bucket)"
        if exc.code in _CREDENTIAL_CODES:
            return f"{text} (check the access key and secret key)"
        if exc.code == "NoSuchBucket":
            return f"{text} (the bucket does not exist)"
        return text
    if isinstance(exc, ServerError):
        return f"server error (HTTP {exc.status_code})"
    if isinstance(exc, InvalidResponseError):
        return f"the answer was not S3's: {exc}"
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        cause = exc.reason if exc.reason is not None else exc
        return f"{_network_reason(cause)}, retries exhausted"
    return _network_reason(exc)


def _network_reason(exc: BaseException) -> str:
    parts = [str(a) for a in exc.args if isinstance(a, str | BaseException)] or [str(exc)]
    text = _OBJECT_REPR.sub("", parts[-1]).strip() or type(exc).__name__
    if isinstance(exc, urllib3.exceptions.SSLError) and "TLS" not in text:
        text = f"TLS failed: {text} (check the CA bundle and the server's name)"
    return text
