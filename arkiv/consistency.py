"""Consistency and integrity of the index and the blob store (`arkiv fsck`).

A crash between making an object durable and committing its index rows leaves a blob that no
row points at: complete (it was fsynced before it got its name) but invisible. Repair sends it
through the ingest path again, which indexes and audits it; ingest is idempotent, so repairing
while the archive runs is safe even if the original store is just about to commit.

Index rows whose blob is gone, and blobs whose bytes no longer hash to the SHA-256 recorded at
ingest (found by the scrub, which reads every indexed object as a stream), are mended where the
store keeps an earlier intact copy (`BlobStore.restore`: on a versioned S3 bucket a delete marker
or a later overwrite hides the intact version). The filesystem store keeps one copy: what it has
lost must come again from its sender or a backup, and the report says so.

Each mismatch is a line in the log and a security alert in the audit log, as a read that fails
its checksum is (`arkiv.access`). The scrub reads at a limited rate, so that checking a production
store does not starve ingest of disk or network bandwidth.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from arkiv.audit import Actor, AuditLog, Event, EventType, Outcome
from arkiv.errors import ArkivError
from arkiv.ingest import IngestService
from storage.blobs import BlobStore
from storage.errors import BlobNotFound, StorageError
from storage.index import Index
from storage.records import BlobOwner

log = logging.getLogger(__name__)

_DICOM_PREFIX = "dicom/"
_MEDIA_PREFIX = "media/"
_CHUNK = 1 << 20
_GIVE_UP_AFTER = 5
"""Consecutive objects that cannot be read before the scrub stops: then the store, not an
object, is what fails, and the error goes to the caller."""

MISMATCH = "stored object does not match its SHA-256"

ScrubProgress = Callable[[int, int, int], None]
"""Called after each object the scrub reads: (objects checked, objects to check, bytes read)."""


class RateLimit:
    """A token bucket over bytes read: `take(n)` after reading n bytes sleeps until the average
    since the start (or since the bucket last ran dry) is within `bytes_per_second`.

    The bucket starts empty and holds at most `burst` bytes (default: a quarter of a second's
    worth), so a long scrub never runs ahead by more than that after a pause.
    """

    def __init__(
        self,
        bytes_per_second: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if bytes_per_second <= 0:
            raise ValueError("a rate limit must be positive")
        self._rate = float(bytes_per_second)
        self._burst = burst if burst is not None else self._rate / 4
        self._clock = clock
        self._sleep = sleep
        self._tokens = 0.0
        self._last = clock()

    def take(self, amount: int) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= amount
        if self._tokens < 0:
            self._sleep(-self._tokens / self._rate)


@dataclass
class ConsistencyReport:
    objects: int = 0
    indexed: int = 0
    unindexed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    scrubbed: bool = False
    checked: int = 0
    """Objects the scrub read and hashed."""
    bytes_read: int = 0
    corrupt: list[str] = field(default_factory=list)
    """Objects whose bytes do not hash to the SHA-256 recorded at ingest."""
    unreadable: dict[str, str] = field(default_factory=dict)
    """Objects the scrub could not read, with the error."""
    reindexed: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    """Missing or corrupt objects made intact again from an earlier copy in the store."""
    unrepairable: dict[str, str] = field(default_factory=dict)
    """What repair could not mend, with what the operator should do."""

    @property
    def healthy(self) -> bool:
        """Nothing is missing, corrupt, unreadable or left that could not be mended."""
        mended = set(self.restored)
        return (
            not self.unrepairable
            and not self.unreadable
            and all(key in mended for key in (*self.missing, *self.corrupt))
        )


class ConsistencyService:
    def __init__(
        self,
        index: Index,
        blobs: BlobStore,
        ingest: IngestService,
        county: str,
        audit: AuditLog | None = None,
    ) -> None:
        self._index = index
        self._blobs = blobs
        self._ingest = ingest
        self._audit = audit if audit is not None else AuditLog(index)
        self._actor = Actor(name="arkiv fsck", kind="system", county=county)

    def check(
        self,
        repair: bool = False,
        scrub: bool = False,
        scrub_rate: float | None = None,
        progress: ScrubProgress | None = None,
    ) -> ConsistencyReport:
        """Compare the index with the store; with `scrub`, also hash every indexed object at up
        to `scrub_rate` bytes per second (None or 0: unlimited); with `repair`, mend what can be.

        Raises StorageError when the index or the store cannot be reached.
        """
        digests = self._index.blob_digests()
        stored = set(self._blobs.keys())
        report = ConsistencyReport(
            objects=len(stored),
            indexed=len(digests),
            unindexed=sorted(stored - digests.keys()),
            missing=sorted(digests.keys() - stored),
        )
        for key in report.missing:
            log.error("fsck: object the index refers to is missing from the store: %s", key)
        limit = RateLimit(scrub_rate) if scrub_rate else None
        if scrub:
            self._scrub(sorted(digests.keys() & stored), digests, report, limit, progress)
        if repair:
            for key in report.unindexed:
                self._reindex(key, report)
            for key in report.missing:
                self._restore(key, digests[key], report, limit, "missing")
            for key in report.corrupt:
                self._restore(key, digests[key], report, limit, "corrupt")
        return report

    # -- the scrub -------------------------------------------------------------------------------

    def _scrub(
        self,
        keys: list[str],
        digests: dict[str, str],
        report: ConsistencyReport,
        limit: RateLimit | None,
        progress: ScrubProgress | None,
    ) -> None:
        report.scrubbed = True
        if progress is not None:
            progress(0, len(keys), 0)
        failures = 0
        for done, key in enumerate(keys, 1):
            try:
                actual = self._hash(key, report, limit)
            except BlobNotFound:  # deleted since the listing
                log.error("fsck: object the index refers to is missing from the store: %s", key)
                report.missing.append(key)
                continue
            except (StorageError, OSError) as exc:
                failures += 1
                if failures >= _GIVE_UP_AFTER:
                    raise
                log.error("fsck: cannot read %s: %s", key, exc)
                report.unreadable[key] = str(exc)
                continue
            finally:
                if progress is not None:
                    progress(done, len(keys), report.bytes_read)
            failures = 0
            report.checked += 1
            if actual != digests[key]:
                report.corrupt.append(key)
                self._alert(key, digests[key], actual)
        report.missing.sort()

    def _hash(self, key: str, report: ConsistencyReport, limit: RateLimit | None) -> str:
        """The SHA-256 of what the store holds under `key`, read in chunks at the limited rate."""
        digest = hashlib.sha256()
        with self._blobs.open(key) as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
                report.bytes_read += len(chunk)
                if limit is not None:
                    limit.take(len(chunk))
        return digest.hexdigest()

    def _alert(self, key: str, expected: str, actual: str) -> None:
        """A line in the log and a security alert, as a read that fails its checksum raises."""
        log.error("integrity: %s: %s (found %s, recorded %s)", key, MISMATCH, actual, expected)
        owner = self._owner(key)
        details: dict[str, Any] = {
            "blob_key": key,
            "expected_sha256": expected,
            "actual_sha256": actual,
        }
        patient_ids: tuple[str, ...] = ()
        if owner is not None:
            details["sop_uid"] = owner.sop_uid
            patient_ids = (owner.patient_id,) if owner.patient_id else ()
        self._audit.record(
            Event(
                EventType.SECURITY_ALERT,
                "E",
                self._actor,
                outcome=Outcome.SERIOUS_FAILURE,
                outcome_description=MISMATCH,
                patient_ids=patient_ids,
                study_uids=(owner.study_uid,) if owner is not None else (),
                object_count=1,
                counties=(owner.county,) if owner is not None else (),
                details=details,
            )
        )

    def _owner(self, key: str) -> BlobOwner | None:
        try:
            return self._index.blob_owner(key)
        except StorageError as exc:  # the alert is still written, without the owner
            log.warning("fsck: cannot look up whose object %s is: %s", key, exc)
            return None

    # -- repair ----------------------------------------------------------------------------------

    def _reindex(self, key: str, report: ConsistencyReport) -> None:
        if key.startswith(_MEDIA_PREFIX):
            report.unrepairable[key] = (
                "a rendition of a photo upload interrupted before it was indexed (the uploader "
                "was not told it was stored); safe to delete"
            )
            return
        if not key.startswith(_DICOM_PREFIX):
            report.unrepairable[key] = "not an object the ingest path wrote"
            return
        try:
            self._ingest.ingest_dicom(self._blobs.read(key), self._actor)
        except (ArkivError, StorageError) as exc:
            report.unrepairable[key] = str(exc)
            return
        report.reindexed.append(key)

    def _restore(
        self,
        key: str,
        sha256: str,
        report: ConsistencyReport,
        limit: RateLimit | None,
        problem: str,
    ) -> None:
        """Make an earlier intact copy current again, and believe it only after hashing it."""
        where = self._blobs.describe()
        if problem == "corrupt":
            remedy = (
                "move the damaged object aside (keep it as evidence), then resend the study "
                "from the modality or restore the object from backup"
            )
        else:
            remedy = "resend the study from the modality or restore the object from backup"
        try:
            restored = self._blobs.restore(key, sha256)
        except StorageError as exc:
            report.unrepairable[key] = f"{problem}, and restoring it failed ({exc}); {remedy}"
            return
        if not restored:
            report.unrepairable[key] = f"{problem}, and no intact copy in {where}; {remedy}"
            return
        try:
            actual = self._hash(key, report, limit)
        except (StorageError, OSError) as exc:
            report.unrepairable[key] = f"{problem}; restored, but cannot read it back ({exc})"
            return
        if actual != sha256:
            report.unrepairable[key] = (
                f"{problem}; the copy restored in {where} does not match its SHA-256 either; "
                f"{remedy}"
            )
            return
        log.warning("fsck: restored an intact copy of %s object %s", problem, key)
        report.restored.append(key)
