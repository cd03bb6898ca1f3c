"""`arkiv migrate`: an embedded archive moves to PostgreSQL + S3, verified, resumable, proven.

The migration runs as the operator runs it, `python -m arkiv.cli migrate` in a subprocess, against
the session's real PostgreSQL and MinIO servers; each test has a database and a bucket of its own
and a copy of one embedded archive built once for the module.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydicom.uid import generate_uid

from arkiv.accounts import Principal, Role
from arkiv.audit import Actor, EventType
from arkiv.audit_checkpoint import CheckpointSigner
from arkiv.clock import now_iso
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.migration import Migration, Silent
from arkiv.photos import PhotoForm, UploadedFile
from arkiv.services import Archive, open_blob_store
from storage.errors import StorageError
from storage.index import Index
from storage.records import AuditQuery, StudyQuery
from storage.table_copy import Kind, table_plan
from tests import media_factory as media
from tests.conftest import PASSWORD, scaleout_overrides
from tests.dicom_factory import Spec, encode, make_dataset, synthetic_national_id
from tests.servers import MinioServer, PostgresServer

MODALITY = Actor(name="SENSOR1", kind="dicom-ae", county="vestfold", address="127.0.0.1")
OBJECTS = 40
EXTRA_EVENTS = 300


@dataclass(frozen=True)
class Template:
    data: Path
    patients: tuple[str, ...]
    conflict_sop: str


@dataclass(frozen=True)
class Target:
    config: Path
    overrides: dict[str, Any]
    database: str
    dsn: str


def _build_source(data: Path) -> Template:
    """Studies of two patients (small objects, many of them), a conflicting object under a
    stored SOP Instance UID, an account, a break-glass grant, a signed checkpoint and enough
    audit events that copying them one per transaction takes a moment."""
    archive = Archive(Settings(data_dir=data))
    patients = ("01017012345", synthetic_national_id(date(1985, 5, 17), 123))
    try:
        first: Spec | None = None
        for n in range(OBJECTS):
            if n % 10 == 0:
                study, series = generate_uid(), generate_uid()
            spec = Spec(
                patient_id=patients[n % 20 // 10],
                study_uid=study,
                series_uid=series,
                seed=n,
                rows=8,
                columns=8,
            )
            first = first or spec
            archive.ingest.ingest_dicom(encode(make_dataset(spec)), MODALITY)
        assert first is not None
        conflicting = Spec(
            patient_id=first.patient_id,
            study_uid=first.study_uid,
            series_uid=first.series_uid,
            sop_uid=first.sop_uid,
            seed=999,
            rows=8,
            columns=8,
        )
        archive.ingest.ingest_dicom(encode(make_dataset(conflicting)), MODALITY)
        assert archive.index.conflict_count(first.sop_uid) == 1
        assistant = Principal("assistent", Role.CLINICIAN, County.VESTFOLD)
        archive.photos.upload(
            assistant,
            [UploadedFile(media.jpeg(width=64, height=48), "image/jpeg", "a.jpg")],
            PhotoForm(patient_id=patients[0], category="intraoral", teeth="11"),
        )
        archive.accounts.add_user("tannlege", PASSWORD, Role.CLINICIAN, County.TELEMARK)
        archive.break_glass.grant(
            Principal("tannlege", Role.CLINICIAN, County.TELEMARK), patients[0], "akutt"
        )
        for _ in range(EXTRA_EVENTS):
            archive.record_application_event("start")
        assert CheckpointSigner(archive.index, archive.settings).sign_now() is not None
    finally:
        archive.close()
    return Template(data, patients, first.sop_uid)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return _build_source(tmp_path_factory.mktemp("template") / "data")


@pytest.fixture
def source(template: Template, tmp_path: Path) -> Path:
    """A copy of the template archive: migrate writes its start into the source's audit log."""
    data = tmp_path / "source"
    shutil.copytree(template.data, data)
    return data


@pytest.fixture
def target(
    postgres_server: PostgresServer, minio_server: MinioServer, tmp_path: Path
) -> Iterator[Target]:
    database = postgres_server.create_database()
    overrides = scaleout_overrides(
        postgres_server, minio_server, database, f"m-{uuid.uuid4().hex[:12]}"
    )
    overrides["data_dir"] = str(tmp_path / "target-data")
    config = tmp_path / "scaleout.toml"
    config.write_text(
        "[arkiv]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in overrides.items()),
        encoding="utf-8",
    )
    config.chmod(0o600)
    try:
        yield Target(config, overrides, database, postgres_server.dsn(database))
    finally:
        postgres_server.drop_database(database)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _command(source: Path, target: Target, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "arkiv.cli",
        "migrate",
        "--data",
        str(source),
        "--to",
        str(target.config),
        *flags,
    ]


