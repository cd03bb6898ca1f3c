"""Running the archive's servers in one process: the DICOM node in its own threads, the web app
under uvicorn in the main thread, both on one `Archive`."""

from __future__ import annotations

import logging

import uvicorn

from arkiv.config import Settings
from arkiv.services import Archive

log = logging.getLogger(__name__)


def run(settings: Settings, *, dicom: bool, web: bool) -> int:
    from dicom_node.server import DicomNode
    from viewer.app import create_app

    archive = Archive(settings)
    archive.record_application_event("110120 Application Start")
    if web and archive.index.user_count() == 0:
        log.warning(
            "no accounts yet: create one with `arkiv user add NAME --role clinician "
            "--county %s --data %s`",
            settings.county.value,
            settings.data_dir,
        )
    node = DicomNode(archive) if dicom else None
    try:
        if node is not None:
            node.start(settings.host, settings.dicom_port)
        if web:
            config = uvicorn.Config(
                create_app(archive),
                host=settings.host,
                port=settings.http_port,
                access_log=False,  # URLs can hold search keys; reads are in the audit log instead
                log_level="info",
                timeout_graceful_shutdown=10,
            )
            uvicorn.Server(config).run()
        elif node is not None:
            _wait_for_signal()
    finally:
        if node is not None:
            node.stop()
        archive.record_application_event("110121 Application Stop")
        archive.close()
    return 0


def _wait_for_signal() -> None:
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log.info("DICOM node running; stop with Ctrl-C or SIGTERM")
    stop.wait()
