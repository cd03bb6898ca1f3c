"""Consistency of the index and the blob store (`arkiv fsck`).

A crash between making an object durable and committing its index rows leaves a blob that no
row points at: complete (it was fsynced before it got its name) but invisible. Repair sends it
through the ingest path again, which indexes and audits it; ingest is idempotent, so repairing
while the archive runs is safe even if the original store is just about to commit. Index rows
whose blob is gone cannot be mended here: they are reported, and the object must come again
from its sender or a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arkiv.audit import Actor
from arkiv.errors import ArkivError
from arkiv.ingest import IngestService
from storage.blobs import BlobStore
from storage.errors import StorageError
from storage.index import Index

_DICOM_PREFIX = "dicom/"


@dataclass
class ConsistencyReport:
    objects: int = 0
    indexed: int = 0
    unindexed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    reindexed: list[str] = field(default_factory=list)
    unrepairable: dict[str, str] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """Nothing is missing and nothing was left that could not be mended."""
        return not self.missing and not self.unrepairable


class ConsistencyService:
    def __init__(self, index: Index, blobs: BlobStore, ingest: IngestService, county: str) -> None:
        self._index = index
        self._blobs = blobs
        self._ingest = ingest
        self._actor = Actor(name="arkiv fsck", kind="system", county=county)

    def check(self, repair: bool = False) -> ConsistencyReport:
        indexed = self._index.blob_keys()
        stored = set(self._blobs.keys())
        report = ConsistencyReport(
            objects=len(stored),
            indexed=len(indexed),
            unindexed=sorted(stored - indexed),
            missing=sorted(indexed - stored),
        )
        if repair:
            for key in report.unindexed:
                self._reindex(key, report)
        return report

    def _reindex(self, key: str, report: ConsistencyReport) -> None:
        if not key.startswith(_DICOM_PREFIX):
            report.unrepairable[key] = "not an object the ingest path wrote"
            return
        try:
            self._ingest.ingest_dicom(self._blobs.read(key), self._actor)
        except (ArkivError, StorageError) as exc:
            report.unrepairable[key] = str(exc)
            return
        report.reindexed.append(key)
