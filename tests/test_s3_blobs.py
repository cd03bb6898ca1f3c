"""The S3 blob store against a real MinIO server on loopback (no mocks).

Each test uses a bucket of its own; the raw minio client stands in for an operator or a second
writer, to look at what the store left on the server and to damage objects behind its back.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from minio import Minio
from minio.commonconfig import COMPLIANCE, ENABLED, GOVERNANCE
from minio.error import S3Error

from storage.errors import BlobNotFound, BlobStoreUnavailable
from storage.s3 import S3BlobStore, S3Location
from tests.pki import Authority
from tests.servers import MINIO_PASSWORD, MINIO_USER, MinioServer, free_port

MIB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_bucket() -> str:
    return f"t-{uuid4().hex[:12]}"


def location(server: MinioServer, bucket: str, **options: Any) -> S3Location:
    return S3Location(
        endpoint=server.endpoint,
        bucket=bucket,
        access_key=MINIO_USER,
        secret_key=MINIO_PASSWORD,
        secure=False,
        **options,
    )


@pytest.fixture
def raw(minio_server: MinioServer) -> Minio:
    """The server seen without the store: an operator's view."""
    return Minio(minio_server.endpoint, MINIO_USER, MINIO_PASSWORD, secure=False)


@pytest.fixture
def bucket() -> str:
    return new_bucket()


@pytest.fixture
def store(minio_server: MinioServer, bucket: str) -> S3BlobStore:
    return S3BlobStore(location(minio_server, bucket, part_size=5 * MIB))


def versions(raw: Minio, bucket: str, key: str) -> list[str]:
    """Version ids of the key's stored objects (delete markers left out)."""
    return [
        str(v.version_id)
        for v in raw.list_objects(bucket, prefix=key, include_version=True)
        if v.object_name == key and not v.is_delete_marker
    ]


# -- storing and reading ---------------------------------------------------------------------------


def test_small_object_round_trip_creates_versioned_bucket(
    store: S3BlobStore, raw: Minio, bucket: str
) -> None:
    assert not raw.bucket_exists(bucket)
    data = b"DICM" + os.urandom(1000)
    stored = store.put("1.2.3/4.5.6/7.8.9.dcm", data, sha(data))
    assert (stored.key, stored.size, stored.sha256) == (
        "1.2.3/4.5.6/7.8.9.dcm",
        len(data),
        sha(data),
    )
    assert store.read("1.2.3/4.5.6/7.8.9.dcm") == data
    assert store.exists("1.2.3/4.5.6/7.8.9.dcm")
    assert raw.get_bucket_versioning(bucket).status == ENABLED


def test_multipart_object_round_trip(store: S3BlobStore, raw: Minio, bucket: str) -> None:
    data = os.urandom(12 * MIB + 123)  # three parts of the 5 MiB part size
    store.put("big/object", data, sha(data))
    assert store.read("big/object") == data
    head = raw.stat_object(bucket, "big/object", extra_headers={"x-amz-checksum-mode": "ENABLED"})
    assert head.metadata is not None
    assert head.metadata["x-amz-meta-sha256"] == sha(data)
    # A multipart object's S3 checksum is the checksum of its three parts' SHA-256 checksums.
    assert head.metadata["x-amz-checksum-type"] == "COMPOSITE"
    assert head.metadata["x-amz-checksum-sha256"].endswith("-3")


def test_open_streams_in_pieces_and_releases_on_close(store: S3BlobStore) -> None:
    data = os.urandom(3 * MIB)
    store.put("stream", data, sha(data))
    pieces = []
    with store.open("stream") as handle:
        while chunk := handle.read(256 * 1024):
            pieces.append(chunk)
    assert b"".join(pieces) == data
    # Many opened-and-closed streams do not exhaust the connection pool.
    for _ in range(50):
        with store.open("stream") as handle:
            assert handle.read(10) == data[:10]


def test_missing_key_is_blob_not_found(store: S3BlobStore) -> None:
    data = b"present"
    store.put("present", data, sha(data))
    assert not store.exists("absent")
    with pytest.raises(BlobNotFound, match=r"blob absent is missing from s3://"):
        store.read("absent")
    with pytest.raises(BlobNotFound):
        store.open("absent")


def test_keys_lists_current_objects(store: S3BlobStore) -> None:
    for key in ("a/1", "a/2", "b/c/3"):
        store.put(key, key.encode(), sha(key.encode()))
    store.delete("a/2")
    assert sorted(store.keys()) == ["a/1", "b/c/3"]
    assert not store.exists("a/2")
    with pytest.raises(BlobNotFound):
        store.read("a/2")


