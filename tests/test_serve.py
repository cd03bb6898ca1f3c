"""`arkiv serve` as an operator runs it: several DICOM worker processes on one port, all writing
to one index and one audit chain, and going away with the main process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD, require_tool
from tests.dicom_factory import Spec, make_dataset, write
from tests.serve_process import ARKIV, Served, children, serving


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serving(tmp_path / "data") as node:
        yield node


def test_workers_share_the_port_and_the_audit_chain(served: Served, tmp_path: Path) -> None:
    assert len(children(served.process.pid)) == 1
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
    [worker] = children(served.process.pid)
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
    [worker] = children(served.process.pid)
    served.process.terminate()
    assert served.process.wait(timeout=30) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
