"""The ingest service: what is accepted, how it is kept, and that refusals leave nothing behind."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import date

import pytest
from pydicom.dataset import Dataset

from arkiv.audit import Actor
from arkiv.errors import InvalidObject, UnsupportedObject
from arkiv.ingest import IngestOutcome
from arkiv.services import Archive
from storage.records import AuditQuery, StudyQuery
from tests.dicom_factory import (
    DX_PRESENTATION,
    INTRAORAL,
    Spec,
    encode,
    make_dataset,
    synthetic_national_id,
)

pytestmark = pytest.mark.both_backends

MODALITY = Actor(name="SENSOR1", kind="dicom-ae", county="vestfold", address="10.0.0.5")


def _nothing_stored(archive: Archive) -> None:
    assert archive.index.instance_count() == 0
    assert list(archive.blobs.keys()) == []


def test_stored_object_is_kept_byte_for_byte_under_a_uid_derived_key(archive: Archive) -> None:
    spec = Spec()
    data = encode(make_dataset(spec))
    result = archive.ingest.ingest_dicom(data, MODALITY)
    assert result.outcome is IngestOutcome.STORED
    [stored] = archive.index.find_instances(StudyQuery(study_uids=(spec.study_uid,)))
    assert stored.blob.sha256 == hashlib.sha256(data).hexdigest()
    assert archive.blobs.read(stored.blob.key) == data
    assert stored.blob.key.startswith(f"dicom/{spec.study_uid}/{spec.series_uid}/{spec.sop_uid}.")
    assert stored.county == "vestfold"


def test_same_object_twice_is_one_object(archive: Archive) -> None:
    data = encode(make_dataset(Spec()))
    first = archive.ingest.ingest_dicom(data, MODALITY)
    second = archive.ingest.ingest_dicom(data, MODALITY)
    assert (first.outcome, second.outcome) == (IngestOutcome.STORED, IngestOutcome.DUPLICATE)
    assert archive.index.instance_count() == 1
    assert len(list(archive.blobs.keys())) == 1


def test_different_object_under_existing_uid_keeps_both_and_serves_the_first(
    archive: Archive,
) -> None:
    spec = Spec()
    original = encode(make_dataset(spec))
    impostor = encode(make_dataset(replace(spec, seed=99)))
    archive.ingest.ingest_dicom(original, MODALITY)
    result = archive.ingest.ingest_dicom(impostor, MODALITY)
    assert result.outcome is IngestOutcome.CONFLICT
    assert "already stored with different content" in result.message
    [served] = archive.index.find_instances(StudyQuery(sop_uids=(spec.sop_uid,)))
    assert archive.blobs.read(served.blob.key) == original
    assert archive.index.conflict_count(spec.sop_uid) == 1
    kept = {archive.blobs.read(key) for key in archive.blobs.keys()}
    assert kept == {original, impostor}
    # a resend of the conflicting object adds no third copy
    archive.ingest.ingest_dicom(impostor, MODALITY)
    assert archive.index.conflict_count(spec.sop_uid) == 1
    assert len(list(archive.blobs.keys())) == 2


def test_invalid_national_id_is_stored_but_flagged_never_changed(archive: Archive) -> None:
    spec = Spec(patient_id="01017012346")  # wrong check digits
    archive.ingest.ingest_dicom(encode(make_dataset(spec)), MODALITY)
    [study] = archive.index.find_studies(StudyQuery(patient_id="01017012346"))
    assert study.patient_id == "01017012346"
    assert study.id_valid is False
    [event] = archive.index.find_audit_events(AuditQuery(event_id="110104"))
    assert "patient_id_problem" in event.details


def test_valid_synthetic_national_id_is_recognised(archive: Archive) -> None:
    number = synthetic_national_id(date(1985, 6, 15), 100)
    archive.ingest.ingest_dicom(encode(make_dataset(Spec(patient_id=number))), MODALITY)
    [study] = archive.index.find_studies(StudyQuery(patient_id=number))
    assert study.id_valid is True


def _broken(change: str) -> Dataset:
    ds = make_dataset(Spec())
    if change == "no-sop-uid":
        del ds.SOPInstanceUID
    elif change == "no-study-uid":
        del ds.StudyInstanceUID
    elif change == "no-series-uid":
        del ds.SeriesInstanceUID
    elif change == "path-in-uid":
        ds.SeriesInstanceUID = "../../etc/passwd"
    elif change == "slash-in-uid":
        ds.StudyInstanceUID = "1.2.3/../4"
    elif change == "leading-zero-uid":
        ds.StudyInstanceUID = "1.02.3"
    elif change == "no-patient-id":
        del ds.PatientID
    elif change == "empty-patient-id":
        ds.PatientID = ""
    elif change == "oversized-image":
        ds.Rows = 4000
        ds.Columns = 4000
    elif change == "absurd-image":
        ds.Rows = 65535
        ds.Columns = 65535
        ds.NumberOfFrames = 1000
    return ds


@pytest.mark.parametrize(
    "change",
    [
        "no-sop-uid",
        "no-study-uid",
        "no-series-uid",
        "path-in-uid",
        "slash-in-uid",
        "leading-zero-uid",
        "no-patient-id",
        "empty-patient-id",
        "oversized-image",
        "absurd-image",
    ],
)
def test_invalid_objects_are_refused_with_a_reason_and_leave_nothing(
    archive: Archive, change: str
) -> None:
    with pytest.raises(InvalidObject) as refused:
        archive.ingest.ingest_dicom(encode(_broken(change)), MODALITY)
    assert str(refused.value)
    _nothing_stored(archive)


def test_truncated_object_is_refused(archive: Archive) -> None:
    data = encode(make_dataset(Spec(rows=256, columns=256)))
    for cut in (len(data) - 1, len(data) // 2, 200):
        with pytest.raises(InvalidObject):
            archive.ingest.ingest_dicom(data[:cut], MODALITY)
    _nothing_stored(archive)


def test_garbage_is_refused(archive: Archive) -> None:
    with pytest.raises(InvalidObject):
        archive.ingest.ingest_dicom(b"\0" * 128 + b"DICM" + b"\xff" * 300, MODALITY)
    with pytest.raises(InvalidObject):
        archive.ingest.ingest_dicom(b"not dicom at all", MODALITY)
    _nothing_stored(archive)


def test_unknown_sop_class_is_unsupported(archive: Archive) -> None:
    ds = make_dataset(Spec(sop_class="1.2.826.0.1.3680043.9.9999.1"))
    with pytest.raises(UnsupportedObject):
        archive.ingest.ingest_dicom(encode(ds), MODALITY)
    _nothing_stored(archive)


def test_sop_class_that_differs_from_the_announced_one_is_refused(archive: Archive) -> None:
    data = encode(make_dataset(Spec()))
    # the meta group comes first: announce Digital X-Ray while the dataset says Intra-Oral
    announced = data.replace(INTRAORAL.encode(), DX_PRESENTATION.encode(), 1)
    with pytest.raises(InvalidObject, match="differs from the announced"):
        archive.ingest.ingest_dicom(announced, MODALITY)
    _nothing_stored(archive)


def test_each_store_is_audited_in_the_same_transaction(archive: Archive) -> None:
    spec = Spec()
    archive.ingest.ingest_dicom(encode(make_dataset(spec)), MODALITY)
    [event] = archive.index.find_audit_events(AuditQuery(event_id="110104"))
    assert event.actor == "SENSOR1"
    assert event.actor_kind == "dicom-ae"
    assert event.source_address == "10.0.0.5"
    assert event.patient_ids == (spec.patient_id,)
    assert event.study_uids == (spec.study_uid,)
    assert event.action == "C"
    assert event.outcome == 0
    assert archive.audit.verify().ok


def test_audit_failure_means_nothing_is_acknowledged(
    archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No audit, no store: when the audit event cannot be written the index rows roll back."""
    from arkiv.errors import ArchiveUnavailable
    from storage.errors import IndexUnavailable
    from storage.index import IndexTransaction

    def fail(*_args: object, **_kwargs: object) -> None:
        raise IndexUnavailable("disk full")

    monkeypatch.setattr(IndexTransaction, "append_audit", fail)
    with pytest.raises(ArchiveUnavailable):
        archive.ingest.ingest_dicom(encode(make_dataset(Spec())), MODALITY)
    assert archive.index.instance_count() == 0
