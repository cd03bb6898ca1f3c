"""Real PostgreSQL, MinIO and Orthanc servers on loopback, started from temporary directories.

The tests and the benchmark use these instead of mocks: the scale-out backend is only trusted
when a real database and a real S3 server stand behind it. Each server runs as a child process in
its own session, listening on 127.0.0.1 on a free port, with its output in a log file; it is
stopped by its process id. A missing program is an error that names the install step, never a
reason to skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
MINIO_VERSION_FILE = REPO / ".ci" / "minio-version"
MINIO_USER = "arkiv-test"
MINIO_PASSWORD = "arkiv-test-secret"
LOCALHOST = "127.0.0.1"
# Never go through an HTTP proxy from the environment: every request here is for 127.0.0.1.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerUnavailable(RuntimeError):
    """A server program is missing or would not start; the message says what to install."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL, by pid: only the process this module started."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout=grace)


# -- PostgreSQL ------------------------------------------------------------------------------------


def postgres_bin(program: str) -> Path:
    """A PostgreSQL server program from Debian's packages (newest major version installed)."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{program}"), reverse=True):
        return candidate
    found = shutil.which(program)
    if found:
        return Path(found)
    raise ServerUnavailable(
        f"PostgreSQL's {program} is not installed: run the README's test command "
        "(it installs Debian's postgresql package)"
    )


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in a temporary data directory (initdb, then pg_ctl-style start).

    The server refuses to run as root, so under root the cluster belongs to the `postgres`
    account Debian's package creates, and its directory is made under the world-readable /tmp.
    """

    root: Path
    port: int
    process: subprocess.Popen[bytes] | None
    log: Path
    user: str | None
    max_connections: int

    @classmethod
    def start(cls, max_connections: int = 400) -> PostgresServer:
        initdb = postgres_bin("initdb")
        user: str | None = None
        if os.geteuid() == 0:
            user = "postgres"
            try:
                owner = pwd.getpwnam(user)
            except KeyError as exc:
                raise ServerUnavailable(
                    "running as root needs the postgres account of Debian's postgresql package"
                ) from exc
        root = Path(tempfile.mkdtemp(prefix="arkiv-pg-"))
        data, sockets, log = root / "data", root / "sockets", root / "server.log"
        sockets.mkdir()
        if user is not None:
            for path in (root, sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        init = subprocess.run(
            [
                str(initdb),
                "-D",
                str(data),
                "-U",
                "arkiv",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
            ],
            capture_output=True,
            user=user,
            check=False,
        )
        if init.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise ServerUnavailable(f"initdb failed: {init.stderr.decode(errors='replace')}")
        server = cls(root, free_port(), None, log, user, max_connections)
        server.launch()
        return server

    def launch(self) -> None:
        """Start the server on the cluster (again, after `stop_server`) and wait until it
        takes connections."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    str(postgres_bin("postgres")),
                    "-D",
                    str(self.root / "data"),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root / "sockets"),
                    "-c",
                    f"listen_addresses={LOCALHOST}",
                    "-c",
                    f"max_connections={self.max_connections}",
                    "-c",
                    "shared_buffers=256MB",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                user=self.user,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ServerUnavailable(f"PostgreSQL exited at start:\n{_tail(self.log)}")
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)
        self.stop()
        raise ServerUnavailable(f"PostgreSQL did not start in {timeout:.0f} s:\n{_tail(self.log)}")

    def dsn(self, database: str) -> str:
        return f"postgresql://arkiv@{LOCALHOST}:{self.port}/{database}"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL the archive is configured with (psycopg 3 driver)."""
        return f"postgresql+psycopg://arkiv@{LOCALHOST}:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop_server(self) -> None:
        """Stop the server, keeping the cluster (a restart, or a database host going away)."""
        if self.process is not None:
            _stop(self.process)

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)


# -- MinIO -----------------------------------------------------------------------------------------


def minio_version() -> str:
    return MINIO_VERSION_FILE.read_text().strip()


def minio_binary() -> Path:
    """The MinIO server built from source by `.ci/install-minio` (cached between runs)."""
    override = os.environ.get("ARKIV_MINIO_BIN")
    path = (
        Path(override)
        if override
        else Path.home() / ".cache" / "arkiv-tools" / f"minio-{minio_version()}" / "minio"
    )
    if not path.is_file():
        raise ServerUnavailable(
            f"MinIO is not built at {path}: run the README's test command "
            "(.ci/install-minio builds it with go install)"
        )
    return path


def _minio_env() -> dict[str, str]:
    return {
        **os.environ,
        "MINIO_ROOT_USER": MINIO_USER,
        "MINIO_ROOT_PASSWORD": MINIO_PASSWORD,
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
        "MINIO_CI_CD": "1",  # allows drives on the root filesystem and tmpfs, as in tests
    }