# -- integrity -------------------------------------------------------------------------------------


def test_checksum_reaches_the_server(store: S3BlobStore, raw: Minio, bucket: str) -> None:
    data = b"pixel data" * 100
    store.put("checked", data, sha(data))
    head = raw.stat_object(bucket, "checked", extra_headers={"x-amz-checksum-mode": "ENABLED"})
    assert head.metadata is not None
    expected = base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert head.metadata["x-amz-checksum-sha256"] == expected
    assert head.metadata["x-amz-meta-sha256"] == sha(data)


def test_wrong_digest_is_refused_and_nothing_stored(store: S3BlobStore, raw: Minio) -> None:
    data = b"what was received"
    with pytest.raises(BlobStoreUnavailable, match="Checksum"):
        store.put("wrong", data, sha(b"what was sent"))
    assert not store.exists("wrong")

    big = os.urandom(6 * MIB)  # multipart: refused before any part is sent
    with pytest.raises(BlobStoreUnavailable, match="does not hash"):
        store.put("wrong-big", big, sha(big[:-1]))
    assert not store.exists("wrong-big")
    assert sorted(store.keys()) == []


def test_concurrent_puts_of_one_key_leave_one_version(
    minio_server: MinioServer, raw: Minio, bucket: str
) -> None:
    # A fresh store: the threads also race to prepare the bucket.
    store = S3BlobStore(location(minio_server, bucket))
    data = os.urandom(64 * 1024)
    start = threading.Barrier(8)
    results: list[object] = []

    def put() -> None:
        start.wait()
        try:
            results.append(store.put("same/key", data, sha(data)))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(not isinstance(r, Exception) for r in results), results
    assert len(results) == 8
    assert len(versions(raw, bucket, "same/key")) == 1
    assert store.read("same/key") == data


def test_concurrent_multipart_puts_of_one_key_leave_one_version(
    store: S3BlobStore, raw: Minio, bucket: str
) -> None:
    data = os.urandom(6 * MIB)  # two parts each
    start = threading.Barrier(3)
    errors: list[Exception] = []

    def put() -> None:
        start.wait()
        try:
            store.put("big/same", data, sha(data))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(versions(raw, bucket, "big/same")) == 1
    assert store.read("big/same") == data


def test_different_object_under_a_stored_key_is_refused(
    store: S3BlobStore, raw: Minio, bucket: str
) -> None:
    first = b"first object"
    store.put("immutable", first, sha(first))
    with pytest.raises(BlobStoreUnavailable, match="already holds a different object"):
        store.put("immutable", b"second object", sha(b"second object"))
    assert store.read("immutable") == first
    assert len(versions(raw, bucket, "immutable")) == 1


# -- repair ----------------------------------------------------------------------------------------


def test_restore_after_overwrite_and_after_delete(
    store: S3BlobStore, raw: Minio, bucket: str
) -> None:
    good = os.urandom(4096)
    store.put("study/instance", good, sha(good))
    damaged = b"bit rot" + good[7:]
    raw.put_object(bucket, "study/instance", io.BytesIO(damaged), len(damaged))
    assert store.read("study/instance") == damaged

    assert store.restore("study/instance", sha(good))
    assert store.read("study/instance") == good

    store.delete("study/instance")
    assert not store.exists("study/instance")
    assert store.restore("study/instance", sha(good))
    assert store.read("study/instance") == good
    # Restoring the current intact object again changes nothing.
    count = len(versions(raw, bucket, "study/instance"))
    assert store.restore("study/instance", sha(good))
    assert len(versions(raw, bucket, "study/instance")) == count


def test_restore_without_a_matching_version(
    minio_server: MinioServer, store: S3BlobStore, raw: Minio
) -> None:
    data = b"only this"
    store.put("k", data, sha(data))
    assert not store.restore("k", sha(b"never stored"))
    assert not store.restore("never-written", sha(data))

    # A bucket that was never versioned keeps no earlier copy to go back to.
    plain = new_bucket()
    raw.make_bucket(plain)
    raw.put_object(plain, "k", io.BytesIO(data), len(data))
    raw.put_object(plain, "k", io.BytesIO(b"overwritten"), len(b"overwritten"))
    unversioned = S3BlobStore(location(minio_server, plain))
    assert not unversioned.restore("k", sha(data))
    assert unversioned.read("k") == b"overwritten"


