"""The composition root: one `Archive` holds the services every entry point calls.

Adapters (the DICOM node, the web app, the command line) receive an `Archive` and never build
storage themselves, so the rules in the services apply the same way whichever door is used.
"""

from __future__ import annotations

from arkiv.access import AccessService
from arkiv.accounts import AccountService
from arkiv.audit import Actor, AuditLog, Event, EventType
from arkiv.audit_review import AuditReviewService
from arkiv.audit_syslog import SyslogForwarder
from arkiv.break_glass import BreakGlassService
from arkiv.config import Settings
from arkiv.consistency import ConsistencyService
from arkiv.ingest import IngestService
from storage.blobs import FileBlobStore
from storage.errors import StorageError
from storage.index import Index


class Archive:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {settings.data_dir}: {exc}") from exc
        self.index = Index(settings.index_url)
        self.blobs = FileBlobStore(settings.blob_dir)
        self.audit = AuditLog(self.index)
        self.ingest = IngestService(self.index, self.blobs, self.audit, settings.max_pixels)
        self.break_glass = BreakGlassService(self.index, self.audit, settings)
        self.access = AccessService(
            self.index, self.blobs, self.audit, self.break_glass, settings.audit_group_seconds
        )
        self.audit_review = AuditReviewService(self.index, self.audit, settings)
        self.audit_forwarder: SyslogForwarder | None = None
        """Set by the process that forwards the log (`arkiv.runner`), for monitoring."""
        self.accounts = AccountService(self.index, self.audit, settings)
        self.consistency = ConsistencyService(
            self.index, self.blobs, self.ingest, settings.county.value
        )

    def system_actor(self) -> Actor:
        return Actor(name=self.settings.ae_title, kind="system", county=self.settings.county.value)

    def record_application_event(self, what: str) -> None:
        """Application start and stop (PS3.15 110100) mark the spans in which events can exist."""
        self.audit.record(
            Event(
                EventType.APPLICATION_ACTIVITY, "E", self.system_actor(), details={"subtype": what}
            )
        )

    def check_ready(self) -> None:
        """Raise StorageError unless both the index and the blob store answer."""
        self.index.check()
        self.blobs.check()

    def close(self) -> None:
        self.ingest.close()
        self.index.close()