@dataclass
class MinioNode:
    """One `minio server` process; several of them with the same drive list form a cluster."""

    port: int
    process: subprocess.Popen[bytes] | None
    log: Path
    argv: list[str]
    ca_file: Path | None = None
    """The CA of the node's certificate when it speaks HTTPS."""

    @property
    def endpoint(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def launch(self) -> None:
        # In a container MinIO waits for peers on loopback addresses to "resolve to a valid IP"
        # unless it is told which endpoint is its own; then the others are taken as remote.
        env = {**_minio_env(), "_MINIO_SERVER_LOCAL": self.endpoint}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self, path: str = "/minio/health/live") -> bool:
        if self.ca_file is None:
            url, opener = f"http://{self.endpoint}{path}", _HTTP
        else:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            url = f"https://{self.endpoint}{path}"
            opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
            )
        try:
            with opener.open(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)

    def kill(self) -> None:
        """SIGKILL: a blade that loses power, not a clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=15)


@dataclass
class MinioServer:
    """A MinIO deployment: one node with one drive, or `nodes` processes with `drives` each,
    erasure-coded across all of them (MinIO's distributed mode, on loopback ports)."""

    root: Path
    nodes: list[MinioNode]

    @classmethod
    def start(
        cls, nodes: int = 1, drives: int = 1, tls: tuple[Path, Path, Path] | None = None
    ) -> MinioServer:
        """`tls`: (certificate, key, CA) PEM files; the server then speaks HTTPS only."""
        binary = minio_binary()
        root = Path(tempfile.mkdtemp(prefix="arkiv-minio-"))
        options: list[str] = []
        if tls is not None:
            certs = root / "certs"
            certs.mkdir()
            shutil.copyfile(tls[0], certs / "public.crt")
            shutil.copyfile(tls[1], certs / "private.key")
            options = ["--certs-dir", str(certs)]
        ports = [free_port() for _ in range(nodes)]
        if nodes == 1 and drives == 1:
            volumes = [str(root / "n1")]
        else:
            volumes = [
                f"http://{LOCALHOST}:{port}{root}/n{n}/d{d}"
                for n, port in enumerate(ports, 1)
                for d in range(1, drives + 1)
            ]
        members = []
        for n, port in enumerate(ports, 1):
            argv = [
                str(binary),
                "server",
                "--quiet",
                "--address",
                f"{LOCALHOST}:{port}",
                *options,
                *volumes,
            ]
            ca = tls[2] if tls is not None else None
            members.append(MinioNode(port, None, root / f"node{n}.log", argv, ca))
        server = cls(root, members)
        for node in members:
            node.launch()
        server.wait_ready()
        return server

    @property
    def endpoint(self) -> str:
        """The S3 endpoint (host:port) of the first node, which clients are pointed at."""
        return self.nodes[0].endpoint

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until every running node answers and the cluster has write quorum."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise ServerUnavailable(f"MinIO exited at start:\n{_tail(node.log)}")
            if all(n.ready("/minio/health/cluster") for n in self.nodes if n.alive()):
                return
            time.sleep(0.2)
        self.stop()
        logs = "\n".join(_tail(n.log, 10) for n in self.nodes)
        raise ServerUnavailable(f"MinIO did not become ready in {timeout:.0f} s:\n{logs}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# -- Orthanc ---------------------------------------------------------------------------------------

ORTHANC = Path("/usr/sbin/Orthanc")


@dataclass
class OrthancServer:
    """Orthanc (Debian package) as a DICOM peer: it queries and moves from the archive, and
    receives what the archive sends. Its REST API is how a test sees what arrived.

    Orthanc's DICOM server leaves Nagle's algorithm on unless TCP_NODELAY is set in its
    environment, which would make every C-STORE response wait for a delayed ACK.
    """

    directory: Path
    dicom_port: int
    http_port: int
    process: subprocess.Popen[bytes]
    log: Path
    aet: str = "ORTHANC"

    @classmethod
    def start(cls, directory: Path, aet: str = "ORTHANC") -> OrthancServer:
        if not ORTHANC.exists():
            raise ServerUnavailable(
                f"{ORTHANC} is missing: install Debian's orthanc package "
                "(.ci/install-system-packages)"
            )
        directory.mkdir(parents=True, exist_ok=True)
        dicom_port, http_port = free_port(), free_port()
        config = {
            "Name": "arkiv-test-peer",
            "StorageDirectory": str(directory / "storage"),
            "IndexDirectory": str(directory / "index"),
            "StorageCompression": False,
            "DicomServerEnabled": True,
            "DicomAet": aet,
            "DicomPort": dicom_port,
            "DicomCheckCalledAet": False,
            "DicomModalities": {},
            "DicomModalitiesInDatabase": False,
            "HttpServerEnabled": True,
            "HttpPort": http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "LuaScripts": [],
            "SaveJobs": False,
            "DicomScpTimeout": 30,
            "DicomScuTimeout": 30,
        }
        config_file = directory / "orthanc.json"
        config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
        log = directory / "orthanc.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [str(ORTHANC), "--no-jobs", str(config_file)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TCP_NODELAY": "1"},
                start_new_session=True,
            )
        server = cls(directory, dicom_port, http_port, process, log, aet)
        server._wait_ready()
        return server

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerUnavailable(f"Orthanc exited at start:\n{_tail(self.log)}")
            try:
                self.rest("GET", "/system")
                return
            except (OSError, ValueError):
                time.sleep(0.2)
        self.stop()
        raise ServerUnavailable(f"Orthanc did not start in {timeout:.0f} s:\n{_tail(self.log)}")

    def rest(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> Any:
        """Call Orthanc's REST API on loopback; JSON in and out (raw bytes for non-JSON)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            f"http://{LOCALHOST}:{self.http_port}{path}", data=data, method=method
        )
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with _HTTP.open(request, timeout=timeout) as response:
            payload = response.read()
            if "json" in response.headers.get("Content-Type", ""):
                return json.loads(payload)
            return payload

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Tell Orthanc about a DICOM node it may query, move from and send to."""
        self.rest("PUT", f"/modalities/{name}", {"AET": aet, "Host": host, "Port": port})

    def instance_files(self) -> dict[str, bytes]:
        """Every instance Orthanc holds, by SOP Instance UID, as the Part 10 file it keeps."""
        files: dict[str, bytes] = {}
        for orthanc_id in self.rest("GET", "/instances"):
            tags = self.rest("GET", f"/instances/{orthanc_id}/simplified-tags")
            files[str(tags["SOPInstanceUID"])] = self.rest("GET", f"/instances/{orthanc_id}/file")
        return files

    def stop(self) -> None:
        _stop(self.process)
