"""`arkiv serve` as an operator runs it: several DICOM worker processes on one port, all writing
to one index and one audit chain, and going away with the main process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD, echo_ok, free_port, require_tool
from tests.dicom_factory import Spec, make_dataset, write

ARKIV = [sys.executable, "-m", "arkiv.cli"]


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    data: Path
    dicom_port: int
    http_port: int


def _workers_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(line) for line in out.stdout.split()]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    data = tmp_path / "data"
    dicom_port, http_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            *ARKIV,
            "serve",
            "--data",
            str(data),
            "--host",
            "127.0.0.1",
            "--dicom-port",
            str(dicom_port),
            "--http-port",
            str(http_port),
            "--dicom-workers",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not echo_ok(dicom_port):
        assert process.poll() is None, "arkiv serve exited"
        assert time.monotonic() < deadline, "arkiv serve did not answer C-ECHO"
        time.sleep(0.2)
    try:
        yield Served(process, data, dicom_port, http_port)
    finally:
        workers = _workers_of(process.pid)
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_workers_share_the_port_and_the_audit_chain(served: Served, tmp_path: Path) -> None:
    assert len(_workers_of(served.process.pid)) == 1
    study = "1.2.826.0.1.3680043.10.1234.1"
    folders = []
    for group in range(4):
        folder = tmp_path / f"modality{group}"
        folder.mkdir()
        for n in range(8):
            spec = Spec(
                study_uid=study,
                series_uid=f"{study}.{group}",
                seed=group * 100 + n,
                sop_uid=f"{study}.{group}.{n + 1}",
            )
            write(make_dataset(spec), folder / f"{n}.dcm")
        folders.append(folder)
    senders = [
        subprocess.Popen(
            [
                require_tool("storescu"),
                "-aet",
                f"SENSOR{i}",
                "-aec",
                "ARKIV",
                "127.0.0.1",
                str(served.dicom_port),
                *sorted(str(p) for p in folder.iterdir()),
            ],
            env={**os.environ, "TCP_NODELAY": "1"},
        )
        for i, folder in enumerate(folders)
    ]
    assert [sender.wait(timeout=120) for sender in senders] == [0, 0, 0, 0]

    add = subprocess.run(
        [
            *ARKIV,
            "user",
            "add",
            "tannlege",
            "--role",
            "clinician",
            "--county",
            "vestfold",
            "--data",
            str(served.data),
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
        text=True,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert add.returncode == 0, add.stderr
    with httpx.Client(
        base_url=f"http://127.0.0.1:{served.http_port}", auth=("tannlege", PASSWORD), timeout=30
    ) as client:
        found = client.get("/dicom-web/instances", params={"StudyInstanceUID": study})
    assert found.status_code == 200
    assert len(found.json()) == 32

    verify = subprocess.run(
        [*ARKIV, "audit", "verify", "--data", str(served.data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout
    fsck = subprocess.run(
        [*ARKIV, "fsck", "--data", str(served.data)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "32 objects, 32 indexed, 0 unindexed, 0 missing" in fsck.stdout


def test_workers_die_with_the_main_process_and_free_the_port(served: Served) -> None:
    [worker] = _workers_of(served.process.pid)
    served.process.send_signal(signal.SIGKILL)
    served.process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while True:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the DICOM worker outlived the main process"
        time.sleep(0.05)
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", served.dicom_port))  # nobody listens there any more


def test_stopping_the_main_process_stops_its_workers(served: Served) -> None:
    [worker] = _workers_of(served.process.pid)
    served.process.terminate()
    assert served.process.wait(timeout=30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
