"""Draining `arkiv serve` before a planned restart, as the operator's rolling restart does it:
with the drain token the node stops taking new associations in every process (new connections
are refused, so the modality's retry reaches another node), reports not ready to its load
balancer, lets an association already open finish its work, and says drained once it has;
without the token nothing changes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import DigitalIntraOralXRayImageStorageForPresentation  # type: ignore

from tests.conftest import _start_archive
from tests.dicom_factory import Spec, make_dataset
from tests.serve_process import Served, children, serving

TOKEN = "drain-token-for-the-test-0123456789"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Served]:
    token_file = tmp_path / "drain-token"
    token_file.write_text(TOKEN + "\n")
    with serving(tmp_path / "data", {"ARKIV_DRAIN_TOKEN_FILE": str(token_file)}) as served:
        yield served


def _modality() -> AE:
    ae = AE(ae_title="SENSOR")
    ae.add_requested_context(DigitalIntraOralXRayImageStorageForPresentation)
    ae.acse_timeout = ae.network_timeout = 10
    return ae


def test_a_drained_node_finishes_open_work_and_takes_no_new(node: Served) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=node.base_url, timeout=10) as http:
        assert http.post("/node/drain").status_code == 401
        assert (
            http.post("/node/drain", headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        assert http.get("/readyz").status_code == 200, "a wrong token changes nothing"
        [worker] = children(node.process.pid)

        open_assoc = _modality().associate("127.0.0.1", node.dicom_port, ae_title="ARKIV")
        assert open_assoc.is_established
        started = http.post("/node/drain", headers=bearer)
        assert started.status_code == 202 and started.json()["draining"] is True
        status = http.get("/node/drain", headers=bearer).json()
        assert status["drained"] is False, status  # the open association, a live worker
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "draining"

        refused = _modality().associate("127.0.0.1", node.dicom_port, ae_title="ARKIV")
        assert not refused.is_established, "a draining node took a new association"

        spec = Spec(modality="IO", sop_class=str(DigitalIntraOralXRayImageStorageForPresentation))
        stored = open_assoc.send_c_store(make_dataset(spec))
        assert stored.Status == 0x0000, "the open association's work is finished"
        open_assoc.release()

        deadline = time.monotonic() + 20
        while not (status := http.get("/node/drain", headers=bearer).json())["drained"]:
            assert time.monotonic() < deadline, f"never drained: {status}"
            time.sleep(0.2)
        assert status["in_flight"] == {
            "web requests": 0,
            "dicom associations": 0,
            "dicom worker processes": 0,
        }
        with pytest.raises(ProcessLookupError):
            os.kill(worker, 0)
        assert node.process.poll() is None, "the main process waits for its restart"
        assert http.get("/healthz").status_code == 200, "alive, only not taking work"


def test_without_a_token_file_draining_over_http_is_off(tmp_path: Path) -> None:
    for running in _start_archive(tmp_path / "data"):
        with httpx.Client(base_url=running.base_url, timeout=10) as http:
            refused = http.post("/node/drain", headers={"Authorization": f"Bearer {TOKEN}"})
            assert refused.status_code == 404 and "drain_token_file" in refused.json()["reason"]
            assert http.get("/readyz").status_code == 200
