"""The scale-out arkiv peers of the ingest benchmark: PostgreSQL index + objects in MinIO.

:class:`ScaleoutBackend` starts one PostgreSQL cluster and one MinIO server for the whole
benchmark (the servers of ``tests/servers.py``, on free ports on 127.0.0.1, in temporary
directories) and hands every run a :class:`Target` of its own: a new, empty database and a new
bucket name (the archive creates the bucket at its first write, as in production).  After the
run the database is dropped and the bucket emptied (every version) and removed, so no run sees
another's data and the disk does not fill up.

:class:`ScaleoutPeer` is the same ``arkiv`` command as the embedded peer with the
``ARKIV_DATABASE_URL`` / ``ARKIV_S3_*`` environment pointing at the run's target: either one
``arkiv serve`` (``nodes=1``), or ``nodes`` separate ``arkiv dicom`` processes, each with its own
data directory and DICOM port, on the same database and bucket.  Stored instances are counted in
the database (``instances`` rows) and in the bucket (objects under ``dicom/``); both must match.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from minio import Minio
from minio.deleteobjects import DeleteObject

from arkiv.config import Settings
from bench.peers import LOCALHOST, ArkivPeer, arkiv_environment, cpu_seconds, version_line
from tests.servers import (
    MINIO_PASSWORD,
    MINIO_USER,
    MinioServer,
    PostgresServer,
    ServerUnavailable,
    minio_binary,
    minio_version,
    postgres_bin,
)

BLOB_PREFIX = "dicom/"
"""Where the archive keeps DICOM objects in the bucket (`arkiv.ingest.blob_key`)."""


@dataclass(frozen=True)
class Target:
    """One run's empty archive: a database of the cluster and a bucket name."""

    database: str
    bucket: str