def _migrate(source: Path, target: Target, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(source, target, *flags),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _target_settings(target: Target) -> Settings:
    return Settings(**{**target.overrides, "data_dir": Path(target.overrides["data_dir"])})


def _scalar(target: Target, sql: str) -> int:
    with psycopg.connect(target.dsn) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row else 0


def _target_has_table(target: Target) -> bool:
    return bool(_scalar(target, "SELECT count(*) FROM pg_tables WHERE tablename = 'audit_events'"))


def _bucket_keys(target: Target) -> set[str]:
    try:
        return set(open_blob_store(_target_settings(target)).keys())
    except StorageError:  # the bucket is made by the first write
        return set()


def _kill_when(
    command: list[str], ready: Callable[[], bool], timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Start the migration and kill -9 it the moment `ready()` holds."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if ready():
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _source_index(source: Path) -> Index:
    return Index(f"sqlite:///{source / 'index.sqlite3'}")


def _assert_same_archive(source: Path, target: Target) -> None:
    """The target serves what the source held: studies, instances, bytes, conflicts, accounts,
    grants, checkpoints, and the audit log up to the source's head, hash for hash."""
    src = Archive(Settings(data_dir=source))
    dst = Archive(_target_settings(target))
    try:
        everything = StudyQuery(limit=1000)
        assert {s.study_uid for s in dst.index.find_studies(everything)} == {
            s.study_uid for s in src.index.find_studies(everything)
        }
        src_instances = src.index.find_instances(everything)
        dst_instances = dst.index.find_instances(everything)
        assert sorted((i.sop_uid, i.blob) for i in dst_instances) == sorted(
            (i.sop_uid, i.blob) for i in src_instances
        )
        for instance in src_instances:
            assert dst.blobs.read(instance.blob.key) == src.blobs.read(instance.blob.key)
        assert dst.index.conflict_count() == src.index.conflict_count() == 1
        assert dst.index.statistics().photos == src.index.statistics().photos == 1
        assert dst.index.blob_digests() == src.index.blob_digests()
        assert [u.username for u in dst.index.list_users()] == ["tannlege"]
        assert len(dst.index.active_grants("tannlege", now_iso())) == 1
        assert dst.index.checkpoints() == src.index.checkpoints()
        assert dst.audit.verify().ok
        head_seq, head_hash = src.index.audit_head()
        at_head = dst.index.audit_event_at(head_seq)
        assert at_head is not None and at_head.hash == head_hash
    finally:
        src.close()
        dst.close()


def test_every_table_is_copied_after_what_it_refers_to() -> None:
    plan = table_plan()
    order = [table.name for table, _ in plan]
    for position, (table, kind) in enumerate(plan):
        for key in table.foreign_keys:
            assert order.index(key.column.table.name) < position, table.name
        if kind is Kind.APPEND:  # resumed after the highest key: it must lead with a number
            assert next(iter(table.primary_key.columns)).type.python_type is int


def test_migrates_everything_proves_it_and_a_second_run_only_proves(
    source: Path, target: Target
) -> None:
    result = _migrate(source, target, "--verify-read")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "migration complete" in result.stdout
    assert "DIFFERS" not in result.stdout
    _assert_same_archive(source, target)

    src = _source_index(source)
    dst = Index(target.overrides["database_url"])
    try:
        [started] = src.find_audit_events(AuditQuery(event_id=EventType.EXPORT.code))
        assert started.details["migration"] == "started"
        assert target.overrides["s3_bucket"] in started.details["to"]
        assert set(started.counties) == {"vestfold", "telemark"}
        head_seq, head_hash = src.audit_head()
        assert started.seq == head_seq  # recorded before the copy, so the copy carries it
        target_head = dst.audit_head()
        assert target_head[0] == head_seq + 1
        completed = dst.audit_event_at(head_seq + 1)
        assert completed is not None and completed.event_id == EventType.IMPORT.code
        assert completed.details["migration"] == "completed"
        assert completed.details["source_head_hash"] == head_hash
        # the instances, the conflict, and the photo: its original, two renditions, its wrapper
        assert completed.details["objects"] == OBJECTS + 1 + 4
    finally:
        src.close()
        dst.close()

    again = _migrate(source, target)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already migrated" in again.stdout
    assert "DIFFERS" not in again.stdout
    src = _source_index(source)
    dst = Index(target.overrides["database_url"])
    try:
        assert src.audit_head() == (head_seq, head_hash)  # a no-op: nothing recorded anywhere
        assert dst.audit_head() == target_head
    finally:
        src.close()
        dst.close()

    # The target goes live: its serial keys were moved past the copied ones, and a later run
    # still proves the source is in it.
    live = Archive(_target_settings(target))
    try:
        live.ingest.ingest_dicom(
            encode(make_dataset(Spec(patient_id="02029012345", seed=7, rows=8, columns=8))),
            MODALITY,
        )
        live.accounts.add_user("ny", PASSWORD, Role.CLINICIAN, County.VESTFOLD)
    finally:
        live.close()
    after_live = _migrate(source, target)
    assert after_live.returncode == 0, after_live.stdout + after_live.stderr
    assert "already migrated" in after_live.stdout
    assert "since" in after_live.stdout  # the rows the live archive added are shown apart

    # A copied row changed in the target is found and named (patients and studies may change
    # in a live archive, by reconciliation, so a row of a table that never changes is altered).
    with psycopg.connect(target.dsn) as conn:
        conn.execute("UPDATE series SET description = 'Endret' WHERE id = 1")
    tampered = _migrate(source, target)
    assert tampered.returncode == 1, tampered.stdout + tampered.stderr
    assert "table series: as many rows, but different values" in tampered.stdout
    assert "does NOT match" in tampered.stdout

    # The old archive must not be used after its migration: a new event there is refused.
    old = Archive(Settings(data_dir=source))
    try:
        old.record_application_event("start")
    finally:
        old.close()
    forked = _migrate(source, target)
    assert forked.returncode == 2
    assert f"differ at event {head_seq + 1}" in forked.stderr


def test_an_interrupted_migration_continues_where_it_stopped(source: Path, target: Target) -> None:
    command = _command(source, target, "--batch-size", "1", "--workers", "1")
    in_objects = _kill_when(command, lambda: bool(_bucket_keys(target)))
    assert in_objects.returncode == -signal.SIGKILL, in_objects.stdout + in_objects.stderr
    assert len(_bucket_keys(target)) < OBJECTS + 1

    def copying_rows() -> bool:
        return (
            _target_has_table(target) and _scalar(target, "SELECT count(*) FROM audit_events") > 5
        )

    in_rows = _kill_when(command, copying_rows)
    assert in_rows.returncode == -signal.SIGKILL, in_rows.stdout + in_rows.stderr
    assert _scalar(target, "SELECT count(*) FROM audit_events") < EXTRA_EVENTS

    finished = _migrate(source, target, "--batch-size", "7")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "continuing an interrupted migration" in finished.stderr
    assert "migration complete" in finished.stdout
    _assert_same_archive(source, target)
    src = _source_index(source)
    try:  # each attempt is in the source's log
        starts = src.find_audit_events(AuditQuery(event_id=EventType.EXPORT.code))
        assert len(starts) == 3
    finally:
        src.close()


class _PowerCut(Exception):
    pass


class _CutAt(Silent):
    """Stops the migration the moment it starts the step named `label`."""

    def __init__(self, label: str) -> None:
        self.label = label

    def start(self, label: str, total: int, **_kwargs: Any) -> None:
        if label == self.label:
            raise _PowerCut(label)


def test_a_migration_stopped_after_every_row_was_copied_completes(
    source: Path, target: Target
) -> None:
    """The chain head and the accounts are in the target already: the next run writes them
    again (the source's head has moved on by the next run's own start event)."""
    settings = _target_settings(target)
    actor = Actor(name="cli:test", kind="system", county="vestfold")
    with pytest.raises(_PowerCut):
        Migration(
            Settings(data_dir=source), settings, actor, observer=_CutAt("proof: tables")
        ).run()
    assert _scalar(target, "SELECT count(*) FROM audit_chain_head") == 1
    finished = _migrate(source, target)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "continuing an interrupted migration" in finished.stderr
    _assert_same_archive(source, target)


def test_a_corrupt_source_object_stops_the_migration_before_any_row(
    source: Path, target: Target
) -> None:
    src = _source_index(source)
    try:
        [instance, *_] = src.find_instances(StudyQuery(limit=1))
    finally:
        src.close()
    damaged = source / "blobs" / "objects" / instance.blob.key
    content = bytearray(damaged.read_bytes())
    content[-1] ^= 0xFF
    damaged.write_bytes(bytes(content))

    result = _migrate(source, target)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"corrupt: {instance.blob.key}" in result.stderr
    assert "arkiv fsck --scrub --repair" in result.stderr
    assert "migration complete" not in result.stdout
    assert instance.blob.key not in _bucket_keys(target)
    assert _scalar(target, "SELECT count(*) FROM instances") == 0
    assert _scalar(target, "SELECT count(*) FROM audit_events") == 0

    again = _migrate(source, target)  # nothing was marked as done: it stops again
    assert again.returncode == 1
    assert f"corrupt: {instance.blob.key}" in again.stderr


def test_refuses_a_running_source_and_a_target_that_is_not_scale_out(
    template: Template, tmp_path: Path
) -> None:
    data = tmp_path / "source"
    shutil.copytree(template.data, data)
    config = tmp_path / "scaleout.toml"
    scaleout = (
        '[arkiv]\ndatabase_url = "postgresql://arkiv@127.0.0.1:9/none"\n'
        's3_endpoint = "127.0.0.1:9"\ns3_access_key = "a"\ns3_secret_key = "b"\n'
        "s3_secure = false\n"
    )
    config.write_text(scaleout)
    fake = Target(config, {}, "", "")
    running = Archive(Settings(data_dir=data))
    try:
        result = _migrate(data, fake)
    finally:
        running.close()
    assert result.returncode == 2
    assert "the source archive is running" in result.stderr
    assert f"process {os.getpid()}" in result.stderr

    config.write_text(f'[arkiv]\ndatabase_url = "sqlite:///{tmp_path}/other.sqlite3"\n')
    result = _migrate(data, fake)
    assert result.returncode == 2
    assert "must be a scale-out configuration" in result.stderr

    config.write_text(scaleout)
    result = _migrate(tmp_path / "nowhere", fake)
    assert result.returncode == 2
    assert "no embedded archive" in result.stderr
    assert not (tmp_path / "nowhere").exists()
