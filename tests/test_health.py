"""Monitoring routes: open to the load balancer and Prometheus, silent about patients."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from arkiv.audit import Actor
from arkiv.audit_checkpoint import CheckpointSigner
from arkiv.audit_syslog import SyslogForwarder, SyslogUnavailable
from tests.conftest import RunningArchive
from tests.dicom_factory import Spec, encode, make_dataset

pytestmark = pytest.mark.both_backends

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


def _metric(running: RunningArchive, name: str) -> float:
    text = running.client().get("/metrics").text
    [value] = [line.split()[1] for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(value)


def test_metrics_show_what_the_audit_log_still_owes(running: RunningArchive) -> None:
    running.archive.ingest.ingest_dicom(encode(make_dataset(Spec())), MODALITY)
    assert _metric(running, "arkiv_audit_unsigned_events") == 1.0
    CheckpointSigner(running.archive.index, running.archive.settings).sign_now()
    assert _metric(running, "arkiv_audit_unsigned_events") == 0.0

    with socket.socket() as closed:  # a receiver that is not there
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = replace(
        running.archive.settings, audit_syslog_host="127.0.0.1", audit_syslog_port=port
    )
    running.archive.audit_forwarder = SyslogForwarder(running.archive.index, settings)
    with pytest.raises(SyslogUnavailable):
        running.archive.audit_forwarder.forward_pending()
    assert _metric(running, "arkiv_audit_forward_connected") == 0.0
    assert _metric(running, "arkiv_audit_forward_lag") >= 1.0
