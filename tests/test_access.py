"""No audit, no read: when the audit event cannot be written, nothing is served."""

from __future__ import annotations

import pytest

from arkiv.audit import Actor
from storage.errors import IndexUnavailable
from storage.index import IndexTransaction
from storage.records import AuditQuery
from tests.conftest import RunningArchive
from tests.dicom_factory import Spec, encode, make_dataset

MODALITY = Actor(name="SENSOR1", kind="dicom-ae", county="vestfold", address="127.0.0.1")


def test_reads_fail_closed_when_the_audit_log_cannot_be_written(
    running: RunningArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = Spec()
    running.archive.ingest.ingest_dicom(encode(make_dataset(spec)), MODALITY)
    client = running.add_user("tannlege")
    instance = (
        f"/dicom-web/studies/{spec.study_uid}/series/{spec.series_uid}/instances/{spec.sop_uid}"
    )
    assert client.get("/dicom-web/studies").status_code == 200  # signs in, caches credentials

    def audit_disk_full(*_args: object, **_kwargs: object) -> None:
        raise IndexUnavailable("disk full")

    monkeypatch.setattr(IndexTransaction, "append_audit", audit_disk_full)
    for path in (
        "/dicom-web/studies",
        instance,
        f"{instance}/metadata",
        f"{instance}/rendered",
        f"{instance}/thumbnail",
    ):
        response = client.get(path)
        assert response.status_code == 503, path
        assert "audit" in response.json()["reason"]
        assert spec.patient_id.encode() not in response.content

    monkeypatch.undo()
    assert client.get(f"{instance}/metadata").status_code == 200


def test_an_object_altered_on_disk_is_not_served_and_raises_an_alert(
    running: RunningArchive,
) -> None:
    spec = Spec()
    running.archive.ingest.ingest_dicom(encode(make_dataset(spec)), MODALITY)
    [key] = list(running.archive.blobs.keys())
    path = running.data_dir / "blobs" / "objects" / key
    altered = bytearray(path.read_bytes())
    altered[-10] ^= 0xFF  # one pixel changed behind the archive's back
    path.write_bytes(bytes(altered))
    client = running.add_user("tannlege")
    instance = (
        f"/dicom-web/studies/{spec.study_uid}/series/{spec.series_uid}/instances/{spec.sop_uid}"
    )

    rendered = client.get(f"{instance}/rendered")
    assert rendered.status_code == 503
    assert "integrity" in rendered.json()["reason"]

    retrieved = client.get(instance)
    assert retrieved.status_code == 503
    assert "integrity" in retrieved.json()["reason"]

    alerts = running.archive.index.find_audit_events(AuditQuery(event_id="110113"))
    assert len(alerts) >= 2
    assert all(alert.patient_ids == (spec.patient_id,) for alert in alerts)
    assert all(alert.outcome == 8 for alert in alerts)
