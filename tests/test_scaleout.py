"""Scale-out: several DICOM and web nodes, each its own process with its own data directory, on
one PostgreSQL index and one S3 bucket, as the operator runs them on separate VMs.

What must hold while they all write at once: no row lost, no object stored twice, one audit
chain that verifies, and every read audited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import minio
import pytest

from arkiv.accounts import Role
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.services import Archive
from storage.records import AuditQuery
from tests.conftest import PASSWORD, backend_settings, echo_ok, free_port, require_tool
from tests.dicom_factory import Spec, make_dataset, write

ARKIV = [sys.executable, "-m", "arkiv.cli"]
STORED = "110104"
QUERY = "110112"


@dataclass
class Node:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    health: int
    """The DICOM node's own health port (/readyz for its load balancer)."""


def _environment(overrides: dict[str, Any], data: Path) -> dict[str, str]:
    settings = Settings(
        data_dir=data, secure_cookies=False, audit_checkpoint_minutes=0, **overrides
    )
    return {**os.environ, **settings.as_environment()}


def _start(kind: str, overrides: dict[str, Any], data: Path) -> Node:
    port, health = free_port(), free_port()
    flag = "--dicom-port" if kind == "dicom" else "--http-port"
    log = data.with_suffix(".log")
    data.mkdir(parents=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*ARKIV, kind, "--host", "127.0.0.1", flag, str(port), "--dicom-workers", "1"]
            + (["--health-port", str(health)] if kind == "dicom" else []),
            env=_environment(overrides, data),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Node(process, port, log, health)


def _wait_until_up(node: Node, probe: Any) -> None:
    deadline = time.monotonic() + 60
    while not probe(node.port):
        assert node.process.poll() is None, node.log.read_text()
        assert time.monotonic() < deadline, f"node did not start:\n{node.log.read_text()}"
        time.sleep(0.2)


def _web_ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop(node: Node) -> None:
    if node.process.poll() is None:
        os.killpg(node.process.pid, signal.SIGTERM)
        try:
            node.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(timeout=30)


@contextlib.contextmanager
def _nodes(overrides: dict[str, Any], root: Path) -> Iterator[tuple[list[Node], list[Node]]]:
    """Two DICOM nodes and two web nodes, each a separate `arkiv dicom` / `arkiv web` process."""
    started: list[Node] = []
    try:
        dicom = [_start("dicom", overrides, root / f"dicom{n}") for n in (1, 2)]
        started += dicom
        web = [_start("web", overrides, root / f"web{n}") for n in (1, 2)]
        started += web
        for node in dicom:
            _wait_until_up(node, echo_ok)
            ready = httpx.get(f"http://127.0.0.1:{node.health}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            assert httpx.get(f"http://127.0.0.1:{node.health}/dicom-web/studies").status_code == 404
        for node in web:
            _wait_until_up(node, _web_ready)
        yield dicom, web
    finally:
        for node in started:
            _stop(node)


def _study(folder: Path, patient: str, study: str, count: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True)
    files = []
    for n in range(count):
        spec = Spec(
            patient_id=patient,
            study_uid=study,
            series_uid=f"{study}.1",
            sop_uid=f"{study}.1.{n + 1}",
            seed=seed + n,
        )
        files.append(write(make_dataset(spec), folder / f"{n}.dcm"))
    return files


def _storescu(port: int, sender: str, files: list[Path]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [require_tool("storescu"), "-aet", sender, "-aec", "ARKIV", "127.0.0.1", str(port)]
        + [str(f) for f in files],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_two_dicom_and_two_web_nodes_share_one_index_bucket_and_chain(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with backend_settings(request, "scaleout") as overrides:
        setup = Archive(Settings(data_dir=tmp_path / "setup", **overrides))
        setup.accounts.add_user("tannlege", PASSWORD, Role.CLINICIAN, County.VESTFOLD)
        setup.close()
        patients = ["01017012345", "02028054321", "03039012312"]
        studies = {
            p: _study(tmp_path / f"study{n}", p, f"1.2.826.0.1.3680043.10.77.{n}", 12, n * 100)
            for n, p in enumerate(patients, 1)
        }
        everything = [f for files in studies.values() for f in files]
        with _nodes(overrides, tmp_path / "nodes") as (dicom, web):
            # Both DICOM nodes receive every object at the same time (a modality that resends
            # to the other node, two modalities sharing a study), from two senders each.
            senders = [
                _storescu(node.port, f"SENSOR{n}{half}", everything[half::2])
                for n, node in enumerate(dicom)
                for half in (0, 1)
            ]
            searches = [0, 0]  # per web node, each counted by its own reader thread
            stop_reading = threading.Event()
            failures: list[str] = []

            def read_while_storing(n: int, port: int) -> None:
                with httpx.Client(
                    base_url=f"http://127.0.0.1:{port}", auth=("tannlege", PASSWORD), timeout=30
                ) as client:
                    while not stop_reading.is_set():
                        for patient in patients:
                            response = client.get(
                                "/dicom-web/studies", params={"PatientID": patient}
                            )
                            if response.status_code not in (200, 204):
                                failures.append(f"{response.status_code} {response.text}")
                            searches[n] += 1

            readers = [
                threading.Thread(target=read_while_storing, args=(n, node.port))
                for n, node in enumerate(web)
            ]
            for reader in readers:
                reader.start()
            outputs = [sender.communicate(timeout=240)[0] for sender in senders]
            stop_reading.set()
            for reader in readers:
                reader.join(timeout=60)
            for sender, output in zip(senders, outputs, strict=True):
                assert sender.returncode == 0, output
            assert not failures, failures[:3]

            # Every node sees every object, and retrieves it through either web node.
            for node in web:
                with httpx.Client(
                    base_url=f"http://127.0.0.1:{node.port}",
                    auth=("tannlege", PASSWORD),
                    timeout=30,
                ) as client:
                    for n in range(1, len(patients) + 1):
                        study = f"1.2.826.0.1.3680043.10.77.{n}"
                        found = client.get(f"/dicom-web/studies/{study}/instances")
                        assert found.status_code == 200
                        assert len(found.json()) == 12

        check = Archive(Settings(data_dir=tmp_path / "check", **overrides))
        try:
            assert check.index.instance_count() == len(everything)
            assert check.index.conflict_count() == 0
            stored = check.index.find_audit_events(AuditQuery(event_id=STORED, limit=10_000))
            assert len(stored) == 2 * len(everything), "each of the two sends is audited"
            queries = check.index.find_audit_events(
                AuditQuery(event_id=QUERY, actor="tannlege", limit=100_000)
            )
            assert len(queries) >= sum(searches) > 0
            report = check.audit.verify()
            assert report.ok, report.reason
            assert report.checked == report.head_seq
        finally:
            check.close()

        # One object per instance in the bucket, each with exactly one version: the second node
        # that received an object found it stored and wrote nothing.
        bucket = minio.Minio(
            overrides["s3_endpoint"],
            access_key=overrides["s3_access_key"],
            secret_key=overrides["s3_secret_key"],
            secure=False,
        )
        versions = list(
            bucket.list_objects(overrides["s3_bucket"], recursive=True, include_version=True)
        )
        keys = [v.object_name for v in versions]
        assert len(keys) == len(everything)
        assert len(set(keys)) == len(keys), "an object was stored twice"
