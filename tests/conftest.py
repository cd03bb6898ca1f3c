"""Shared fixtures: a running archive (DICOM node and web app on loopback ports), DCMTK, and
the real PostgreSQL and MinIO servers of the scale-out backend.

Real DCMTK tools and servers are required: a test that needs one fails when it is missing, it
never skips. Tests marked `both_backends` run once on the embedded default (SQLite and files) and
once on PostgreSQL + MinIO; the others on the embedded default only.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from arkiv.accounts import Role
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.services import Archive
from dicom_node.server import DicomNode
from tests.servers import (
    MINIO_PASSWORD,
    MINIO_USER,
    MinioServer,
    PostgresServer,
    ServerUnavailable,
)
from viewer.app import create_app

PASSWORD = "riktig-hest-batteri"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run the README's test command (it installs dcmtk)")
    return path


def echo_ok(port: int, called: str = "ARKIV") -> bool:
    """A C-ECHO with DCMTK's echoscu succeeds: the node is up and takes associations."""
    result = subprocess.run(
        [require_tool("echoscu"), "-aec", called, "127.0.0.1", str(port)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0


@dataclass
class RunningArchive:
    archive: Archive
    data_dir: Path
    dicom_port: int
    http_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def add_user(
        self, name: str, role: Role = Role.CLINICIAN, county: County = County.VESTFOLD
    ) -> httpx.Client:
        """Create an account and return an HTTP client signed in with Basic credentials."""
        self.archive.accounts.add_user(name, PASSWORD, role, county)
        return httpx.Client(base_url=self.base_url, auth=(name, PASSWORD), timeout=30)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session; each test gets a database of its own."""
    try:
        server = PostgresServer.start()
    except ServerUnavailable as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def minio_server() -> Iterator[MinioServer]:
    """One MinIO server for the session; each test gets a bucket of its own."""
    try:
        server = MinioServer.start()
    except ServerUnavailable as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


def scaleout_overrides(
    postgres: PostgresServer, minio: MinioServer, database: str, bucket: str
) -> dict[str, Any]:
    """Settings that point an archive at a database and a bucket of the test servers."""
    return {
        "database_url": postgres.url(database),
        "s3_endpoint": minio.endpoint,
        "s3_bucket": bucket,
        "s3_access_key": MINIO_USER,
        "s3_secret_key": MINIO_PASSWORD,
        "s3_secure": False,
    }


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        both = metafunc.definition.get_closest_marker("both_backends") is not None
        names = ["embedded", "scaleout"] if both else ["embedded"]
        metafunc.parametrize("backend", names, indirect=True)


BACKENDS = ("embedded", "scaleout")


@contextlib.contextmanager
def backend_settings(request: pytest.FixtureRequest, name: str) -> Iterator[dict[str, Any]]:
    """Settings overrides of a backend: none for the embedded default, or a fresh PostgreSQL
    database and S3 bucket (the archive creates the bucket at its first start)."""
    if name == "embedded":
        yield {}
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    minio: MinioServer = request.getfixturevalue("minio_server")
    database = postgres.create_database()
    try:
        yield scaleout_overrides(postgres, minio, database, f"t-{uuid.uuid4().hex[:12]}")
    finally:
        postgres.drop_database(database)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The backend under test, as settings overrides (parametrised by pytest_generate_tests)."""
    with backend_settings(request, request.param) as overrides:
        yield overrides


def _start_archive(
    data_dir: Path, overrides: dict[str, Any] | None = None
) -> Iterator[RunningArchive]:
    settings = Settings(
        data_dir=data_dir,
        dicom_port=free_port(),
        http_port=free_port(),
        secure_cookies=False,
        **(overrides or {}),
    )
    archive = Archive(settings)
    node = DicomNode(archive)
    node.start("127.0.0.1", settings.dicom_port)
    config = uvicorn.Config(
        create_app(archive),
        host="127.0.0.1",
        port=settings.http_port,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("web app did not start")
        time.sleep(0.05)
    try:
        yield RunningArchive(archive, data_dir, settings.dicom_port, settings.http_port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        node.stop()
        archive.close()


@pytest.fixture
def running(tmp_path: Path, backend: dict[str, Any]) -> Iterator[RunningArchive]:
    """A fresh archive per test, served on free loopback ports."""
    yield from _start_archive(tmp_path / "data", backend)


@pytest.fixture
def archive(tmp_path: Path, backend: dict[str, Any]) -> Iterator[Archive]:
    """The services alone, for tests of the core without the network."""
    instance = Archive(Settings(data_dir=tmp_path / "data", **backend))
    try:
        yield instance
    finally:
        instance.close()


_LOGIN_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def post_login(client: httpx.Client, username: str, password: str) -> httpx.Response:
    """Sign in through the login form as a browser does: fetch the form (and its CSRF token),
    post it, and on success keep the session's CSRF token for later form posts."""
    page = client.get("/login")
    match = _LOGIN_TOKEN.search(page.text)
    assert match, "the login form has no CSRF token"
    response = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": match.group(1)},
    )
    if response.status_code == 303:
        session = client.get("/api/session")
        assert session.status_code == 200, session.text
        client.headers["X-CSRF-Token"] = session.json()["csrf_token"]
    return response
