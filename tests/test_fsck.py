"""`arkiv fsck`: finds what a crash between blob and index left behind, objects whose bytes no
longer match the SHA-256 recorded at ingest (the scrub), and mends what it can."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from arkiv.audit import Actor, Outcome
from arkiv.cli import build_parser
from arkiv.config import Settings
from arkiv.consistency import MISMATCH, RateLimit
from arkiv.errors import ArchiveUnavailable
from arkiv.services import Archive
from storage.errors import IndexUnavailable
from storage.index import IndexTransaction
from storage.records import AuditQuery, StoredInstance, StudyQuery
from tests.dicom_factory import Spec, encode, make_dataset, synthetic_national_id

pytestmark = pytest.mark.both_backends  # the tests that take the `archive` fixture run on both

MODALITY = Actor(name="SENSOR1", kind="dicom-ae", county="vestfold", address="127.0.0.1")
SECURITY_ALERT = "110113"


def _fsck(data: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arkiv.cli", "fsck", "--data", str(data), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _crash_after_the_blob(archive: Archive, spec: Spec, monkeypatch: pytest.MonkeyPatch) -> None:
    """The object is durable, then the process dies before the index commits."""

    def power_cut(*_args: object, **_kwargs: object) -> bool:
        raise IndexUnavailable("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(IndexTransaction, "add_instance", power_cut)
        with pytest.raises(ArchiveUnavailable):
            archive.ingest.ingest_dicom(encode(make_dataset(spec)), MODALITY)


def test_repair_indexes_what_a_crash_left_and_reports_what_it_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    archive = Archive(Settings(data_dir=data))
    kept, orphan = Spec(), Spec()
    archive.ingest.ingest_dicom(encode(make_dataset(kept)), MODALITY)
    _crash_after_the_blob(archive, orphan, monkeypatch)
    junk = data / "blobs" / "objects" / "dicom" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.0000.dcm"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"not a DICOM object")
    archive.close()

    found = _fsck(data)
    assert found.returncode == 0, found.stdout  # unindexed objects are leftovers, not losses
    assert "3 objects, 1 indexed, 2 unindexed, 0 missing" in found.stdout

    repaired = _fsck(data, "--repair")
    assert repaired.returncode == 1  # the junk file cannot be mended, and says so
    assert "re-indexed" in repaired.stdout
    assert "CANNOT re-index dicom/1.2.3/1.2.3.4/1.2.3.4.5.0000.dcm" in repaired.stdout

    archive = Archive(Settings(data_dir=data))
    [instance] = archive.index.find_instances(StudyQuery(sop_uids=(orphan.sop_uid,)))
    assert archive.blobs.read(instance.blob.key) == encode(make_dataset(orphan))
    [event] = archive.index.find_audit_events(AuditQuery(actor="arkiv fsck"))
    assert event.patient_ids == (orphan.patient_id,)
    assert archive.audit.verify().ok
    archive.close()


def test_an_index_row_without_its_object_is_reported(tmp_path: Path) -> None:
    data = tmp_path / "data"
    archive = Archive(Settings(data_dir=data))
    archive.ingest.ingest_dicom(encode(make_dataset(Spec())), MODALITY)
    [key] = list(archive.blobs.keys())
    archive.close()
    (data / "blobs" / "objects" / key).unlink()

    result = _fsck(data, "--repair")
    assert result.returncode == 1
    assert f"MISSING object the index refers to (resend it from its source): {key}" in result.stdout


# -- the scrub -------------------------------------------------------------------------------------


def _store(archive: Archive, spec: Spec) -> StoredInstance:
    archive.ingest.ingest_dicom(encode(make_dataset(spec)), MODALITY)
    [instance] = archive.index.find_instances(StudyQuery(sop_uids=(spec.sop_uid,)))
    return instance


def _raw_s3(backend: dict[str, Any]) -> Minio:
    """A client of the bucket that bypasses the archive, as an intruder or a faulty tool would."""
    return Minio(
        backend["s3_endpoint"],
        access_key=backend["s3_access_key"],
        secret_key=backend["s3_secret_key"],
        secure=False,
    )


def _damage(archive: Archive, backend: dict[str, Any], key: str) -> bytes:
    """Flip one byte of the stored object behind the archive's back; return the intact bytes.

    On S3 the damaged bytes become a new version of the key (the bucket is versioned), so the
    intact version is still there for repair; on the filesystem the file itself is overwritten.
    """
    intact = archive.blobs.read(key)
    damaged = bytearray(intact)
    damaged[len(damaged) // 2] ^= 0xFF
    if backend:
        _raw_s3(backend).put_object(
            backend["s3_bucket"], key, BytesIO(bytes(damaged)), len(damaged)
        )
    else:
        (archive.settings.data_dir / "blobs" / "objects" / key).write_bytes(bytes(damaged))
    assert archive.blobs.read(key) != intact
    return intact


def _remove(archive: Archive, backend: dict[str, Any], key: str) -> None:
    if backend:  # a delete marker hides the object; its versions remain
        _raw_s3(backend).remove_object(backend["s3_bucket"], key)
    else:
        (archive.settings.data_dir / "blobs" / "objects" / key).unlink()
    assert not archive.blobs.exists(key)


def test_the_scrub_finds_a_corrupt_object_and_repair_restores_it_where_the_store_can(
    archive: Archive, backend: dict[str, Any]
) -> None:
    damaged, sound = _store(archive, Spec()), _store(archive, Spec(seed=2))
    intact = _damage(archive, backend, damaged.blob.key)

    plain = archive.consistency.check()
    assert plain.healthy and not plain.scrubbed and plain.corrupt == []  # only a scrub reads

    seen: list[tuple[int, int, int]] = []
    found = archive.consistency.check(scrub=True, progress=lambda *p: seen.append(p))
    assert found.corrupt == [damaged.blob.key]
    assert found.checked == 2 and found.missing == [] and not found.healthy
    assert seen == [(0, 2, 0), (1, 2, seen[1][2]), (2, 2, found.bytes_read)]

    repaired = archive.consistency.check(repair=True, scrub=True)
    assert repaired.corrupt == [damaged.blob.key]
    if backend:  # versioned S3: the intact version is current again, checked by its hash
        assert repaired.restored == [damaged.blob.key] and repaired.healthy
        assert archive.blobs.read(damaged.blob.key) == intact
        assert archive.consistency.check(scrub=True).healthy
    else:  # one copy on disk: the operator is told what to do
        assert repaired.restored == [] and not repaired.healthy
        reason = repaired.unrepairable[damaged.blob.key]
        assert f"no intact copy in {archive.blobs.describe()}" in reason
        assert "resend the study from the modality or restore the object from backup" in reason
    assert hashlib.sha256(archive.blobs.read(sound.blob.key)).hexdigest() == sound.blob.sha256


def test_a_damaged_conflict_object_is_an_alert_naming_its_patient(
    archive: Archive, backend: dict[str, Any]
) -> None:
    """An object kept for review (another object under a stored SOP Instance UID) has no
    instance row of its own; its alert still names the study's patient and county."""
    kept = _store(archive, Spec(patient_id=synthetic_national_id(date(1972, 5, 6), 300)))
    other = Spec(
        patient_id=kept.patient_id,
        study_uid=kept.study_uid,
        series_uid=kept.series_uid,
        sop_uid=kept.sop_uid,
        seed=99,
    )
    archive.ingest.ingest_dicom(encode(make_dataset(other)), MODALITY)
    [conflict] = set(archive.index.blob_digests()) - {kept.blob.key}
    _damage(archive, backend, conflict)

    assert archive.consistency.check(scrub=True).corrupt == [conflict]
    [event] = archive.index.find_audit_events(AuditQuery(event_id=SECURITY_ALERT))
    assert event.details["blob_key"] == conflict
    assert event.details["sop_uid"] == kept.sop_uid
    assert event.patient_ids == (kept.patient_id,)
    assert event.study_uids == (kept.study_uid,)
    assert kept.county in event.counties