class ScaleoutBackend:
    """PostgreSQL and MinIO for the scale-out peers, started once, shared by all their runs."""

    def __init__(self) -> None:
        self.postgres: PostgresServer | None = None
        self.minio: MinioServer | None = None
        self._s3: Minio | None = None

    @staticmethod
    def missing() -> str | None:
        """Why the servers cannot run here (None: PostgreSQL and MinIO are installed)."""
        try:
            postgres_bin("initdb")
            postgres_bin("postgres")
            minio_binary()
        except ServerUnavailable as exc:
            return str(exc)
        return None

    @property
    def running(self) -> bool:
        return self.postgres is not None and self.minio is not None

    def start(self) -> None:
        """Start both servers (no-op when they run); raises ServerUnavailable."""
        if self.running:
            return
        try:
            if self.postgres is None:
                self.postgres = PostgresServer.start()
            if self.minio is None:
                self.minio = MinioServer.start()
        except BaseException:
            self.stop()
            raise
        self._s3 = Minio(
            self.minio.endpoint, access_key=MINIO_USER, secret_key=MINIO_PASSWORD, secure=False
        )

    def stop(self) -> None:
        postgres, minio = self.postgres, self.minio
        self.postgres = self.minio = self._s3 = None
        try:
            if minio is not None:
                minio.stop()
        finally:
            if postgres is not None:
                postgres.stop()

    def _servers(self) -> tuple[PostgresServer, MinioServer, Minio]:
        if self.postgres is None or self.minio is None or self._s3 is None:
            raise RuntimeError("the scale-out servers are not running")
        return self.postgres, self.minio, self._s3

    def new_target(self) -> Target:
        postgres, _, _ = self._servers()
        tag = uuid.uuid4().hex[:12]
        return Target(database=postgres.create_database(f"bench_{tag}"), bucket=f"bench-{tag}")

    def environment(self, target: Target) -> dict[str, str]:
        """The ``ARKIV_*`` variables that point an archive at ``target``."""
        postgres, minio, _ = self._servers()
        return {
            "ARKIV_DATABASE_URL": postgres.url(target.database),
            "ARKIV_S3_ENDPOINT": minio.endpoint,
            "ARKIV_S3_BUCKET": target.bucket,
            "ARKIV_S3_ACCESS_KEY": MINIO_USER,
            "ARKIV_S3_SECRET_KEY": MINIO_PASSWORD,
            "ARKIV_S3_SECURE": "false",
        }

    def count(self, target: Target) -> tuple[int, int]:
        """(rows in ``instances``, current objects under ``dicom/`` in the bucket)."""
        postgres, _, s3 = self._servers()
        with psycopg.connect(postgres.dsn(target.database), connect_timeout=10) as conn:
            row = conn.execute("SELECT count(*) FROM instances").fetchone()
        rows = int(row[0]) if row else 0
        if not s3.bucket_exists(target.bucket):
            return rows, 0
        objects = sum(
            1 for o in s3.list_objects(target.bucket, prefix=BLOB_PREFIX, recursive=True)
            if not o.is_dir
        )  # fmt: skip
        return rows, objects

    def drop(self, target: Target) -> None:
        """Drop the database; delete every object version of the bucket, then the bucket."""
        postgres, _, s3 = self._servers()
        try:
            postgres.drop_database(target.database)
        finally:
            if s3.bucket_exists(target.bucket):
                versions = [
                    DeleteObject(str(o.object_name), o.version_id)
                    for o in s3.list_objects(target.bucket, recursive=True, include_version=True)
                ]
                errors = list(s3.remove_objects(target.bucket, versions)) if versions else []
                if errors:
                    raise RuntimeError(f"could not empty bucket {target.bucket}: {errors[0]}")
                s3.remove_bucket(target.bucket)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time of PostgreSQL (postmaster and backends, reaped ones too) and of MinIO."""
        server = self.postgres.process if self.postgres is not None else None
        postgres = cpu_seconds(server.pid) if server is not None else 0.0
        minio = 0.0
        if self.minio is not None:
            for node in self.minio.nodes:
                if node.process is not None and node.alive():
                    minio += cpu_seconds(node.process.pid)
        return {"postgresql": postgres, "minio": minio}

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {}
        with contextlib.suppress(ServerUnavailable):
            info["postgresql"] = version_line([str(postgres_bin("postgres")), "--version"])
        info["postgresql_settings"] = (
            "initdb -E UTF8 --no-locale; shared_buffers=256MB, max_connections=400, otherwise "
            "defaults (fsync=on, synchronous_commit=on)"
        )
        with contextlib.suppress(OSError):
            info["minio"] = minio_version()
        info["minio_settings"] = "one node, one drive (tests/servers.py MinioServer), plain HTTP"
        info["same_disk_as_embedded"] = True
        return info


class ScaleoutPeer(ArkivPeer):
    """arkiv on PostgreSQL + MinIO: one ``arkiv serve``, or ``nodes`` ``arkiv dicom`` nodes.

    Each node has its own data directory (``run_dir/node<N>``: only its audit signing key and the
    like; index and objects are in the database and the bucket) and its own DICOM port.
    """

    def __init__(
        self,
        executable: Path,
        backend: ScaleoutBackend,
        startup_timeout: float = 90.0,
        *,
        name: str = "scaleout",
        nodes: int = 1,
        dicom_workers: int | None = None,
    ) -> None:
        super().__init__(executable, startup_timeout, name=name, dicom_workers=dicom_workers)
        if nodes < 1:
            raise ValueError("a scale-out peer needs at least one node")
        self.nodes = nodes
        self.backend = backend
        self.target: Target | None = None

    def prepare(self, run_dir: Path) -> None:
        self.backend.start()
        self.target = self.backend.new_target()

    def release(self) -> None:
        target, self.target = self.target, None
        if target is not None:
            self.backend.drop(target)

    def archive_settings(self, run_dir: Path) -> Settings:
        """Settings for loading the prepared database and bucket in-process before the nodes
        start (benchmarks that need patients or accounts there first)."""
        if self.target is None:
            raise RuntimeError(f"{self.name}: no database and bucket prepared")
        env = self.backend.environment(self.target)
        return Settings(
            data_dir=run_dir / "prepare",
            database_url=env["ARKIV_DATABASE_URL"],
            s3_endpoint=env["ARKIV_S3_ENDPOINT"],
            s3_bucket=env["ARKIV_S3_BUCKET"],
            s3_access_key=env["ARKIV_S3_ACCESS_KEY"],
            s3_secret_key=env["ARKIV_S3_SECRET_KEY"],
            s3_secure=False,
        )

    def command(self, run_dir: Path, node: int = 0) -> list[str]:
        if self.nodes == 1:
            return super().command(run_dir, node)
        return [
            str(self.executable), "dicom",
            "--data", str(run_dir / f"node{node + 1}"),
            "--host", LOCALHOST,
            "--dicom-port", str(self.dicom_ports[node]),
            *self.workers_args(self.dicom_workers),
        ]  # fmt: skip

    def env(self, node: int = 0) -> dict[str, str]:
        if self.target is None:
            raise RuntimeError(f"{self.name}: no database and bucket prepared")
        return {**arkiv_environment(), **self.backend.environment(self.target)}

    def count_instances(self) -> tuple[int | None, str]:
        if self.target is None:
            return None, "no database and bucket"
        try:
            rows, objects = self.backend.count(self.target)
        except Exception as exc:  # any driver or S3 error: the count cannot be told
            return None, f"counting failed: {exc}"
        how = f"PostgreSQL instances rows {rows}, S3 objects under {BLOB_PREFIX} {objects}"
        return min(rows, objects), how

    def backend_cpu_seconds(self) -> dict[str, float] | None:
        return self.backend.cpu_seconds()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["command"] = "serve" if self.nodes == 1 else "dicom (one process tree per node)"
        info["backend"] = "PostgreSQL index + MinIO bucket (fresh database and bucket per run)"
        info["environment"] = sorted(
            ["ARKIV_DATABASE_URL", "ARKIV_S3_ENDPOINT", "ARKIV_S3_BUCKET", "ARKIV_S3_ACCESS_KEY",
             "ARKIV_S3_SECRET_KEY", "ARKIV_S3_SECURE=false"]
        )  # fmt: skip
        if self.nodes > 1:
            info["load_split"] = "association i goes to node i mod nodes"
        info["servers"] = self.backend.describe()
        return info
