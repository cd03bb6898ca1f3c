"""Shared fixtures: a running archive (DICOM node and web app on loopback ports) and DCMTK.

Real DCMTK tools are required: a test that needs one fails when it is missing, it never skips.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from arkiv.accounts import Role
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.services import Archive
from dicom_node.server import DicomNode
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


def _start_archive(data_dir: Path) -> Iterator[RunningArchive]:
    settings = Settings(
        data_dir=data_dir, dicom_port=free_port(), http_port=free_port(), secure_cookies=False
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
def running(tmp_path: Path) -> Iterator[RunningArchive]:
    """A fresh archive per test, served on free loopback ports."""
    yield from _start_archive(tmp_path / "data")


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    """The services alone, for tests of the core without the network."""
    instance = Archive(Settings(data_dir=tmp_path / "data"))
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
