"""What an acknowledged image survives on the scale-out backend: a lost blade of a distributed
MinIO, too many lost blades, and a DICOM node killed mid-ingest.

The object store here is MinIO in distributed mode: four server processes on loopback ports,
two drives each, erasure-coded across all eight (four data and four parity shards per object, so
writes need five drives and reads four). One process is a blade.
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
from pathlib import Path
from typing import Any

import httpx
import minio
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import DigitalIntraOralXRayImageStorageForPresentation  # type: ignore

from arkiv.accounts import Role
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.services import Archive
from tests.conftest import (
    PASSWORD,
    RunningArchive,
    _start_archive,
    backend_settings,
    echo_ok,
    free_port,
    require_tool,
    scaleout_overrides,
)
from tests.dicom_factory import Spec, make_dataset, write
from tests.servers import MinioServer, PostgresServer

pytestmark = pytest.mark.slow

ARKIV = [sys.executable, "-m", "arkiv.cli"]
STUDY = "1.2.826.0.1.3680043.10.99"
SUCCESS, OUT_OF_RESOURCES = 0x0000, 0xA700


def _dataset(n: int, study: str = STUDY) -> Dataset:
    return make_dataset(
        Spec(
            patient_id="01017012345",
            study_uid=study,
            series_uid=f"{study}.1",
            sop_uid=f"{study}.1.{n}",
            seed=n,
            rows=256,
            columns=192,
        )
    )


def _store_all(port: int, datasets: list[Dataset], statuses: list[int]) -> None:
    """One association, each object sent and its status kept (as a modality logs them)."""
    ae = AE(ae_title="SENSOR1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(DigitalIntraOralXRayImageStorageForPresentation)
    assoc = ae.associate("127.0.0.1", port, ae_title="ARKIV")
    assert assoc.is_established
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            statuses.append(int(status.get("Status", -1)))
    finally:
        assoc.release()
        ae.shutdown()


def _retrieve_all(running: RunningArchive, count: int, study: str = STUDY) -> list[int]:
    with httpx.Client(
        base_url=running.base_url, auth=("tannlege", PASSWORD), timeout=120
    ) as client:
        codes = []
        for n in range(1, count + 1):
            response = client.get(
                f"/dicom-web/studies/{study}/series/{study}.1/instances/{study}.1.{n}",
                headers={"Accept": 'multipart/related; type="application/dicom"'},
            )
            codes.append(response.status_code)
        return codes


@contextlib.contextmanager
def _cluster_archive(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[MinioServer, RunningArchive]]:
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    cluster = MinioServer.start(nodes=4, drives=2)
    database = postgres.create_database()
    try:
        overrides = {
            **scaleout_overrides(postgres, cluster, database, "arkiv"),
            # A store without quorum does not answer; give up on it sooner than in production.
            "s3_timeout_seconds": 3.0,
            "s3_retries": 1,
        }
        start = contextlib.contextmanager(_start_archive)
        with start(tmp_path / "data", overrides) as running:
            running.archive.accounts.add_user("tannlege", PASSWORD, Role.CLINICIAN, County.VESTFOLD)
            yield cluster, running
    finally:
        cluster.stop()
        postgres.drop_database(database)


def _fsck_report(running: RunningArchive) -> Any:
    return running.archive.consistency.check(scrub=True)


def test_a_lost_blade_does_not_stop_ingest_or_retrieval_and_fsck_finds_all_whole(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with _cluster_archive(request, tmp_path) as (cluster, running):
        before = [_dataset(n) for n in range(1, 11)]
        statuses: list[int] = []
        _store_all(running.dicom_port, before, statuses)
        assert statuses == [SUCCESS] * 10

        # A blade goes down while the modality is sending.
        during = [_dataset(n) for n in range(11, 41)]
        sending = threading.Thread(target=_store_all, args=(running.dicom_port, during, statuses))
        sending.start()
        while len(statuses) < 15:
            time.sleep(0.05)
        cluster.nodes[3].kill()
        sending.join(timeout=300)
        assert statuses == [SUCCESS] * 40, "every object sent while a blade was down was kept"
        assert _retrieve_all(running, 40) == [200] * 40

        # The blade returns; MinIO heals it in the background and fsck finds everything whole.
        cluster.nodes[3].launch()
        cluster.wait_ready()
        report = _fsck_report(running)
        assert report.healthy, report
        assert report.objects == report.indexed == 40


def test_too_many_lost_blades_refuse_clearly_and_acknowledge_nothing_not_kept(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with _cluster_archive(request, tmp_path) as (cluster, running):
        statuses: list[int] = []
        _store_all(running.dicom_port, [_dataset(n) for n in range(1, 6)], statuses)
        assert statuses == [SUCCESS] * 5

        # Half the drives gone: below write quorum. Every store is refused with a status the
        # modality retries on, the node says it is not ready, and nothing is indexed.
        cluster.nodes[2].kill()
        cluster.nodes[3].kill()
        refused: list[int] = []
        started = time.monotonic()
        _store_all(running.dicom_port, [_dataset(n) for n in range(6, 9)], refused)
        assert refused == [OUT_OF_RESOURCES] * 3
        assert time.monotonic() - started < 120, "a refusal must come in bounded time"
        ready = running.client().get("/readyz")
        assert ready.status_code == 503
        assert "s3://arkiv" in ready.json()["reason"]
        assert running.archive.index.instance_count() == 5

        # Three blades gone: reads fail too, with an error, never with wrong bytes.
        cluster.nodes[1].kill()
        assert all(code == 503 for code in _retrieve_all(running, 5))

        # The blades return: what was acknowledged is all there and intact; sending again works.
        for node in cluster.nodes[1:]:
            node.launch()
        cluster.wait_ready()
        deadline = time.monotonic() + 60
        while running.client().get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the node did not become ready again"
            time.sleep(0.5)
        assert _retrieve_all(running, 5) == [200] * 5
        resent: list[int] = []
        _store_all(running.dicom_port, [_dataset(n) for n in range(6, 9)], resent)
        assert resent == [SUCCESS] * 3
        report = _fsck_report(running)
        assert report.healthy, report
        assert report.indexed == 8


# -- a DICOM node killed mid-ingest ----------------------------------------------------------------


def _dicom_node(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*ARKIV, "dicom", "--host", "127.0.0.1", "--dicom-port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not echo_ok(port):
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return process


def test_a_node_killed_mid_ingest_is_made_complete_by_fsck_and_a_resend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    files = [write(_dataset(n), tmp_path / f"{n}.dcm") for n in range(1, 61)]
    with backend_settings(request, "scaleout") as overrides:
        settings = Settings(
            data_dir=tmp_path / "node", audit_checkpoint_minutes=0, dicom_workers=2, **overrides
        )
        env = {**os.environ, **settings.as_environment()}
        port, log = free_port(), tmp_path / "node.log"
        node = _dicom_node(env, port, log)
        sender = subprocess.Popen(
            [require_tool("storescu"), "-aec", "ARKIV", "127.0.0.1", str(port)]
            + [str(f) for f in files],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = Archive(Settings(data_dir=tmp_path / "probe", **overrides))
        try:
            deadline = time.monotonic() + 120
            while probe.index.instance_count() < 10:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            os.killpg(node.pid, signal.SIGKILL)  # the node and its worker, mid-transfer
            node.wait(timeout=30)
            sender.wait(timeout=60)
            kept = probe.index.instance_count()
            assert 10 <= kept < len(files)

            # Restart, check, resend: the archive ends complete, every object once.
            node = _dicom_node(env, port, log)
            fsck = subprocess.run(
                [*ARKIV, "fsck", "--repair", "--scrub"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert fsck.returncode == 0, fsck.stdout + fsck.stderr
            resend = subprocess.run(
                [require_tool("storescu"), "-v", "-aec", "ARKIV", "127.0.0.1", str(port)]
                + [str(f) for f in files],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert resend.returncode == 0, resend.stderr
            assert resend.stderr.count("Received Store Response (Success)") == len(files)
            assert probe.index.instance_count() == len(files)
            report = probe.audit.verify()
            assert report.ok, report.reason
            assert probe.consistency.check(scrub=True).healthy
        finally:
            probe.close()
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
                node.wait(timeout=30)
        client = minio.Minio(
            overrides["s3_endpoint"],
            access_key=overrides["s3_access_key"],
            secret_key=overrides["s3_secret_key"],
            secure=False,
        )
        keys = [
            v.object_name
            for v in client.list_objects(
                overrides["s3_bucket"], recursive=True, include_version=True
            )
        ]
        assert len(keys) == len(set(keys)) == len(files), "each object stored exactly once"


# -- the index database restarts -------------------------------------------------------------------


def test_a_database_restart_costs_at_most_a_retried_store_and_loses_nothing(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Pooled connections are not pinged before use: after PostgreSQL restarts, a store may be
    refused once (0xA700, which the modality retries), the pool is renewed, and nothing is lost."""
    minio_server: MinioServer = request.getfixturevalue("minio_server")
    postgres = PostgresServer.start()
    try:
        database = postgres.create_database()
        overrides = scaleout_overrides(postgres, minio_server, database, "restart")
        start = contextlib.contextmanager(_start_archive)
        with start(tmp_path / "data", overrides) as running:
            statuses: list[int] = []
            _store_all(running.dicom_port, [_dataset(n) for n in range(1, 4)], statuses)
            assert statuses == [SUCCESS] * 3
            postgres.stop_server()
            postgres.launch()
            for n in range(4, 7):
                attempts: list[int] = []
                while not attempts or attempts[-1] != SUCCESS:
                    assert len(attempts) < 3, f"object {n} refused after the restart: {attempts}"
                    _store_all(running.dicom_port, [_dataset(n)], attempts)
                statuses += attempts[-1:]
            assert running.archive.index.instance_count() == 6
            report = running.archive.audit.verify()
            assert report.ok, report.reason
    finally:
        postgres.stop()
