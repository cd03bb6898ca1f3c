"""Starting, probing and stopping the servers under test (arkiv and Orthanc).

The scale-out arkiv peers (PostgreSQL + MinIO) are in :mod:`bench.scaleout`.

Every server runs as a subprocess in its own session, listening on 127.0.0.1 on free ports,
with its output in a log file.  Servers are stopped by pid (SIGTERM, then SIGKILL); anything
left over in the process group that the benchmark created for the server is killed by pid too.
:func:`stop_all` stops whatever is still running and is safe to call from ``finally`` blocks.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

LOCALHOST = "127.0.0.1"
_CLK_TCK = os.sysconf("SC_CLK_TCK")
# Never go through an HTTP proxy from the environment: all requests are for 127.0.0.1.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PeerError(RuntimeError):
    """A server could not be started or probed."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that are free on 127.0.0.1 right now."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOCALHOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def http_get_json(url: str, timeout: float = 10.0) -> Any:
    if not url.startswith(f"http://{LOCALHOST}:"):
        raise ValueError(f"refusing non-local URL {url}")
    with _HTTP.open(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode("utf-8"))


# --------------------------------------------------------------------------------------------
# Processes


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    return raw[raw.rfind(")") + 2 :].split()


def _all_stats() -> dict[int, list[str]]:
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _proc_stat(int(entry.name))
            if st is not None:
                stats[int(entry.name)] = st
    return stats


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren, ...)."""
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for p, st in stats.items():
        # After stripping pid and comm: st[0] = state, st[1] = ppid
        children.setdefault(int(st[1]), []).append(p)
    out: list[int] = []
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads, reaped children) of ``pid`` and its descendants."""
    total = 0
    for p in [pid, *descendants(pid)]:
        st = _proc_stat(p)
        if st is not None:
            # utime, stime, cutime, cstime are fields 14-17 (1-based) -> 11..14 here.
            total += sum(int(x) for x in st[11:15])
    return total / _CLK_TCK


def _group_members(pgid: int) -> list[int]:
    # st[2] is the process group id.
    return [p for p, st in _all_stats().items() if int(st[2]) == pgid and st[0] != "Z"]


