"""Running the archive's servers: the DICOM node in worker processes that share one listening
socket, and the web app under uvicorn in the main process, all on the same data.

`arkiv serve`, `arkiv dicom` and `arkiv web` start here. This module and `arkiv.cli` are the only
parts of `arkiv` that import the adapters (`dicom_node`, `viewer`), and only to start them.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import uvicorn

from arkiv.audit_duties import AuditDuties
from arkiv.config import Settings
from arkiv.services import Archive

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class StartupError(RuntimeError):
    """A part of the archive could not start; the message says which."""


_WORKER_STOP_SECONDS = 15
_DRAIN_SIGNAL = signal.SIGUSR1
"""From the main process to its DICOM workers: stop accepting, finish, exit."""
_DRAIN_POLL_SECONDS = 0.2


def run(settings: Settings, *, dicom: bool, web: bool) -> int:
    from dicom_node.listener import open_listener, start_listening
    from dicom_node.server import DicomNode
    from viewer.app import create_app, create_health_app

    archive = Archive(settings)
    # Checkpoint signing and syslog forwarding: in one process per index, whichever holds the
    # lease; the others take over when it stops or dies (arkiv.audit_duties).
    duties = AuditDuties(archive)
    archive.record_application_event("110120 Application Start")
    duties.start()
    if web and archive.index.user_count() == 0:
        log.warning(
            "no accounts yet: create one with `arkiv user add NAME --role clinician "
            "--county %s --data %s`",
            settings.county.value,
            settings.data_dir,
        )
    node: DicomNode | None = None
    workers: list[_Worker] = []
    try:
        if dicom:
            listener = open_listener(settings.host, settings.dicom_port, listen=False)
            workers = [
                _spawn_worker(settings, listener) for _ in range(settings.dicom_process_count - 1)
            ]
            node = DicomNode(archive)
            node.start_on(listener)
            _wait_until_ready(workers)
            start_listening(listener)
            archive.drain.on_drain(lambda: _drain_workers(workers))
            archive.drain.add_probe("dicom worker processes", lambda: _running(workers))
        if web:
            _serve(create_app(archive), settings, settings.http_port)
        elif node is not None and settings.health_port:
            _serve(create_health_app(archive), settings, settings.health_port)
        elif node is not None:
            _wait_for_stop()
    finally:
        _stop_workers(workers)
        if node is not None:
            node.stop()
        archive.record_application_event("110121 Application Stop")
        # The holder signs a last checkpoint covering the stop event and sends what is left,
        # the stop event included; then it gives the lease up, for another node to take over.
        # A node without the duties leaves its stop event to the holder.
        duties.stop()
        archive.close()
    return 0


def _serve(app: Any, settings: Settings, port: int) -> None:
    """Serve an ASGI app until SIGTERM/SIGINT (over TLS when the web certificate is set)."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        access_log=False,  # URLs can hold search keys; reads are in the audit log instead
        log_level="info",
        timeout_graceful_shutdown=10,
        ssl_certfile=settings.web_tls_cert or None,
        ssl_keyfile=settings.web_tls_key or None,
    )
    server = uvicorn.Server(config)
    _exit_quietly_on_signals(server)
    server.run()


def run_worker(settings: Settings, listen_fd: int, ready_fd: int) -> int:
    """A DICOM worker process: accept on the inherited socket until told to stop. Workers never
    take the audit duties: their main process (or another node) does them."""
    from dicom_node.server import DicomNode

    _die_with_parent()
    archive = Archive(settings)
    node = DicomNode(archive)
    node.start_on(socket.socket(fileno=listen_fd))
    archive.record_application_event("110120 Application Start (DICOM worker)")
    signals = _WorkerSignals()
    os.write(ready_fd, b"ready")
    os.close(ready_fd)
    try:
        if signals.wait():
            node.stop_accepting()
            while node.open_associations():  # a drained worker ends when its work is done
                time.sleep(_DRAIN_POLL_SECONDS)
            log.info("DICOM worker %d drained", os.getpid())
    finally:
        node.stop()
        archive.record_application_event("110121 Application Stop (DICOM worker)")
        archive.close()
    return 0


class _Worker:
    def __init__(self, process: subprocess.Popen[bytes], ready_fd: int) -> None:
        self.process = process
        self.ready_fd = ready_fd


def _spawn_worker(settings: Settings, listener: socket.socket) -> _Worker:
    fd = listener.fileno()
    ready_read, ready_write = os.pipe()
    env = {**os.environ, **settings.as_environment()}
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "arkiv.cli",
                "dicom-worker",
                "--listen-fd",
                str(fd),
                "--ready-fd",
                str(ready_write),
            ],
            pass_fds=(fd, ready_write),
            env=env,
        )
    finally:
        os.close(ready_write)
    log.info("DICOM worker process %d started", process.pid)
    return _Worker(process, ready_read)


def _wait_until_ready(workers: list[_Worker]) -> None:
    """Block until every worker has its node running; a worker that dies first is an error."""
    for worker in workers:
        with os.fdopen(worker.ready_fd, "rb") as pipe:
            if pipe.read() != b"ready":
                raise StartupError(
                    f"DICOM worker {worker.process.pid} failed to start (see its log above)"
                )


def _stop_workers(workers: list[_Worker]) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.terminate()
    for process in (worker.process for worker in workers):
        try:
            process.wait(timeout=_WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _die_with_parent() -> None:
    """If the main process is killed outright, its workers go too (and free the port)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _exit_quietly_on_signals(server: uvicorn.Server) -> None:
    """uvicorn re-raises SIGTERM after its graceful shutdown, which would end the process before
    the workers are stopped and the stop event is audited. With this handler in place beneath
    uvicorn's own, the re-raised signal only asks for what is already happening."""

    def stop(_signum: int, _frame: object) -> None:
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)


def _drain_workers(workers: list[_Worker]) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(_DRAIN_SIGNAL)


def _running(workers: list[_Worker]) -> int:
    return sum(1 for worker in workers if worker.process.poll() is None)


class _WorkerSignals:
    """SIGTERM/SIGINT (stop) and the drain signal, caught from before the worker says it is
    ready: the drain signal's default action would kill it."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._drain = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stop.set())
        signal.signal(_DRAIN_SIGNAL, self._drained)

    def _drained(self, _signum: int, _frame: object) -> None:
        self._drain = True
        self._stop.set()

    def wait(self) -> bool:
        """Block until told to stop (False) or to drain (True)."""
        self._stop.wait()
        return self._drain


def _wait_for_stop() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("DICOM node running; stop with Ctrl-C or SIGTERM")
    stop.wait()
