"""One import run: objects from an old archive through the ingest path, each accounted for.

Every object found goes through `IngestService.ingest_dicom` exactly as a modality's C-STORE
would, owned by the county the operator named, with its origin (the file's path, the PACS and
study it came from) kept as the instance's source in the index and in full in the audit event.
The run only counts and explains: what was imported, what was already there byte for byte (a
second run imports nothing twice), what differs from an object already stored under the same
SOP Instance UID (held for review by the ingest path, never replacing the first), and what was
refused and why. The archive being unavailable is not a refusal: it stops the run, since going
on would only refuse everything after it; a run started again continues.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from arkiv.audit import Actor
from arkiv.errors import InvalidObject, UnsupportedObject
from arkiv.ingest import IngestOutcome, IngestService


class Disposition(StrEnum):
    IMPORTED = "imported"
    DUPLICATE = "duplicate"
    """The same bytes were already stored under this SOP Instance UID: skipped."""
    DIFFERS = "differs"
    """Another object is stored under this SOP Instance UID: held for review, not imported."""
    REFUSED = "refused"


@dataclass(frozen=True)
class SourceObject:
    """One object as an import source found it."""

    origin: str
    """Where: `file:/mnt/old/IMG0001`, `zip:/mnt/x.zip!dir/IMG1.dcm`,
    `dicomdir:/media/DICOMDIR!IMAGES/IM1`, `pacs:OLDPACS@10.0.0.5:104/study/1.2.3`."""
    data: bytes


@dataclass
class ImportReport:
    """What a run did, for the operator's terminal and for the auditor (written as JSON)."""

    county: str
    operator: str
    sources: list[str] = field(default_factory=list)
    started_at: str = field(default_factory=lambda: _now())
    finished_at: str = ""
    imported: int = 0
    duplicates: int = 0
    bytes_imported: int = 0
    differing: list[dict[str, str]] = field(default_factory=list)
    """{"origin", "sop_instance_uid", "reason"} per object that differs from the stored one."""
    refused: list[dict[str, str]] = field(default_factory=list)
    """{"origin", "reason"} per object (or file) that could not be imported."""
    patient_conflicts: list[dict[str, Any]] = field(default_factory=list)
    """Filled by the reconciliation after the run: same ID, different people, and the like."""
    stopped: str = ""
    """Why the run stopped before the end (the archive unavailable, interrupted)."""
    study_uids: set[str] = field(default_factory=set)
    """Studies the run's objects belong to (for the patient conflicts; not in the JSON)."""

    def refuse(self, origin: str, reason: str) -> None:
        self.refused.append({"origin": origin, "reason": reason})

    def finish(self, stopped: str = "") -> None:
        self.finished_at = _now()
        self.stopped = stopped

    def as_json(self) -> dict[str, Any]:
        return {
            "county": self.county,
            "operator": self.operator,
            "sources": self.sources,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "bytes_imported": self.bytes_imported,
            "differing": self.differing,
            "refused": self.refused,
            "patient_conflicts": self.patient_conflicts,
            "stopped": self.stopped,
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_json(), indent=2, ensure_ascii=False) + "\n", "utf-8")

    def text(self) -> str:
        """The readable summary: the counts, then each object not imported and why."""
        lines = [
            f"import into {self.county} by {self.operator}, {self.started_at} – {self.finished_at}",
            f"  imported {self.imported} ({self.bytes_imported / 1e6:.1f} MB), "
            f"already stored {self.duplicates}, differing {len(self.differing)}, "
            f"refused {len(self.refused)}, patient conflicts {len(self.patient_conflicts)}",
        ]
        if self.stopped:
            lines.append(f"  STOPPED: {self.stopped}; run the same import again to continue")
        for item in self.differing:
            lines.append(f"  differs  {item['origin']}: {item['reason']}")
        for item in self.refused:
            lines.append(f"  refused  {item['origin']}: {item['reason']}")
        for conflict in self.patient_conflicts:
            lines.append(f"  conflict {conflict.get('summary', conflict)}")
        return "\n".join(lines)


Observer = Callable[[SourceObject, Disposition], None]


class ImportRun:
    """Feeds found objects to the ingest path as `operator` for `county`; `observe` is told of
    each outcome (the progress bars)."""

    def __init__(
        self,
        ingest: IngestService,
        actor: Actor,
        report: ImportReport,
        observe: Observer | None = None,
    ) -> None:
        self._ingest = ingest
        self._actor = actor
        self.report = report
        self._observe = observe

    def ingest(self, found: SourceObject) -> Disposition:
        """Import one object. ArchiveUnavailable propagates: the caller stops the run."""
        try:
            result = self._ingest.ingest_dicom(found.data, self._actor, origin=found.origin)
        except (InvalidObject, UnsupportedObject) as error:
            self.report.refuse(found.origin, str(error))
            return self._told(found, Disposition.REFUSED)
        self.report.study_uids.add(result.study_uid)
        if result.outcome is IngestOutcome.STORED:
            self.report.imported += 1
            self.report.bytes_imported += len(found.data)
            return self._told(found, Disposition.IMPORTED)
        if result.outcome is IngestOutcome.DUPLICATE:
            self.report.duplicates += 1
            return self._told(found, Disposition.DUPLICATE)
        self.report.differing.append(
            {"origin": found.origin, "sop_instance_uid": result.sop_uid, "reason": result.message}
        )
        return self._told(found, Disposition.DIFFERS)

    def _told(self, found: SourceObject, disposition: Disposition) -> Disposition:
        if self._observe is not None:
            self._observe(found, disposition)
        return disposition


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