def test_each_mismatch_is_a_security_alert_and_a_line_in_the_log(
    archive: Archive, backend: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    first = _store(archive, Spec(patient_id=synthetic_national_id(date(1961, 2, 3), 100)))
    second = _store(archive, Spec(patient_id=synthetic_national_id(date(1984, 7, 9), 200)))
    for instance in (first, second):
        _damage(archive, backend, instance.blob.key)

    with caplog.at_level("ERROR", logger="arkiv.consistency"):
        report = archive.consistency.check(scrub=True)
    assert sorted(report.corrupt) == sorted([first.blob.key, second.blob.key])
    for instance in (first, second):
        assert any(instance.blob.key in r.getMessage() for r in caplog.records)

    events = archive.index.find_audit_events(AuditQuery(event_id=SECURITY_ALERT))
    assert len(events) == 2
    by_key = {e.details["blob_key"]: e for e in events}
    for instance in (first, second):
        event = by_key[instance.blob.key]
        assert (event.actor, event.actor_kind) == ("arkiv fsck", "system")
        assert event.outcome == Outcome.SERIOUS_FAILURE
        assert event.outcome_description == MISMATCH
        assert event.patient_ids == (instance.patient_id,)
        assert event.study_uids == (instance.study_uid,)
        assert instance.county in event.counties
        assert event.details["expected_sha256"] == instance.blob.sha256
        assert (
            event.details["actual_sha256"]
            == hashlib.sha256(archive.blobs.read(instance.blob.key)).hexdigest()
        )
        assert event.details["sop_uid"] == instance.sop_uid
    assert archive.audit.verify().ok


def test_a_deleted_object_is_missing_and_repair_brings_it_back_where_the_store_can(
    archive: Archive, backend: dict[str, Any]
) -> None:
    instance = _store(archive, Spec())
    data = archive.blobs.read(instance.blob.key)
    _remove(archive, backend, instance.blob.key)

    found = archive.consistency.check(scrub=True)
    assert found.missing == [instance.blob.key] and found.checked == 0 and not found.healthy

    repaired = archive.consistency.check(repair=True)
    if backend:  # the delete marker no longer hides the intact version
        assert repaired.restored == [instance.blob.key] and repaired.healthy
        assert archive.blobs.read(instance.blob.key) == data
        assert archive.consistency.check(scrub=True).healthy
    else:
        assert not repaired.healthy
        reason = repaired.unrepairable[instance.blob.key]
        assert f"no intact copy in {archive.blobs.describe()}" in reason
        assert "resend the study" in reason


def test_the_scrub_rate_limit_limits_what_it_reads_per_second(archive: Archive) -> None:
    _store(archive, Spec(rows=1000, columns=1500))  # 3 MB of pixels
    rate = 2_000_000
    started = time.monotonic()
    report = archive.consistency.check(scrub=True, scrub_rate=rate)
    elapsed = time.monotonic() - started
    assert report.healthy and report.bytes_read > 3_000_000
    assert elapsed >= 1.0  # 3 MB at 2 MB/s: 1.5 s (the bucket starts empty)


def test_the_rate_limit_sleeps_off_what_was_read_beyond_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limit = RateLimit(1000, burst=100, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limit.take(500)
    assert now[0] == pytest.approx(2.5)  # 2500 bytes at 1000 per second
    now[0] += 60  # a long pause earns no more than the burst
    limit.take(600)
    assert slept[-1] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        RateLimit(0)


def test_fsck_scrub_on_the_command_line_prints_the_corrupt_object(tmp_path: Path) -> None:
    data = tmp_path / "data"
    archive = Archive(Settings(data_dir=data))
    instance = _store(archive, Spec())
    _store(archive, Spec(seed=3))
    archive.close()
    path = data / "blobs" / "objects" / instance.blob.key
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")

    found = _fsck(data, "--scrub", "--scrub-rate", "0")
    assert found.returncode == 1, found.stdout + found.stderr
    assert "2 objects, 2 indexed, 0 unindexed, 0 missing, 2 checked" in found.stdout
    assert "1 corrupt" in found.stdout
    assert (
        f"CORRUPT object does not match the SHA-256 recorded at ingest: {instance.blob.key}"
        in found.stdout
    )
    assert f"integrity: {instance.blob.key}: {MISMATCH}" in found.stderr  # the log line
    assert "NOT HEALTHY" in found.stdout

    repaired = _fsck(data, "--scrub", "--repair")
    assert repaired.returncode == 1
    assert f"CANNOT restore {instance.blob.key}: corrupt, and no intact copy" in repaired.stdout

    archive = Archive(Settings(data_dir=data))
    assert len(archive.index.find_audit_events(AuditQuery(event_id=SECURITY_ALERT))) == 2
    archive.close()


def test_the_scrub_rate_is_megabytes_per_second_and_zero_is_unlimited(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parse = build_parser().parse_args
    assert parse(["fsck", "--scrub"]).scrub_rate == 50.0
    assert parse(["fsck", "--scrub", "--scrub-rate", "0"]).scrub_rate == 0.0
    for bad in ("fast", "-1", "nan"):
        with pytest.raises(SystemExit):
            parse(["fsck", "--scrub-rate", bad])
        assert "not a rate in MB/s" in capsys.readouterr().err
