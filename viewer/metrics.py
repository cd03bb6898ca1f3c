"""Prometheus metrics, read from the index at scrape time.

Counting in the index rather than in process memory gives the same answer whichever process
(web node, DICOM worker) is scraped, and survives restarts. Only counts: no patient data.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily
from prometheus_client.registry import Collector

from arkiv.services import Archive
from storage.errors import StorageError


class ArchiveCollector(Collector):
    def __init__(self, archive: Archive) -> None:
        self._archive = archive

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            self._archive.check_ready()
            ready = 1.0
        except StorageError:
            ready = 0.0
        yield GaugeMetricFamily("arkiv_ready", "1 when the index and blob store answer", ready)
        if not ready:
            return
        stats = self._archive.index.statistics()
        for name, value, text in (
            ("arkiv_patients", stats.patients, "Patients in the index"),
            ("arkiv_studies", stats.studies, "Studies in the index"),
            ("arkiv_series", stats.series, "Series in the index"),
            ("arkiv_instances", stats.instances, "Instances in the index"),
            (
                "arkiv_conflicts",
                stats.conflicts,
                "Objects held for review: a different object "
                "arrived under a stored SOP Instance UID",
            ),
            ("arkiv_stored_bytes", stats.stored_bytes, "Bytes of indexed instances"),
            ("arkiv_photos", stats.photos, "Clinical photos and videos"),
            ("arkiv_media_bytes", stats.media_bytes, "Bytes of photos, videos and renditions"),
            ("arkiv_audit_events", stats.audit_events, "Events in the audit log"),
            (
                "arkiv_audit_unsigned_events",
                stats.audit_events - self._archive.index.latest_checkpoint_seq(),
                "Audit events not yet covered by a signed checkpoint",
            ),
        ):
            yield GaugeMetricFamily(name, text, float(value))
        forwarder = self._archive.audit_forwarder
        if forwarder is not None:
            state = forwarder.state()
            yield GaugeMetricFamily(
                "arkiv_audit_forward_lag",
                "Audit events not yet taken by the syslog receiver (kept until it does)",
                float(state.lag),
            )
            yield GaugeMetricFamily(
                "arkiv_audit_forward_connected",
                "1 when the last attempt to reach the syslog receiver succeeded",
                1.0 if state.connected else 0.0,
            )


def registry_for(archive: Archive) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ArchiveCollector(archive))
    return registry