# -- object lock -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [COMPLIANCE, GOVERNANCE])
def test_object_lock_protects_versions(
    minio_server: MinioServer, raw: Minio, bucket: str, mode: str
) -> None:
    store = S3BlobStore(location(minio_server, bucket, object_lock_mode=mode, object_lock_days=1))
    data = os.urandom(2048)
    store.put("locked", data, sha(data))

    config = raw.get_object_lock_config(bucket)
    assert (config.mode, config.duration, config.duration_unit) == (mode, 1, "Days")
    retention = raw.get_object_retention(bucket, "locked")
    assert retention is not None and retention.mode == mode

    [version] = versions(raw, bucket, "locked")
    with pytest.raises(S3Error):
        raw.remove_object(bucket, "locked", version_id=version)
    assert versions(raw, bucket, "locked") == [version]

    # Deleting the current object only hides it; the locked version brings it back.
    store.delete("locked")
    assert not store.exists("locked")
    assert store.restore("locked", sha(data))
    assert store.read("locked") == data


def test_object_lock_on_a_bucket_created_without_it_is_explained(
    minio_server: MinioServer, raw: Minio, bucket: str
) -> None:
    raw.make_bucket(bucket)
    store = S3BlobStore(
        location(minio_server, bucket, object_lock_mode=COMPLIANCE, object_lock_days=1)
    )
    with pytest.raises(BlobStoreUnavailable, match="without object lock"):
        store.check()


# -- an unreachable store --------------------------------------------------------------------------


def impatient_store(endpoint: str) -> S3BlobStore:
    """A store at `endpoint` that gives up after one retry of one second."""
    return S3BlobStore(
        S3Location(
            endpoint=endpoint,
            bucket=new_bucket(),
            access_key=MINIO_USER,
            secret_key=MINIO_PASSWORD,
            secure=False,
            timeout=1,
            retries=1,
        )
    )


def test_unreachable_store_fails_fast_with_the_endpoint() -> None:
    port = free_port()  # nothing listens here
    store = impatient_store(f"127.0.0.1:{port}")
    data = b"x"
    calls: dict[str, Callable[[], object]] = {
        "check": store.check,
        "put": lambda: store.put("k", data, sha(data)),
        "read": lambda: store.read("k"),
        "exists": lambda: store.exists("k"),
        "keys": lambda: list(store.keys()),
    }
    for name, call in calls.items():
        began = time.monotonic()
        with pytest.raises(BlobStoreUnavailable, match=rf"127\.0\.0\.1:{port}.*unreachable"):
            call()
        assert time.monotonic() - began < 15, name
    with pytest.raises(BlobStoreUnavailable, match=r"^S3 store s3://.* is unreachable: "):
        store.check()


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A server that accepts connections and never answers: a hung S3 node."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener


def test_silent_store_times_out_and_construction_stays_offline(
    silent_server: socket.socket,
) -> None:
    host, port = silent_server.getsockname()
    store = impatient_store(f"{host}:{port}")
    silent_server.settimeout(0.2)
    with pytest.raises(TimeoutError):
        silent_server.accept()  # the constructor made no connection

    for call in (store.check, lambda: store.read("k")):
        began = time.monotonic()
        with pytest.raises(BlobStoreUnavailable, match=f"{port}.*unreachable"):
            call()
        assert time.monotonic() - began < 15


# -- HTTPS, as production runs it --------------------------------------------------------------


def test_https_with_the_configured_ca_and_refused_without_it(tmp_path: Path) -> None:
    """Production talks to the store over HTTPS: the CA configured in `s3_ca_file` is trusted
    (a single PUT and a multipart one go up, checked, and read back), and a server whose
    certificate another CA signed is refused with a message that says why."""
    ours, theirs = Authority(tmp_path, "ours"), Authority(tmp_path, "theirs")
    served = ours.issue("minio", server=True)
    server = MinioServer.start(tls=(served.cert, served.key, ours.pem))
    try:
        trusted = S3BlobStore(
            replace(
                location(server, new_bucket(), part_size=5 * MIB),
                secure=True,
                ca_file=str(ours.pem),
            )
        )
        small, large = b"tannbilde" * 1000, os.urandom(11 * MIB)  # one PUT; three parts
        trusted.put("dicom/a/b/small.dcm", small, sha(small))
        trusted.put("dicom/a/b/large.dcm", large, sha(large))
        assert trusted.read("dicom/a/b/small.dcm") == small
        assert trusted.read("dicom/a/b/large.dcm") == large
        trusted.check()

        stranger = S3BlobStore(
            replace(
                location(server, new_bucket(), timeout=2, retries=0),
                secure=True,
                ca_file=str(theirs.pem),
            )
        )
        with pytest.raises(BlobStoreUnavailable, match="TLS") as refused:
            stranger.check()
        assert server.endpoint in str(refused.value)
    finally:
        server.stop()
