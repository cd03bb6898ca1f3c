"""`arkiv serve` as its own process, as an operator starts it: two DICOM worker processes on one
port, the web app, a data directory; waited for until it answers C-ECHO, and stopped (workers
included, by pid) afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import echo_ok, free_port

ARKIV = [sys.executable, "-m", "arkiv.cli"]


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    data: Path
    dicom_port: int
    http_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def children(pid: int) -> list[int]:
    """The processes `pid` started (its DICOM workers)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(line) for line in out.stdout.split()]


@contextlib.contextmanager
def serving(data: Path, env: Mapping[str, str] | None = None) -> Iterator[Served]:
    dicom_port, http_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            *ARKIV,
            *("serve", "--data", str(data), "--host", "127.0.0.1"),
            *("--dicom-port", str(dicom_port), "--http-port", str(http_port)),
            *("--dicom-workers", "2"),
        ],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not echo_ok(dicom_port):
        assert process.poll() is None, "arkiv serve exited"
        assert time.monotonic() < deadline, "arkiv serve did not answer C-ECHO"
        time.sleep(0.2)
    workers = children(process.pid)
    try:
        yield Served(process, data, dicom_port, http_port)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
