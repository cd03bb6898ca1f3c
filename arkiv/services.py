"""The composition root: one `Archive` holds the services every entry point calls.

Adapters (the DICOM node, the web app, the command line) receive an `Archive` and never build
storage themselves, so the rules in the services apply the same way whichever door is used.
"""

from __future__ import annotations

from arkiv.access import AccessGroups, AccessService
from arkiv.accounts import AccountService
from arkiv.audit import Actor, AuditLog, Event, EventType
from arkiv.audit_review import AuditReviewService
from arkiv.audit_syslog import SyslogForwarder
from arkiv.break_glass import BreakGlassService
from arkiv.commitment import CommitmentService
from arkiv.config import Settings
from arkiv.consistency import ConsistencyService
from arkiv.drain import NodeDrain
from arkiv.ingest import IngestService
from arkiv.patient_view import PatientViewService
from arkiv.photo_access import PhotoAccess
from arkiv.photos import PhotoService
from arkiv.reconciliation import ReconciliationService
from arkiv.study_view import StudyViewService
from storage.blobs import BlobStore, FileBlobStore
from storage.errors import StorageError
from storage.index import Index
from storage.s3 import S3BlobStore, S3Location


class Archive:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {settings.data_dir}: {exc}") from exc
        self.index = Index(settings.index_url)
        self.blobs = open_blob_store(settings)
        self.audit = AuditLog(self.index)
        self.drain = NodeDrain()
        self.ingest = IngestService(self.index, self.blobs, self.audit, settings.max_pixels)
        self.break_glass = BreakGlassService(self.index, self.audit, settings)
        self.access = AccessService(
            self.index, self.blobs, self.audit, self.break_glass, settings.audit_group_seconds
        )
        self.commitment = CommitmentService(self.index, self.access, self.audit)
        self.photos = PhotoService(
            settings,
            self.index,
            self.ingest,
            PhotoAccess(
                self.index,
                self.blobs,
                self.audit,
                self.break_glass,
                AccessGroups(settings.audit_group_seconds),
            ),
        )
        self.ingest.on_stored(self.photos.register_dicom)
        self.study_view = StudyViewService(self.index, self.access)
        self.patient_view = PatientViewService(
            self.index, self.audit, self.access, self.photos.access, self.break_glass
        )
        self.audit_review = AuditReviewService(self.index, self.audit, settings)
        self.audit_forwarder: SyslogForwarder | None = None
        """Set in the process holding the audit duties (`arkiv.audit_duties`), for monitoring."""
        self.accounts = AccountService(self.index, self.audit, settings)
        self.reconciliation = ReconciliationService(self.index, self.audit)
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
        self.photos.close()
        self.ingest.close()
        self.index.close()


def open_blob_store(settings: Settings) -> BlobStore:
    """The S3 bucket when one is configured (scale-out), else files under the data directory.

    The S3 store makes no request here: a node whose object store is down still starts, reports
    not-ready and refuses what it cannot keep, and recovers by itself when the store returns.
    """
    if not settings.uses_s3:
        return FileBlobStore(settings.blob_dir)
    return S3BlobStore(
        S3Location(
            endpoint=settings.s3_endpoint,
            bucket=settings.s3_bucket,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
            ca_file=settings.s3_ca_file,
            object_lock_mode=settings.s3_object_lock_mode,
            object_lock_days=settings.s3_object_lock_days,
            part_size=settings.s3_part_size_mb * 1024 * 1024,
            timeout=settings.s3_timeout_seconds,
            retries=settings.s3_retries,
        )
    )
