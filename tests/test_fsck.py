"""`arkiv fsck`: finds what a crash between blob and index left behind, and mends what it can."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arkiv.audit import Actor
from arkiv.config import Settings
from arkiv.errors import ArchiveUnavailable
from arkiv.services import Archive
from storage.errors import IndexUnavailable
from storage.index import IndexTransaction
from storage.records import AuditQuery, StudyQuery
from tests.dicom_factory import Spec, encode, make_dataset

MODALITY = Actor(name="SENSOR1", kind="dicom-ae", county="vestfold", address="127.0.0.1")


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