class ManagedProcess:
    """A subprocess in its own session whose output goes to ``log``."""

    _live: set[ManagedProcess] = set()  # noqa: RUF012 - deliberately shared registry

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._logf: IO[bytes] = log.open("wb")
        try:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._logf,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            self._logf.close()
            raise
        self.pid = self.popen.pid
        ManagedProcess._live.add(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, SIGKILL; then reap leftovers in its group."""
        try:
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.terminate()
                try:
                    self.popen.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        self.popen.kill()
                    self.popen.wait(timeout=grace)
            # The process group was created for this server (start_new_session), so whatever
            # is still in it (e.g. worker processes) was started by it: stop those by pid too.
            leftovers = _group_members(self.pid)
            for p in leftovers:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while leftovers and time.monotonic() < deadline:
                time.sleep(0.1)
                leftovers = _group_members(self.pid)
            for p in leftovers:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(p, signal.SIGKILL)
            return self.popen.returncode
        finally:
            # If stopping was interrupted (a second Ctrl-C), stay registered for stop_all().
            if self.popen.poll() is not None:
                self._logf.close()
                ManagedProcess._live.discard(self)


def stop_all() -> None:
    """Stop every process started through :class:`ManagedProcess` that is still registered."""
    for proc in list(ManagedProcess._live):
        with contextlib.suppress(Exception):
            proc.stop(grace=5.0)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, turned into an exception so that ``finally`` blocks clean up."""


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` (a KeyboardInterrupt)."""
    old = {sig: signal.signal(sig, _raise_terminated) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def echo_ok(aet: str, port: int, timeout: int = 3) -> bool:
    """One C-ECHO with DCMTK's echoscu."""
    try:
        res = subprocess.run(
            ["echoscu", "-aet", "BENCHECHO", "-aec", aet, "-to", str(timeout), "-ta",
             str(timeout), "-td", str(timeout), LOCALHOST, str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout * 3,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False
    return res.returncode == 0


def wait_for_echo(proc: ManagedProcess, aet: str, port: int, timeout: float) -> float:
    """Poll C-ECHO until it succeeds; returns the seconds it took.  Fails if ``proc`` dies."""
    start = time.monotonic()
    while True:
        if not proc.alive():
            raise PeerError(
                f"{proc.argv[0]} exited with {proc.popen.returncode} before answering C-ECHO;"
                f" log tail ({proc.log}):\n{tail(proc.log)}"
            )
        if echo_ok(aet, port):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise PeerError(
                f"no C-ECHO answer from {aet}@{LOCALHOST}:{port} within {timeout:.0f} s;"
                f" log tail ({proc.log}):\n{tail(proc.log)}"
            )
        time.sleep(0.2)


def version_line(argv: list[str]) -> str:
    try:
        res = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    for line in (res.stdout + res.stderr).splitlines():
        if line.strip():
            return line.strip()
    return "unknown"


# --------------------------------------------------------------------------------------------
# Servers


class Peer(ABC):
    """A server under test.  ``start`` gets a fresh, empty run directory every time.

    A peer is one or more processes (``nodes``), each with its own DICOM and HTTP port; the load
    is spread over the nodes' DICOM ports (``dicom_ports``).
    """

    name: str
    aet: str
    nodes: int = 1

    def __init__(self, startup_timeout: float = 90.0) -> None:
        self.startup_timeout = startup_timeout
        self.procs: list[ManagedProcess] = []
        self.dicom_ports: list[int] = []
        self.http_ports: list[int] = []
        self.run_dir: Path | None = None
        self.startup_s = 0.0

    @property
    def proc(self) -> ManagedProcess | None:
        """The first node's process (the only one of a one-node peer)."""
        return self.procs[0] if self.procs else None

    @property
    def dicom_port(self) -> int:
        return self.dicom_ports[0] if self.dicom_ports else 0

    @property
    def http_port(self) -> int:
        return self.http_ports[0] if self.http_ports else 0

    @abstractmethod
    def command(self, run_dir: Path, node: int = 0) -> list[str]:
        """Prepare ``run_dir`` and return node ``node``'s command line; ports are chosen."""

    @abstractmethod
    def count_instances(self) -> tuple[int | None, str]:
        """Stored instances (None if it cannot be told) and how that was determined."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Version and settings, for the results file."""

    def env(self, node: int = 0) -> dict[str, str]:
        return dict(os.environ)

    def prepare(self, run_dir: Path) -> None:
        """Called before the processes start (e.g. to create an empty database)."""
        return

    def release(self) -> None:
        """Called after the processes stopped (e.g. to drop that database)."""
        return

    def backend_cpu_seconds(self) -> dict[str, float] | None:
        """CPU time of each server the peer depends on, by name (None: it has none)."""
        return None

    def log_path(self, node: int) -> Path:
        assert self.run_dir is not None
        suffix = "" if self.nodes == 1 else f"-node{node + 1}"
        return self.run_dir / f"{self.name}{suffix}.log"

    def start(self, run_dir: Path) -> None:
        if self.procs:
            raise PeerError(f"{self.name} already running")
        run_dir.mkdir(parents=True, exist_ok=False)
        self.run_dir = run_dir
        ports = free_ports(2 * self.nodes)
        self.http_ports, self.dicom_ports = ports[: self.nodes], ports[self.nodes :]
        try:
            self.prepare(run_dir)
            started = time.monotonic()
            for node in range(self.nodes):
                argv = self.command(run_dir, node)
                self.procs.append(ManagedProcess(argv, self.log_path(node), env=self.env(node)))
            for proc, port in zip(self.procs, self.dicom_ports, strict=True):
                left = self.startup_timeout - (time.monotonic() - started)
                wait_for_echo(proc, self.aet, port, max(left, 1.0))
            self.startup_s = time.monotonic() - started
        except BaseException:
            self.stop()
            raise

    def alive(self) -> bool:
        return bool(self.procs) and all(p.alive() for p in self.procs)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs if p.alive())

    def stop(self) -> None:
        procs, self.procs = self.procs, []
        try:
            for proc in procs:
                proc.stop()
        finally:
            if self.run_dir is not None:
                self.release()

    def log_tail(self, lines: int = 25) -> str:
        if self.run_dir is None:
            return ""
        if self.nodes == 1:
            return tail(self.log_path(0), lines)
        parts = [f"[node {n + 1}]\n{tail(self.log_path(n), lines)}" for n in range(self.nodes)]
        return "\n".join(parts)


def arkiv_environment() -> dict[str, str]:
    """This environment without ``ARKIV_*`` settings (they describe the caller's archive)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARKIV_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ArkivPeer(Peer):
    """``arkiv serve`` with a fresh ``--data`` directory (the embedded default: SQLite + files).

    Stored instances are counted as ``*.dcm`` files under the data directory, which keeps the
    check independent of arkiv's index.  ``ARKIV_*`` variables of the calling shell are not
    passed on, so the embedded peer is embedded even in a shell set up for a scale-out archive.
    """

    name = "arkiv"
    aet = "ARKIV"

    def __init__(
        self,
        executable: Path,
        startup_timeout: float = 90.0,
        *,
        name: str | None = None,
        dicom_workers: int | None = None,
    ) -> None:
        super().__init__(startup_timeout)
        self.executable = executable
        self.dicom_workers = dicom_workers
        if name is not None:
            self.name = name

    @property
    def data_dir(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir / "data"

    def workers_args(self, workers: int | None) -> list[str]:
        return [] if workers is None else ["--dicom-workers", str(workers)]

    def command(self, run_dir: Path, node: int = 0) -> list[str]:
        return [
            str(self.executable), "serve",
            "--data", str(run_dir / "data"),
            "--host", LOCALHOST,
            "--http-port", str(self.http_ports[node]),
            "--dicom-port", str(self.dicom_ports[node]),
            *self.workers_args(self.dicom_workers),
        ]  # fmt: skip

    def env(self, node: int = 0) -> dict[str, str]:
        return arkiv_environment()

    def count_instances(self) -> tuple[int | None, str]:
        if not self.data_dir.is_dir():
            return None, "data dir missing"
        count = sum(1 for _ in self.data_dir.rglob("*.dcm"))
        if count == 0 and any(p.is_file() for p in self.data_dir.rglob("*")):
            # Files but none named *.dcm: arkiv's layout is not what this check assumes.
            return None, "no *.dcm files under --data, storage layout unknown"
        return count, "*.dcm files under --data"

    def describe(self) -> dict[str, Any]:
        version = "unknown"
        with contextlib.suppress(Exception):
            from importlib.metadata import version as dist_version

            version = dist_version("arkiv")
        return {
            "executable": str(self.executable),
            "version": version,
            "aet": self.aet,
            "command": "serve",
            "backend": "embedded (SQLite + files under --data)",
            "nodes": self.nodes,
            "dicom_workers": self.dicom_workers or "arkiv's default",
        }


class OrthancPeer(Peer):
    """Orthanc with a generated configuration (no plugins, no Lua, fsync on, no compression).

    Orthanc gets ``TCP_NODELAY=1`` in its environment unless ``nagle`` is true.  Debian's DCMTK,
    which Orthanc's DICOM server is built on, leaves Nagle's algorithm on unless that variable is
    set, and then every C-STORE response waits for the client's delayed ACK (~40 ms per instance
    on one association).  arkiv sets TCP_NODELAY on its sockets itself.
    """

    name = "orthanc"
    aet = "ORTHANC"

    def __init__(
        self, executable: Path, startup_timeout: float = 90.0, nagle: bool = False
    ) -> None:
        super().__init__(startup_timeout)
        self.executable = executable
        self.nagle = nagle

    def env(self, node: int = 0) -> dict[str, str]:
        env = dict(os.environ)
        if self.nagle:
            env.pop("TCP_NODELAY", None)
        else:
            env["TCP_NODELAY"] = "1"
        return env

    def config(self, run_dir: Path) -> dict[str, Any]:
        return {
            "Name": "arkiv-bench",
            "StorageDirectory": str(run_dir / "storage"),
            "IndexDirectory": str(run_dir / "index"),
            "StorageCompression": False,
            "SyncStorageArea": True,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomModalities": {},
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "OrthancPeers": {},
            "Plugins": [],
            "LuaScripts": [],
            "SaveJobs": False,
        }

    def command(self, run_dir: Path, node: int = 0) -> list[str]:
        cfg = run_dir / "orthanc.json"
        cfg.write_text(json.dumps(self.config(run_dir), indent=2), encoding="utf-8")
        return [str(self.executable), "--no-jobs", str(cfg)]

    def count_instances(self) -> tuple[int | None, str]:
        try:
            stats = http_get_json(f"http://{LOCALHOST}:{self.http_port}/statistics")
            return int(stats["CountInstances"]), "GET /statistics CountInstances"
        except (OSError, ValueError, KeyError) as exc:
            return None, f"GET /statistics failed: {exc}"

    def describe(self) -> dict[str, Any]:
        cfg = self.config(Path("RUN_DIR"))
        cfg.pop("DicomPort")
        cfg.pop("HttpPort")
        return {
            "executable": str(self.executable),
            "version": version_line([str(self.executable), "--version"]),
            "env": {} if self.nagle else {"TCP_NODELAY": "1"},
            "config": cfg,
        }
