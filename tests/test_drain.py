"""Draining `arkiv serve` before a planned restart, as the operator's rolling restart does it:
with the drain token the node stops taking new associations in every process (new connections
are refused, so the modality's retry reaches another node), reports not ready to its load
balancer, lets an association already open finish its work, and says drained once it has;
without the token nothing changes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import DigitalIntraOralXRayImageStorageForPresentation  # type: ignore

from tests.conftest import _start_archive, echo_ok, free_port
from tests.dicom_factory import Spec, make_dataset

ARKIV = [sys.executable, "-m", "arkiv.cli"]
TOKEN = "drain-token-for-the-test-0123456789"


@dataclass
class Node:
    process: subprocess.Popen[bytes]
    dicom_port: int
    base_url: str


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(line) for line in out.stdout.split()]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    token_file = tmp_path / "drain-token"
    token_file.write_text(TOKEN + "\n")
    dicom_port, http_port = free_port(), free_port()
    env = {**os.environ, "ARKIV_DRAIN_TOKEN_FILE": str(token_file)}
    process = subprocess.Popen(
        [
            *ARKIV,
            *("serve", "--data", str(tmp_path / "data"), "--host", "127.0.0.1"),
            *("--dicom-port", str(dicom_port), "--http-port", str(http_port)),
            *("--dicom-workers", "2"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not echo_ok(dicom_port):
        assert process.poll() is None, "arkiv serve exited"
        assert time.monotonic() < deadline, "arkiv serve did not answer C-ECHO"
        time.sleep(0.2)
    children = _children(process.pid)
    try:
        yield Node(process, dicom_port, f"http://127.0.0.1:{http_port}")
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _modality() -> AE:
    ae = AE(ae_title="SENSOR")
    ae.add_requested_context(DigitalIntraOralXRayImageStorageForPresentation)
    ae.acse_timeout = ae.network_timeout = 10
    return ae


def test_a_drained_node_finishes_open_work_and_takes_no_new(node: Node) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=node.base_url, timeout=10) as http:
        assert http.post("/node/drain").status_code == 401
        assert (
            http.post("/node/drain", headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        assert http.get("/readyz").status_code == 200, "a wrong token changes nothing"
        [worker] = _children(node.process.pid)

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
