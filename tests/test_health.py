"""Monitoring routes: open to the load balancer and Prometheus, silent about patients."""

from __future__ import annotations

from arkiv.audit import Actor
from tests.conftest import RunningArchive
from tests.dicom_factory import Spec, encode, make_dataset

MODALITY = Actor(name="SENSOR1", kind="dicom-ae", county="vestfold", address="127.0.0.1")


def test_metrics_count_without_naming_anyone(running: RunningArchive) -> None:
    spec = Spec()
    running.archive.ingest.ingest_dicom(encode(make_dataset(spec)), MODALITY)
    response = running.client().get("/metrics")
    assert response.status_code == 200
    lines = response.text.splitlines()
    assert "arkiv_ready 1.0" in lines
    assert "arkiv_instances 1.0" in lines
    assert "arkiv_studies 1.0" in lines
    assert spec.patient_id not in response.text
    assert spec.study_uid not in response.text
