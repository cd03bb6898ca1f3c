"""Audit benchmark: what the audit log costs, and whether auditors can use it at a year's size.

Run from the project root::

    .venv/bin/python -m bench.audit                        # everything, defaults (see --help)
    .venv/bin/python -m bench.audit --sections search --events 1000000

Four questions, each answered by a section:

* **ingest** — objects/s through `IngestService.ingest_dicom` in this process, with the audit
  event in the index transaction (the product) and without it (a no-op audit log), in the same
  run, the objects handed to the two variants interleaved one by one, each repetition on new
  data directories. In-process, so the figure is the audit's share of the ingest path and not
  DIMSE's. Also: one event's cost in a transaction of its own and inside the caller's.
* **reads** — the access path with and without audit: `instances_for_read` alone (metadata),
  plus `read_bytes` (retrieve), plus a 128-pixel render (thumbnail, each read the first of its
  window so each writes an event), and repeated thumbnail reads of one series within the
  grouping window (no new event: the case the grouping exists for).
* **verify** — `AuditLog.verify()` in events/s over a synthetic log (default one million).
* **search** — auditors' searches over a synthetic year of ten million events (400 clinicians
  in three counties, 200 000 patients), cold and warm, through `AuditReviewService` as the web
  app calls it; statements slower than a threshold get SQLite's query plan printed.

The no-op audit log lives here and only here: the product has no switch to turn auditing off.
Synthetic logs are cached under ``~/.cache/arkiv-bench/`` by size and seed, because generating
ten million hash-chained events takes minutes. Searches through the service write their own
110101 "audit log used" events into the cached log, as they would in production; the chain
stays whole. See docs/PERFORMANCE.md ("Audit") for results and how to read them.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import gc
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.filewriter import dcmwrite
from pydicom.uid import DigitalIntraOralXRayImageStorageForPresentation
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from arkiv.access import AccessService
from arkiv.accounts import Principal, Role
from arkiv.audit import Actor, AuditLog, Event, EventType, chain_hash, to_record
from arkiv.break_glass import EMERGENCY_OVERRIDE_STARTED, BreakGlassService
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.ingest import IngestService
from arkiv.rendering import RenderRequest
from arkiv.services import Archive
from bench import dataset as ds
from bench.ingest import machine_info, project_revision
from bench.peers import terminate_as_interrupt
from storage.audit_bulk import (
    bulk_append_audit,
    database_bytes,
    evict_from_page_cache,
    query_plans,
)
from storage.index import IndexTransaction
from storage.records import AuditEvent, AuditQuery, NewAuditEvent, StudyQuery

console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)

SECTIONS = ("ingest", "reads", "verify", "search")
IMAGE_SETS = ("dental", "tiny")
#: Bump when the synthetic log changes, so stale cached logs are not reused.
LOG_FORMAT_VERSION = 1
DEFAULT_SEED = 20250101
KEY_COUNTY = "vestfold"
"""The county auditor's county; search keys (patients, users) are picked from it."""
INGEST_ACTOR = Actor(name="BENCH_IO", kind="dicom-ae", county="vestfold", address="127.0.0.1")
CLINICIAN = Principal("bench-tannlege", Role.CLINICIAN, County.VESTFOLD, address="10.0.0.1")
THUMBNAIL = RenderRequest(max_size=128)  # the size of the viewer's thumbnail route


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def overhead(with_audit: float, without: float) -> float:
    """How much longer the audited operation takes, in % of the unaudited one."""
    return (with_audit - without) / without * 100.0 if without > 0 else math.nan


# ---------------------------------------------------------------------------------------------
# The baseline: the same services with an audit log that keeps nothing


class NullAuditLog(AuditLog):
    """Writes nothing and hands back a placeholder event: the "without audit" baseline.

    Only in the benchmark. The product cannot switch auditing off, and must not be able to.
    """

    def record(self, event: Event) -> AuditEvent:
        return _placeholder(event)

    def record_in(self, tx: IndexTransaction, event: Event) -> AuditEvent:
        return _placeholder(event)


def _placeholder(event: Event) -> AuditEvent:
    return AuditEvent(seq=0, prev_hash="", hash="", **vars(to_record(event)))


def open_archive(data_dir: Path, audited: bool) -> Archive:
    """The composition root as the product builds it, or with ingest and access unaudited.

    The unaudited variant rebuilds exactly the services the product composes (see
    `arkiv.services.Archive`), handing them `NullAuditLog` instead of the real log.
    """
    settings = Settings(data_dir=data_dir)
    archive = Archive(settings)
    if not audited:
        null = NullAuditLog(archive.index)
        archive.ingest.close()
        archive.ingest = IngestService(archive.index, archive.blobs, null, settings.max_pixels)
        archive.break_glass = BreakGlassService(archive.index, null, settings)
        archive.access = AccessService(
            archive.index, archive.blobs, null, archive.break_glass, settings.audit_group_seconds
        )
    return archive


def variant_name(audited: bool) -> str:
    return "with audit" if audited else "without audit"


# ---------------------------------------------------------------------------------------------
# Images


@dataclass(frozen=True)
class ImageSet:
    """Part 10 objects held in memory, so that reading them from disk is not measured."""

    name: str
    description: str
    objects: tuple[bytes, ...]

    @property
    def total_bytes(self) -> int:
        return sum(len(o) for o in self.objects)


def dental_images(spec: ds.DatasetSpec, cache_root: Path) -> ImageSet:
    """The ingest benchmark's synthetic dental set (bench.dataset), generated once and cached."""
    dataset, _reused = ds.ensure(spec, cache_root)
    objects = tuple(dataset.abspath(f).read_bytes() for f in dataset.files)
    return ImageSet(
        name="dental",
        description=(
            f"{spec.intraoral} IO 1024×768 + {spec.panoramic} PX 2800×1400, "
            f"{dataset.total_bytes / 1e6:.0f} MB"
        ),
        objects=objects,
    )


def tiny_images(count: int, patients: int = 10, seed: int = DEFAULT_SEED) -> ImageSet:
    """Small intra-oral objects (64×64): the per-object work is smallest, so the audit's share
    of it is largest — the upper bound of the ingest overhead."""
    rng = random.Random(seed)
    objects: list[bytes] = []
    people = [ds.synthetic_national_id(rng) for _ in range(max(1, patients))]
    spec = ds.DatasetSpec(intraoral=count, panoramic=0, patients=patients, seed=seed)
    for i in range(count):
        p = i % len(people)
        pid, birth, sex = people[p]
        dataset = ds._base_dataset(
            sop_class=str(DigitalIntraOralXRayImageStorageForPresentation),
            sop_instance=ds._uid(spec, "tiny-instance", i),
            modality="IO",
            patient={
                "id": pid,
                "name": f"Tiny^{p}",
                "birth_date": birth.strftime("%Y%m%d"),
                "sex": sex,
            },
            study={
                "uid": ds._uid(spec, "tiny-study", p),
                "date": "20250314",
                "time": "101500",
                "accession": f"T{p:05d}",
                "id": str(p + 1),
            },
            series_uid=ds._uid(spec, "tiny-series", p),
            series_number=1,
            series_description="Bitewing",
            instance_number=i // len(people) + 1,
            pixels=ds.make_pixels((64, 64), 2, [seed, i]),
            pixel_spacing="0.0185\\0.0185",
        )
        buffer = BytesIO()
        dcmwrite(buffer, dataset, enforce_file_format=True)
        objects.append(buffer.getvalue())
    return ImageSet(
        name="tiny",
        description=f"{count} IO 64×64, {sum(len(o) for o in objects) / 1e6:.1f} MB",
        objects=tuple(objects),
    )


# ---------------------------------------------------------------------------------------------
# 1. Ingest


@dataclass(frozen=True)
class IngestRun:
    image_set: str
    audited: bool
    repetition: int
    objects: int
    seconds: float
    """Sum of the per-object times (the other variant's objects, interleaved, not counted)."""
    objects_per_s: float
    median_ms_per_object: float
    audit_events: int
    latencies_ms: list[float]


def _interleaved(index: int, repetition: int) -> tuple[bool, bool]:
    """Which variant goes first for one operation: it alternates from one to the next, and the
    pattern flips between repetitions, so neither variant always runs on a cache the other
    warmed or in the wake of the other's fsync."""
    return (True, False) if (index + repetition) % 2 == 0 else (False, True)


def bench_ingest(
    images: ImageSet, repeat: int, workdir: Path, report: Callable[[str], None] = console.print
) -> list[IngestRun]:
    """Per repetition, both variants on new data directories get the objects one by one,
    interleaved. On a shared, noisy host a burst of someone else's load then falls on both
    variants alike; alternating whole runs would let it land on one."""
    warm = ImageSet(images.name, "warm-up", images.objects[: min(5, len(images.objects))])
    runs: list[IngestRun] = []
    for rep in range(0, repeat + 1):  # repetition 0 warms up (imports, first parses) and is dropped
        objects = warm.objects if rep == 0 else images.objects
        dirs = {a: workdir / f"ingest-{images.name}-{rep}-{int(a)}" for a in (True, False)}
        os.sync()  # the previous repetition's writeback should not land in this one
        archives = {a: open_archive(dirs[a], a) for a in (True, False)}
        times: dict[bool, list[float]] = {True: [], False: []}
        try:
            gc.collect()
            for i, data in enumerate(objects):
                for audited in _interleaved(i, rep):
                    started = time.perf_counter()
                    archives[audited].ingest.ingest_dicom(data, INGEST_ACTOR)
                    times[audited].append((time.perf_counter() - started) * 1000)
            events = {a: archives[a].index.audit_head()[0] for a in (True, False)}
        finally:
            for archive in archives.values():
                archive.close()
            for path in dirs.values():
                shutil.rmtree(path, ignore_errors=True)
        if rep == 0:
            continue
        for audited in (True, False):
            seconds = sum(times[audited]) / 1000
            run = IngestRun(
                image_set=images.name,
                audited=audited,
                repetition=rep,
                objects=len(objects),
                seconds=seconds,
                objects_per_s=len(objects) / seconds,
                median_ms_per_object=median(times[audited]),
                audit_events=events[audited],
                latencies_ms=[round(t, 3) for t in times[audited]],
            )
            runs.append(run)
            report(
                f"ingest {images.name:6} rep {rep} {variant_name(audited):13}: "
                f"{run.objects_per_s:7.1f} obj/s, median {run.median_ms_per_object:.2f} ms/obj, "
                f"{run.audit_events} audit events"
            )
    return runs


def _paired_ms(with_audit: Sequence[float], without: Sequence[float]) -> float:
    """Median of the per-operation differences (same object or read, same moment)."""
    return median([a - b for a, b in zip(with_audit, without, strict=True)])


def summarize_ingest(runs: Sequence[IngestRun]) -> dict[str, Any]:
    with_audit = [r for r in runs if r.audited]
    without = [r for r in runs if not r.audited]
    with_rate = median([r.objects_per_s for r in with_audit])
    without_rate = median([r.objects_per_s for r in without])
    paired: list[float] = []
    for a in with_audit:
        b = next(r for r in without if r.repetition == a.repetition)
        paired.extend(x - y for x, y in zip(a.latencies_ms, b.latencies_ms, strict=True))
    return {
        "image_set": runs[0].image_set if runs else "",
        "objects": runs[0].objects if runs else 0,
        "with_audit_objects_per_s": with_rate,
        "without_audit_objects_per_s": without_rate,
        "with_audit_runs": [round(r.objects_per_s, 1) for r in with_audit],
        "without_audit_runs": [round(r.objects_per_s, 1) for r in without],
        "with_audit_median_ms_per_object": median([r.median_ms_per_object for r in with_audit]),
        "without_audit_median_ms_per_object": median([r.median_ms_per_object for r in without]),
        # Throughput overhead: how much longer the same objects take with the audit.
        "overhead_percent": overhead(1 / with_rate, 1 / without_rate),
        "audit_ms_per_object_paired": median(paired),
    }


@dataclass(frozen=True)
class AppendCost:
    """What one audit event costs to write, in its two situations (medians, ms)."""

    events: int
    own_transaction_ms: float
    """`AuditLog.record`: a transaction of its own, committed with an fsync (reads, searches)."""
    in_transaction_ms: float
    """`AuditLog.record_in` inside a transaction that stays open: hash and statements only, the
    commit belonging to what the event records (ingest)."""


def bench_append(workdir: Path, events: int = 300, rounds: int = 3) -> AppendCost:
    """Split the audit's cost into its statements and its commit, to explain the figures of
    ingest (event inside the object's transaction) and reads (event in a transaction of its own,
    committed before the read)."""
    data_dir = workdir / "append"
    archive = Archive(Settings(data_dir=data_dir))
    event = Event(
        EventType.INSTANCES_ACCESSED,
        "R",
        CLINICIAN.actor(),
        patient_ids=("01818012345",),
        study_uids=("1.2.826.0.1.3680043.8.498.1.2.3",),
        object_count=1,
        details={"purpose": "thumbnail", "series_uid": "1.2.826.0.1.3680043.8.498.1.2.3.1"},
        counties=("vestfold",),
    )
    own: list[float] = []
    inner: list[float] = []
    try:
        for _ in range(rounds):
            for _ in range(events):
                started = time.perf_counter()
                archive.audit.record(event)
                own.append((time.perf_counter() - started) * 1000)
            with archive.index.transaction() as tx:
                for _ in range(events):
                    started = time.perf_counter()
                    archive.audit.record_in(tx, event)
                    inner.append((time.perf_counter() - started) * 1000)
    finally:
        archive.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return AppendCost(events * rounds, median(own), median(inner))


# ---------------------------------------------------------------------------------------------
# 2. Reads


@dataclass(frozen=True)
class Target:
    study_uid: str
    series_uid: str
    sop_uid: str


@dataclass(frozen=True)
class ReadRun:
    image_set: str
    case: str
    audited: bool
    repetition: int
    operations: int
    seconds: float
    ms_per_operation: float
    median_ms: float
    audit_events: int
    latencies_ms: list[float]


READ_CASES = ("metadata", "retrieve", "thumbnail", "thumbnail, grouped")
_READ_CASE_NOTES = {
    "metadata": "instances_for_read of one instance (the index lookup and the event)",
    "retrieve": "instances_for_read + read_bytes (SHA-256 checked) of one instance",
    "thumbnail": "instances_for_read + 128 px JPEG; every read the first of its window",
    "thumbnail, grouped": "the same, repeated for one user and series within the window",
}


def prepare_reads(images: ImageSet, data_dir: Path) -> list[Target]:
    """Ingest the set (audited, as the product does) and list what there is to read."""
    archive = open_archive(data_dir, audited=True)
    try:
        for data in images.objects:
            archive.ingest.ingest_dicom(data, INGEST_ACTOR)
        found = archive.index.find_instances(StudyQuery(limit=1_000_000))
    finally:
        archive.close()
    return [Target(i.study_uid, i.series_uid, i.sop_uid) for i in found]


def read_one(archive: Archive, case: str, target: Target, address: str) -> None:
    """One read as the web app's route for it does it (see viewer/routers/dicomweb.py)."""
    access = archive.access
    if case == "metadata":
        access.instances_for_read(
            CLINICIAN, "metadata", target.study_uid, target.series_uid, target.sop_uid
        )
    elif case == "retrieve":
        found = access.instances_for_read(
            CLINICIAN, "retrieve", target.study_uid, target.series_uid, target.sop_uid, True
        )
        access.read_bytes(CLINICIAN, found[0])
    elif case in ("thumbnail", "thumbnail, grouped"):
        # ungrouped: a new source address per read, so each read is the first of its window
        who = CLINICIAN.at(address) if case == "thumbnail" else CLINICIAN
        found = access.instances_for_read(
            who, "thumbnail", target.study_uid, target.series_uid, target.sop_uid
        )
        access.render(who, found[0], THUMBNAIL)
    else:
        raise ValueError(f"unknown read case {case!r}")


def read_case(
    archives: dict[bool, Archive], case: str, targets: Sequence[Target], repetition: int
) -> dict[bool, tuple[list[float], int]]:
    """Run one read case over `targets` on both variants, interleaved per read.

    Returns per variant the read times in ms and the audit events the reads wrote.
    """
    if case == "thumbnail, grouped":  # open each series' window, so the timed reads are repeats
        for archive in archives.values():
            for study_uid, series_uid in {(t.study_uid, t.series_uid) for t in targets}:
                archive.access.instances_for_read(CLINICIAN, "thumbnail", study_uid, series_uid)
    before = {a: archive.index.audit_head()[0] for a, archive in archives.items()}
    times: dict[bool, list[float]] = {True: [], False: []}
    gc.collect()
    for i, target in enumerate(targets):
        address = f"10.{200 + repetition}.{i >> 8 & 255}.{i & 255}"
        for audited in _interleaved(i, repetition):
            started = time.perf_counter()
            read_one(archives[audited], case, target, address)
            times[audited].append((time.perf_counter() - started) * 1000)
    return {
        a: (times[a], archive.index.audit_head()[0] - before[a]) for a, archive in archives.items()
    }


def bench_reads(
    images: ImageSet,
    repeat: int,
    workdir: Path,
    max_reads: int,
    cases: Sequence[str] = READ_CASES,
    report: Callable[[str], None] = console.print,
) -> list[ReadRun]:
    """Each variant reads its own copy of the same objects (ingested twice, so each counts its
    own events); reads are interleaved one by one. Every repetition opens fresh services, so
    the grouping windows start empty."""
    dirs = {a: workdir / f"reads-{images.name}-{int(a)}" for a in (True, False)}
    targets = {a: prepare_reads(images, dirs[a]) for a in (True, False)}
    if targets[True] != targets[False]:
        raise RuntimeError("the two copies of the read data set differ")
    step = max(1, len(targets[True]) // max_reads)
    chosen = targets[True][::step][:max_reads]
    runs: list[ReadRun] = []
    try:
        for rep in range(0, repeat + 1):  # repetition 0 warms up (first renders, page cache)
            archives = {a: open_archive(dirs[a], a) for a in (True, False)}
            try:
                for case in cases:
                    result = read_case(archives, case, chosen[:3] if rep == 0 else chosen, rep)
                    if rep == 0:
                        continue
                    for audited in (True, False):
                        times, events = result[audited]
                        run = ReadRun(
                            image_set=images.name,
                            case=case,
                            audited=audited,
                            repetition=rep,
                            operations=len(times),
                            seconds=sum(times) / 1000,
                            ms_per_operation=sum(times) / len(times),
                            median_ms=median(times),
                            audit_events=events,
                            latencies_ms=[round(t, 3) for t in times],
                        )
                        runs.append(run)
                        report(
                            f"reads {images.name:6} rep {rep} {variant_name(audited):13} "
                            f"{case:18}: {run.ms_per_operation:7.2f} ms/read "
                            f"(median {run.median_ms:.2f}), {events} events"
                        )
            finally:
                for archive in archives.values():
                    archive.close()
    finally:
        for path in dirs.values():
            shutil.rmtree(path, ignore_errors=True)
    return runs


def summarize_reads(runs: Sequence[ReadRun]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for case in dict.fromkeys(r.case for r in runs):
        with_audit = [r for r in runs if r.case == case and r.audited]
        without = [r for r in runs if r.case == case and not r.audited]
        with_ms = median([r.ms_per_operation for r in with_audit])
        without_ms = median([r.ms_per_operation for r in without])
        paired: list[float] = []
        for a in with_audit:
            b = next(r for r in without if r.repetition == a.repetition)
            paired.extend(x - y for x, y in zip(a.latencies_ms, b.latencies_ms, strict=True))
        rows.append(
            {
                "image_set": runs[0].image_set,
                "case": case,
                "what": _READ_CASE_NOTES.get(case, ""),
                "reads_per_run": with_audit[0].operations if with_audit else 0,
                "with_audit_ms": with_ms,
                "without_audit_ms": without_ms,
                "with_audit_runs": [round(r.ms_per_operation, 3) for r in with_audit],
                "without_audit_runs": [round(r.ms_per_operation, 3) for r in without],
                "audit_ms_per_read": with_ms - without_ms,
                "audit_ms_per_read_paired": median(paired),
                "overhead_percent": overhead(with_ms, without_ms),
                "events_per_run": [r.audit_events for r in with_audit],
                "events_per_run_without": [r.audit_events for r in without],
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# A synthetic year of audit events

_COUNTIES = (("vestfold", "VF", 0.40), ("buskerud", "BU", 0.35), ("telemark", "TM", 0.25))
_CLINICS_PER_COUNTY = {"vestfold": 12, "buskerud": 10, "telemark": 8}
_STUDY_ROOT = "1.2.826.0.1.3680043.8.498"
_IO_CLASS = str(DigitalIntraOralXRayImageStorageForPresentation)
_PX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_READ_PURPOSES = ("thumbnail", "rendered", "metadata", "retrieve")
_READ_WEIGHTS = (0.45, 0.33, 0.17, 0.05)
_GROUPED = frozenset({"thumbnail", "rendered", "frames"})
_REASONS = (
    ("akutt", "Akutt behandling"),
    ("henvisning", "Pasienten er henvist til oss fra en annen fylkeskommune"),
    ("flytting", "Pasienten har flyttet og behandles nå hos oss"),
)
_NAMES = ("Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen", "Nilsen", "Berg")
_US_PER_DAY = 86_400_000_000
_US_PER_S = 1_000_000
_TYPES = {t: (t.code, t.meaning) for t in EventType}
_READ_CUMULATIVE = [sum(_READ_WEIGHTS[: i + 1]) for i in range(len(_READ_WEIGHTS))]


@dataclass(frozen=True)
class SyntheticUser:
    name: str
    county: str
    role: str
    address: str
    clinic: int


@dataclass
class LogStats:
    """What the generator wrote, so the searches can pick typical and extreme keys."""

    events: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    by_patient: list[int] = field(default_factory=list)
    by_user: dict[str, int] = field(default_factory=dict)
    first_time: str = ""
    last_time: str = ""


class SyntheticLog:
    """A year of the archive's audit log, shaped like the services write it.

    About 400 clinicians in 30 clinics of three counties see about 200 000 patients. A visit is
    a patient search, the images the clinic's modalities send (110104 C), and the clinician's
    reads — thumbnails and rendered images (grouped per series and minute, as the access path
    records them), metadata, sometimes a retrieve. Around these: sign-ins and sign-outs (a few
    failed), break-the-glass accesses to another county's patients and the reads under them,
    lookups that find nothing, auditors' own use of the log, restarts, and a handful of integrity
    alerts. Weekdays in working hours, little at weekends, a quiet July. Patients' visit counts
    are skewed (a few are seen very often). Deterministic for a seed; events in time order.
    """

    def __init__(
        self,
        events: int,
        seed: int = DEFAULT_SEED,
        patients: int = 200_000,
        clinicians: int = 400,
        end: dt.datetime | None = None,
    ) -> None:
        self.total = events
        self.seed = seed
        self.rng = random.Random(seed)
        rng = self.rng
        end = end or dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        self.end_day = end.date()
        self.stats = LogStats(by_patient=[0] * patients)
        self.users: list[SyntheticUser] = []
        self.clinic_users: list[list[int]] = []
        self.clinic_county: list[str] = []
        self.clinic_modalities: list[tuple[str, str]] = []
        self.county_clinics: dict[str, list[int]] = {}
        for c, (county, abbr, share) in enumerate(_COUNTIES):
            staff = max(1, round(clinicians * share))
            clinics = min(_CLINICS_PER_COUNTY[county], staff)  # every clinic has someone
            first = len(self.clinic_county)
            for k in range(clinics):
                self.clinic_county.append(county)
                self.clinic_users.append([])
                self.clinic_modalities.append((f"{abbr}{k + 1:02d}_IO", f"{abbr}{k + 1:02d}_PX"))
            self.county_clinics[county] = list(range(first, first + clinics))
            for u in range(staff):
                clinic = first + u % clinics
                self.clinic_users[clinic].append(len(self.users))
                self.users.append(
                    SyntheticUser(
                        name=f"{abbr.lower()}-tannlege-{u + 1:03d}",
                        county=county,
                        role="clinician",
                        address=f"10.{c + 1}.{clinic - first + 1}.{10 + u // clinics}",
                        clinic=clinic,
                    )
                )
        self.auditors = [
            SyntheticUser(f"personvernombud-{county}", county, "auditor", f"10.{c + 1}.250.2", -1)
            for c, (county, _abbr, _share) in enumerate(_COUNTIES)
        ]
        seen: set[str] = set()
        self.patient_ids: list[str] = []
        self.patient_clinic: list[int] = []
        cumulative: list[float] = []
        total_weight = 0.0
        shares = [share for _county, _abbr, share in _COUNTIES]
        for _ in range(patients):
            while True:
                pid = ds.synthetic_national_id(rng)[0]
                if pid not in seen:
                    seen.add(pid)
                    break
            county = rng.choices(_COUNTIES, weights=shares)[0][0]
            self.patient_ids.append(pid)
            self.patient_clinic.append(rng.choice(self.county_clinics[county]))
            total_weight += min(rng.paretovariate(1.6), 60.0)  # a few patients come very often
            cumulative.append(total_weight)
        self.cumulative = cumulative
        self.patient_studies = [0] * patients
        self.county_patients: dict[str, list[int]] = {county: [] for county, _a, _s in _COUNTIES}
        for p, clinic in enumerate(self.patient_clinic):
            self.county_patients[self.clinic_county[clinic]].append(p)

    # -- building blocks ---------------------------------------------------------------------

    def _stamp(self, day_prefix: str, us: int) -> str:
        us = min(max(us + (self.rng.getrandbits(20) & 0xFFFFF), 0), _US_PER_DAY - 1)
        seconds, micro = divmod(us, _US_PER_S)
        hours, rest = divmod(seconds, 3600)
        return f"{day_prefix}{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.{micro:06d}Z"

    def _study(self, p: int, number: int) -> str:
        return f"{_STUDY_ROOT}.{self.seed}.{p + 1}.{number}"

    def _event(
        self,
        out: list[NewAuditEvent],
        stamp: str,
        kind: EventType,
        action: str,
        who: SyntheticUser | tuple[str, str, str, str],
        *,
        outcome: int = 0,
        description: str = "",
        patients: tuple[int, ...] = (),
        study_uids: tuple[str, ...] = (),
        objects: int = 0,
        query: str = "",
        details: dict[str, Any] | None = None,
        counties: tuple[str, ...] = (),
    ) -> None:
        if isinstance(who, SyntheticUser):
            name, actor_kind, county, address, role = (
                who.name,
                "user",
                who.county,
                who.address,
                who.role,
            )
        else:
            name, actor_kind, county, address = who
            role = ""
        for p in patients:
            self.stats.by_patient[p] += 1
        self.stats.by_user[name] = self.stats.by_user.get(name, 0) + 1
        code, meaning = _TYPES[kind]
        out.append(
            NewAuditEvent(
                recorded_at=stamp,
                event_id=code,
                event_name=meaning,
                action=action,
                outcome=outcome,
                outcome_description=description,
                actor=name,
                actor_kind=actor_kind,
                actor_role=role,
                county=county,
                source_address=address,
                patient_ids=tuple(self.patient_ids[p] for p in patients),
                study_uids=study_uids,
                object_count=objects,
                query=query,
                details=details or {},
                counties=tuple(sorted({county, *counties})),
            )
        )

    def _patient(self) -> int:
        return bisect.bisect(self.cumulative, self.rng.random() * self.cumulative[-1])

    def _int(self, low: int, high: int) -> int:
        """`random.randint` at a third of its cost; the generator draws tens of millions."""
        return low + int(self.rng.random() * (high - low + 1))

    # -- what happens in a day ---------------------------------------------------------------

    def _visit(self, out: list[NewAuditEvent], day: str, start: int, p: int) -> None:
        rng = self.rng
        clinic = self.patient_clinic[p]
        owner = self.clinic_county[clinic]
        foreign = rng.random() < 0.003  # another county's clinician, breaking the glass
        if foreign:
            other = rng.choice([c for c, _a, _s in _COUNTIES if c != owner])
            clinic_of_user = rng.choice(self.county_clinics[other])
        else:
            clinic_of_user = clinic
        user = self.users[rng.choice(self.clinic_users[clinic_of_user])]
        t = start
        if rng.random() < 0.12:  # the first patient of a sign-in
            if rng.random() < 0.03:
                self._event(
                    out,
                    self._stamp(day, t - 400 * _US_PER_S),
                    EventType.USER_AUTHENTICATION,
                    "E",
                    user,
                    outcome=4,
                    description="wrong user name or password",
                    details={"subtype": "110122 Login"},
                )
            self._event(
                out,
                self._stamp(day, t - 300 * _US_PER_S),
                EventType.USER_AUTHENTICATION,
                "E",
                user,
                details={"subtype": "110122 Login"},
            )
        reach: dict[str, Any] = {}
        touched: tuple[str, ...] = ()
        if foreign:
            code, reason = rng.choice(_REASONS)
            self._event(
                out,
                self._stamp(day, t),
                EventType.SECURITY_ALERT,
                "E",
                user,
                description=f"extended access: {reason}",
                patients=(p,),
                counties=(owner,),
                details={
                    "subtype": EMERGENCY_OVERRIDE_STARTED,
                    "purpose_of_use": "ETREAT" if code == "akutt" else "TREAT",
                    "reason_code": code,
                    "reason": reason,
                    "free_text": "",
                    "expires_at": self._stamp(day, t + 4 * 3600 * _US_PER_S),
                },
            )
            reach = {"break_glass": True, "foreign_counties": [owner]}
            touched = (owner,)
            t += 20 * _US_PER_S
        # the patient search
        if rng.random() < 0.9:
            hits: tuple[int, ...] = (p,)
            query = f"/dicom-web/studies?PatientID={self.patient_ids[p]}"
        else:
            pool = self.county_patients[owner]
            hits = tuple(sorted({p, *(rng.choice(pool) for _ in range(self._int(1, 7)))}))
            query = f"/dicom-web/studies?PatientName={rng.choice(_NAMES)}*&limit=100"
        studies = self.patient_studies[p]
        self._event(
            out,
            self._stamp(day, t),
            EventType.QUERY,
            "E",
            user,
            patients=hits,
            objects=len(hits) + studies,
            query=query,
            counties=touched,
            details={"level": "studies", "patients_in_result": len(hits), **reach},
        )
        # images taken today arrive from the clinic's modalities
        n_images = rng.choice((0, 0, 0, 1, 2, 2, 4, 4, -1))
        if n_images and not foreign:
            self.patient_studies[p] = studies = studies + 1
            study = self._study(p, studies)
            io_ae, px_ae = self.clinic_modalities[clinic]
            ae = px_ae if n_images < 0 else io_ae
            modality = (ae, "dicom-ae", owner, f"10.{_county_no(owner)}.{clinic}.200")
            for k in range(abs(n_images)):
                t += self._int(20, 90) * _US_PER_S
                sha = f"{rng.getrandbits(256):064x}"
                self._event(
                    out,
                    self._stamp(day, t),
                    EventType.INSTANCES_TRANSFERRED,
                    "C",
                    modality,
                    patients=(p,),
                    study_uids=(study,),
                    objects=1,
                    details={
                        "sop_instance_uid": f"{study}.1.{k + 1}",
                        "sop_class_uid": _PX_CLASS if n_images < 0 else _IO_CLASS,
                        "transfer_syntax_uid": _EXPLICIT_LE,
                        "sha256": sha,
                        "size": 7_840_000 if n_images < 0 else 1_570_000,
                    },
                )
        if studies == 0:
            return  # nothing to look at yet
        study = self._study(p, self._int(max(1, studies - 2), studies))
        counties = touched or (owner,)
        for _ in range(self._int(2, 14)):
            t += self._int(15, 240) * _US_PER_S
            purpose = _READ_PURPOSES[
                bisect.bisect(_READ_CUMULATIVE, rng.random() * _READ_CUMULATIVE[-1])
            ]
            details: dict[str, Any] = {
                "purpose": purpose,
                "series_uid": f"{study}.1",
                "sop_uid": "" if purpose == "thumbnail" else f"{study}.1.{self._int(1, 4)}",
            }
            if purpose in _GROUPED:
                details["grouped_seconds"] = 60
            transfer = purpose == "retrieve"
            self._event(
                out,
                self._stamp(day, t),
                EventType.INSTANCES_TRANSFERRED if transfer else EventType.INSTANCES_ACCESSED,
                "R",
                user,
                patients=(p,),
                study_uids=(study,),
                objects=self._int(1, 4),
                counties=counties,
                details={**details, **reach},
            )
        if rng.random() < 0.005:  # a stale link: nothing found, audited all the same
            self._event(
                out,
                self._stamp(day, t + _US_PER_S),
                EventType.INSTANCES_ACCESSED,
                "R",
                user,
                outcome=4,
                description="no such object for this user",
                study_uids=(self._study(p, studies + 1),),
                details={"purpose": "metadata", "series_uid": "", "sop_uid": ""},
            )
        if rng.random() < 0.08:
            self._event(
                out,
                self._stamp(day, t + 30 * _US_PER_S),
                EventType.USER_AUTHENTICATION,
                "E",
                user,
                details={"subtype": "110123 Logout"},
            )

    def _sweep(self, out: list[NewAuditEvent], day: str) -> None:
        """A clinician opening far more patients than care needs: what the review must find."""
        rng = self.rng
        user = self.users[rng.randrange(len(self.users))]
        pool = self.county_patients[user.county]
        t = self._int(7, 13) * 3600 * _US_PER_S
        for _ in range(self._int(55, 90)):
            p = rng.choice(pool)
            studies = max(1, self.patient_studies[p])
            t += self._int(10, 60) * _US_PER_S
            study = self._study(p, studies)
            self._event(
                out,
                self._stamp(day, t),
                EventType.INSTANCES_ACCESSED,
                "R",
                user,
                patients=(p,),
                study_uids=(study,),
                objects=1,
                details={
                    "purpose": "thumbnail",
                    "series_uid": f"{study}.1",
                    "sop_uid": "",
                    "grouped_seconds": 60,
                },
            )

    def _background(self, out: list[NewAuditEvent], day: str, weight: float) -> None:
        rng = self.rng
        for _ in range(self._int(2, 12) if weight > 0.5 else self._int(0, 2)):
            auditor = rng.choice(self.auditors)
            p = rng.randrange(len(self.patient_ids))
            self._event(
                out,
                self._stamp(day, self._int(7, 14) * 3600 * _US_PER_S),
                EventType.AUDIT_LOG_USED,
                "R",
                auditor,
                patients=(p,),
                query=f"patient={self.patient_ids[p]}",
                details={"use": "search"},
            )
        if rng.random() < 0.05:  # a rolling restart at night
            system = ("ARKIV", "system", "vestfold", "")
            for k, what in enumerate(("stopped", "started")):
                self._event(
                    out,
                    self._stamp(day, (2 * 3600 + k * 40) * _US_PER_S),
                    EventType.APPLICATION_ACTIVITY,
                    "E",
                    system,
                    details={"subtype": what},
                )
        if rng.random() < 0.01:  # a damaged blob found on read
            user = self.users[rng.randrange(len(self.users))]
            p = rng.choice(self.county_patients[user.county])
            self._event(
                out,
                self._stamp(day, self._int(8, 14) * 3600 * _US_PER_S),
                EventType.SECURITY_ALERT,
                "E",
                user,
                outcome=8,
                description="stored object does not match its SHA-256",
                patients=(p,),
                study_uids=(self._study(p, 1),),
                objects=1,
                details={"sop_uid": f"{self._study(p, 1)}.1.1", "blob_key": "dicom/…"},
            )
        if weight > 0.5 and rng.random() < 0.1:
            self._sweep(out, day)

    @staticmethod
    def _weight(day: dt.date) -> float:
        weekday = day.weekday()
        weight = 1.0 if weekday < 5 else (0.03 if weekday == 5 else 0.01)
        if day.month == 7:
            weight *= 0.35
        if (day.month, day.day) >= (12, 23) or (day.month, day.day) <= (1, 1):
            weight *= 0.2
        return weight

    def events(self) -> Iterator[NewAuditEvent]:
        """Exactly `total` events, oldest first (the order of the chain)."""
        days = [self.end_day - dt.timedelta(days=365 - i) for i in range(365)]
        weights = [self._weight(d) for d in days]
        remaining = self.total
        for i, day in enumerate(days):
            if remaining <= 0:
                break
            rest = sum(weights[i:])
            budget = remaining if i == len(days) - 1 else round(remaining * weights[i] / rest)
            prefix = day.strftime("%Y-%m-%dT")
            out: list[NewAuditEvent] = []
            self._background(out, prefix, weights[i])
            while len(out) < budget:
                start = self._int(6 * 3600 + 1800, 15 * 3600) * _US_PER_S
                self._visit(out, prefix, start, self._patient())
            out.sort(key=_recorded_at)
            del out[budget:]
            remaining -= len(out)
            for ev in out:
                self.stats.by_type[ev.event_id] = self.stats.by_type.get(ev.event_id, 0) + 1
            if out:
                self.stats.first_time = self.stats.first_time or out[0].recorded_at
                self.stats.last_time = out[-1].recorded_at
                self.stats.events += len(out)
            yield from out


def _recorded_at(ev: NewAuditEvent) -> str:
    return ev.recorded_at


def _county_no(county: str) -> int:
    return next(i + 1 for i, (name, _a, _s) in enumerate(_COUNTIES) if name == county)


# ---------------------------------------------------------------------------------------------
# Cached synthetic logs


@dataclass(frozen=True)
class SyntheticLogDb:
    """A data directory whose index holds a synthetic log, and what is known about that log."""

    data_dir: Path
    manifest: dict[str, Any]
    reused: bool

    @property
    def url(self) -> str:
        return Settings(data_dir=self.data_dir).index_url


def _log_key(events: int, seed: int) -> str:
    return f"audit-v{LOG_FORMAT_VERSION}-e{events}-s{seed}"


def _percentile_key(counts: dict[str, int], fraction: float) -> str:
    ordered = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))][0]


def generate_log(
    data_dir: Path,
    events: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write a synthetic log into a new data directory; return its manifest."""
    log = SyntheticLog(events, seed)
    started = time.perf_counter()
    result = bulk_append_audit(
        Settings(data_dir=data_dir).index_url, log.events(), chain_hash, progress=progress
    )
    seconds = time.perf_counter() - started
    stats = log.stats
    # Keys for the searches come from the county auditor's own county, so that a county
    # auditor's search by patient or user finds something.
    patients = {
        log.patient_ids[p]: n
        for p, n in enumerate(stats.by_patient)
        if n and log.clinic_county[log.patient_clinic[p]] == KEY_COUNTY
    }
    clinicians = {u.name: stats.by_user.get(u.name, 0) for u in log.users if u.county == KEY_COUNTY}
    manifest = {
        "format_version": LOG_FORMAT_VERSION,
        "events": result.events,
        "seed": seed,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "generation_seconds": round(seconds, 1),
        "insert_seconds": round(result.insert_seconds, 1),
        "index_seconds": round(result.index_seconds, 1),
        "database_bytes": result.database_bytes,
        "head_hash": result.head_hash,
        "first_time": stats.first_time,
        "last_time": stats.last_time,
        "by_type": dict(sorted(stats.by_type.items())),
        "patients_with_events": sum(1 for n in stats.by_patient if n),
        "clinicians": len(log.users),
        "key_county": KEY_COUNTY,
        "typical_patient": _percentile_key(patients, 0.5),
        "typical_patient_events": patients[_percentile_key(patients, 0.5)],
        "busiest_patient": _percentile_key(patients, 1.0),
        "busiest_patient_events": patients[_percentile_key(patients, 1.0)],
        "typical_user": _percentile_key(clinicians, 0.5),
        "typical_user_events": clinicians[_percentile_key(clinicians, 0.5)],
        "busiest_user": _percentile_key(clinicians, 1.0),
        "busiest_user_events": clinicians[_percentile_key(clinicians, 1.0)],
    }
    (data_dir / "synthetic-log.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def ensure_log(
    events: int,
    seed: int,
    cache_root: Path,
    workdir: Path,
    use_cache: bool = True,
    report: Callable[[str], None] = console.print,
) -> SyntheticLogDb:
    """The cached synthetic log of this size and seed, generated first if there is none.

    Generation goes to a staging directory renamed into place only when complete, so an
    interrupted run never leaves a half-written log that looks valid.
    """
    key = _log_key(events, seed)
    final = cache_root / key if use_cache else workdir / key
    try:
        manifest = json.loads((final / "synthetic-log.json").read_text())
        if manifest.get("format_version") == LOG_FORMAT_VERSION and manifest["events"] == events:
            return SyntheticLogDb(final, manifest, reused=True)
    except (OSError, ValueError, KeyError):
        pass
    staging = final.with_name(f".tmp-{key}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    report(f"generating a synthetic audit log of {events:,} events in {final} …")
    try:
        with Progress(
            TextColumn("synthetic log"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("log", total=events)
            manifest = generate_log(
                staging, events, seed, lambda done: bar.update(task, completed=done)
            )
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report(
        f"generated {manifest['events']:,} events in {manifest['generation_seconds']:.0f} s "
        f"(inserts {manifest['insert_seconds']:.0f} s, indexes {manifest['index_seconds']:.0f} s), "
        f"{manifest['database_bytes'] / 1e9:.2f} GB"
    )
    return SyntheticLogDb(final, manifest, reused=False)


# ---------------------------------------------------------------------------------------------
# 3. Verification


@dataclass(frozen=True)
class VerifyRun:
    repetition: int
    events: int
    seconds: float
    events_per_s: float
    ok: bool


def bench_verify(
    log: SyntheticLogDb, repeat: int, report: Callable[[str], None] = console.print
) -> list[VerifyRun]:
    runs: list[VerifyRun] = []
    for rep in range(1, repeat + 1):
        archive = Archive(Settings(data_dir=log.data_dir))
        try:
            gc.collect()
            started = time.perf_counter()
            result = archive.audit.verify()
            seconds = time.perf_counter() - started
        finally:
            archive.close()
        run = VerifyRun(rep, result.checked, seconds, result.checked / seconds, result.ok)
        runs.append(run)
        report(
            f"verify rep {rep}: {run.events:,} events in {seconds:.1f} s, "
            f"{run.events_per_s:,.0f} events/s, {'intact' if result.ok else result.reason}"
        )
    return runs


# ---------------------------------------------------------------------------------------------
# 4. Auditors' searches

COUNTY_AUDITOR = Principal("bench-personvernombud", Role.AUDITOR, County(KEY_COUNTY), "10.9.9.9")
JOINT_AUDITOR = Principal("bench-felles-ombud", Role.JOINT_AUDITOR, County.VESTFOLD, "10.9.9.10")


@dataclass(frozen=True)
class SearchCase:
    name: str
    who: str
    call: Callable[[Archive], int]
    """Runs the search and returns how many rows (events, report lines) it answered with."""


def search_cases(manifest: dict[str, Any]) -> list[SearchCase]:
    """The searches an auditor makes, with keys taken from the log: a patient and a clinician
    of median activity, the busiest of each, and times counted back from the last event."""
    last = dt.datetime.strptime(manifest["last_time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=dt.UTC
    )

    def ago(days: float) -> str:
        return (last - dt.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    # review() counts back from now; this many days reach back to a week before the last event
    review_days = 7 + math.ceil((dt.datetime.now(dt.UTC) - last).total_seconds() / 86400)
    typical, busiest = manifest["typical_patient"], manifest["busiest_patient"]
    user, busy_user = manifest["typical_user"], manifest["busiest_user"]

    def search(principal: Principal, query: AuditQuery) -> Callable[[Archive], int]:
        def run(archive: Archive) -> int:
            text = json.dumps({k: v for k, v in asdict(query).items() if v}, sort_keys=True)
            return len(archive.audit_review.search(principal, query, text))

        return run

    def report(patient: str) -> Callable[[Archive], int]:
        return lambda a: len(a.audit_review.patient_report(COUNTY_AUDITOR, patient))

    def volumes(a: Archive) -> int:
        return len(a.index.user_volumes(KEY_COUNTY, ago(7), a.settings.review_volume_threshold))

    def review(principal: Principal) -> Callable[[Archive], int]:
        def run(a: Archive) -> int:
            r = a.audit_review.review(principal, days=review_days)
            return len(r.break_glass) + len(r.cross_county) + len(r.heavy_users)

        return run

    county, joint = "county auditor", "joint auditor"
    return [
        SearchCase(
            f"by patient, typical ({manifest['typical_patient_events']} ev.)",
            county,
            search(COUNTY_AUDITOR, AuditQuery(patient_id=typical)),
        ),
        SearchCase(
            f"by patient, busiest ({manifest['busiest_patient_events']} ev.)",
            county,
            search(COUNTY_AUDITOR, AuditQuery(patient_id=busiest)),
        ),
        SearchCase(
            "by patient, typical", joint, search(JOINT_AUDITOR, AuditQuery(patient_id=typical))
        ),
        SearchCase(
            f"by user, typical ({manifest['typical_user_events']} ev.)",
            county,
            search(COUNTY_AUDITOR, AuditQuery(actor=user)),
        ),
        SearchCase(
            f"by user, busiest ({manifest['busiest_user_events']} ev.)",
            joint,
            search(JOINT_AUDITOR, AuditQuery(actor=busy_user)),
        ),
        SearchCase(
            "by user + one month",
            joint,
            search(JOINT_AUDITOR, AuditQuery(actor=user, since=ago(60), until=ago(30))),
        ),
        SearchCase(
            "county + week a month back",
            county,
            search(COUNTY_AUDITOR, AuditQuery(since=ago(37), until=ago(30))),
        ),
        SearchCase(
            "county + one day, 6 months back",
            county,
            search(COUNTY_AUDITOR, AuditQuery(since=ago(182), until=ago(181))),
        ),
        SearchCase(
            "action: failed sign-ins (110114, 4)",
            county,
            search(COUNTY_AUDITOR, AuditQuery(event_id="110114", outcome=4)),
        ),
        SearchCase(
            "action: extended access (110113)",
            county,
            search(COUNTY_AUDITOR, AuditQuery(event_id="110113")),
        ),
        SearchCase(
            "outcome: serious failures (≥ 8)",
            joint,
            search(JOINT_AUDITOR, AuditQuery(min_outcome=8)),
        ),
        SearchCase(
            "outcome: serious failures (≥ 8)",
            county,
            search(COUNTY_AUDITOR, AuditQuery(min_outcome=8)),
        ),
        SearchCase(
            "action: read + outcome 4, one month",
            county,
            search(COUNTY_AUDITOR, AuditQuery(event_id="110103", outcome=4, since=ago(30))),
        ),
        SearchCase(
            "cross-county, last 7 days (500)",
            county,
            search(COUNTY_AUDITOR, AuditQuery(cross_county=True, since=ago(7), limit=500)),
        ),
        SearchCase(
            "cross-county, whole year (100)",
            county,
            search(COUNTY_AUDITOR, AuditQuery(cross_county=True)),
        ),
        SearchCase("patient access report, typical", county, report(typical)),
        SearchCase("patient access report, busiest", county, report(busiest)),
        SearchCase("user volume review, 7 days", county, volumes),
        SearchCase("review page (7 days)", county, review(COUNTY_AUDITOR)),
        SearchCase("review page (7 days)", joint, review(JOINT_AUDITOR)),
    ]


@dataclass(frozen=True)
class SearchResult:
    name: str
    who: str
    rows: int
    cold_ms: list[float]
    warm_ms: list[float]
    plans: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cold_median(self) -> float:
        return median(self.cold_ms)

    @property
    def warm_median(self) -> float:
        return median(self.warm_ms)


def _bound(case: SearchCase, archive: Archive) -> Callable[[], int]:
    return lambda: case.call(archive)


def _timed(call: Callable[[Archive], int], archive: Archive) -> tuple[int, float]:
    started = time.perf_counter()
    rows = call(archive)
    return rows, (time.perf_counter() - started) * 1000


def bench_search(
    log: SyntheticLogDb,
    cold: int,
    warm: int,
    slow_ms: float,
    report: Callable[[str], None] = console.print,
) -> list[SearchResult]:
    """Cold: a new Archive (new connections, empty SQLite caches) after the database file was
    dropped from the OS page cache. Warm: the same search again on a warm cache."""
    settings = Settings(data_dir=log.data_dir)
    results: list[SearchResult] = []
    archive = Archive(settings)
    try:
        for case in search_cases(log.manifest):
            cold_ms: list[float] = []
            rows = 0
            for _ in range(cold):
                archive.close()
                evict_from_page_cache(settings.index_url)
                archive = Archive(settings)
                rows, ms = _timed(case.call, archive)
                cold_ms.append(ms)
            warm_ms: list[float] = []
            for _ in range(warm + 1):
                rows, ms = _timed(case.call, archive)
                warm_ms.append(ms)
            result = SearchResult(case.name, case.who, rows, cold_ms, warm_ms[1:])
            if result.warm_median > slow_ms:
                plans = query_plans(archive.index, _bound(case, archive))
                result.plans.extend(
                    {"sql": p.sql, "plan": list(p.plan)}
                    for p in plans
                    if "audit_events" in p.sql and "audit_chain_head" not in p.sql
                )
            results.append(result)
            report(
                f"search {case.name} ({case.who}): {rows} rows, cold {result.cold_median:.1f} ms, "
                f"warm {result.warm_median:.1f} ms"
            )
    finally:
        archive.close()
    return results


# ---------------------------------------------------------------------------------------------
# Output


def _fmt(value: float, digits: int = 1) -> str:
    return "–" if math.isnan(value) else f"{value:,.{digits}f}"


def print_ingest(summary: dict[str, Any]) -> None:
    t = Table(title=f"Ingest, in-process ({summary['image_set']}, medians)")
    for col in (
        "objects",
        "with audit obj/s",
        "without obj/s",
        "overhead",
        "audit ms/obj (paired)",
        "runs with",
        "runs without",
    ):
        t.add_column(col, justify="right")
    t.add_row(
        str(summary["objects"]),
        _fmt(summary["with_audit_objects_per_s"]),
        _fmt(summary["without_audit_objects_per_s"]),
        f"{_fmt(summary['overhead_percent'])} %",
        _fmt(summary["audit_ms_per_object_paired"], 2),
        ", ".join(map(str, summary["with_audit_runs"])),
        ", ".join(map(str, summary["without_audit_runs"])),
    )
    console.print(t)


def print_reads(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    t = Table(title=f"Reads ({rows[0]['image_set']}, medians of the runs' mean ms per read)")
    for col in (
        "case",
        "reads",
        "with audit",
        "without",
        "overhead",
        "audit ms",
        "audit ms (paired)",
        "events/run",
    ):
        t.add_column(col, justify="left" if col == "case" else "right")
    for row in rows:
        t.add_row(
            row["case"],
            str(row["reads_per_run"]),
            _fmt(row["with_audit_ms"], 2),
            _fmt(row["without_audit_ms"], 2),
            f"{_fmt(row['overhead_percent'])} %",
            _fmt(row["audit_ms_per_read"], 2),
            _fmt(row["audit_ms_per_read_paired"], 2),
            ", ".join(map(str, row["events_per_run"])),
        )
    console.print(t)


def print_verify(runs: list[VerifyRun]) -> None:
    t = Table(title="Chain verification (AuditLog.verify)")
    for col in ("events", "median s", "median events/s", "runs (events/s)", "intact"):
        t.add_column(col, justify="right")
    t.add_row(
        f"{runs[0].events:,}",
        _fmt(median([r.seconds for r in runs])),
        _fmt(median([r.events_per_s for r in runs]), 0),
        ", ".join(f"{r.events_per_s:,.0f}" for r in runs),
        "yes" if all(r.ok for r in runs) else "NO",
    )
    console.print(t)


def print_search(results: list[SearchResult], events: int, slow_ms: float) -> None:
    t = Table(title=f"Auditor searches over {events:,} events (medians, ms)")
    for col in ("search", "as", "rows", "cold", "warm", "warm runs"):
        t.add_column(col, justify="left" if col in ("search", "as") else "right")
    for r in results:
        slow = r.warm_median > slow_ms
        t.add_row(
            r.name,
            r.who,
            str(r.rows),
            _fmt(r.cold_median),
            f"[bold red]{_fmt(r.warm_median)}[/bold red]" if slow else _fmt(r.warm_median),
            ", ".join(f"{m:.0f}" for m in r.warm_ms),
        )
    console.print(t)
    for r in results:
        for plan in r.plans:
            console.print(
                f"\n[bold]{escape(r.name)} ({r.who})[/bold] — {_fmt(r.warm_median)} ms warm"
            )
            console.print(escape(plan["sql"]), soft_wrap=True)
            for line in plan["plan"]:
                console.print("    " + escape(line))


# ---------------------------------------------------------------------------------------------
# Command line


def _count(text: str) -> int:
    value = int(text.replace("_", ""))
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _count_or_zero(text: str) -> int:
    value = int(text.replace("_", ""))
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _choices(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in values if v not in allowed]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return values

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.audit",
        description="Audit overhead on ingest and reads, chain verification speed, and auditor "
        "search latency over a large synthetic log.",
    )
    p.add_argument(
        "--sections",
        type=_choices(SECTIONS),
        default=list(SECTIONS),
        help="comma-separated subset of " + ",".join(SECTIONS) + " (default: all)",
    )
    p.add_argument(
        "--image-sets",
        type=_choices(IMAGE_SETS),
        default=list(IMAGE_SETS),
        help="image sets for ingest and reads (default: dental,tiny)",
    )
    p.add_argument("--intraoral", type=_count, default=200, help="dental set: IO images (200)")
    p.add_argument(
        "--panoramic", type=_count_or_zero, default=20, help="dental set: PX images (20)"
    )
    p.add_argument("--patients", type=_count, default=20, help="dental set: patients (20)")
    p.add_argument("--tiny", type=_count, default=1000, help="tiny set: 64×64 images (1000)")
    p.add_argument(
        "--repeat",
        type=_count,
        default=3,
        help="repetitions of each ingest and read measurement (3)",
    )
    p.add_argument(
        "--reads",
        type=_count,
        default=200,
        help="reads per case and run, spread over the set (200)",
    )
    p.add_argument(
        "--events",
        type=_count,
        default=10_000_000,
        help="size of the synthetic log the searches run on (10000000)",
    )
    p.add_argument(
        "--verify-events",
        type=_count,
        default=1_000_000,
        help="size of the synthetic log verified (1000000)",
    )
    p.add_argument("--verify-repeat", type=_count, default=3, help="verifications (3)")
    p.add_argument("--cold", type=_count, default=3, help="cold runs per search (3)")
    p.add_argument("--warm", type=_count, default=5, help="warm runs per search (5)")
    p.add_argument(
        "--slow-ms",
        type=float,
        default=200.0,
        help="print the query plan of searches slower than this, warm (200)",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="synthetic log seed")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=ds.default_cache_root(),
        help="where data sets and synthetic logs are cached (%(default)s)",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="generate synthetic logs into the temporary directory instead",
    )
    p.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="parent of the temporary directory (default: system temp dir)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now().astimezone()
    machine = machine_info()
    if args.tmp_dir is not None:
        args.tmp_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="arkiv-bench-audit-", dir=args.tmp_dir))
    doc: dict[str, Any] = {
        "benchmark": "arkiv audit",
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(
            ["python -m bench.audit", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine,
        "arkiv_commit": project_revision(),
    }
    try:
        image_sets: list[ImageSet] = []
        if {"ingest", "reads"} & set(args.sections):
            for name in args.image_sets:
                if name == "dental":
                    spec = ds.DatasetSpec(args.intraoral, args.panoramic, args.patients)
                    image_sets.append(dental_images(spec, args.cache_dir))
                else:
                    image_sets.append(tiny_images(args.tiny))
        if "ingest" in args.sections:
            cost = bench_append(workdir)
            console.print(
                f"one audit event: {cost.own_transaction_ms:.2f} ms in a transaction of its own "
                f"(reads), {cost.in_transaction_ms:.2f} ms inside the caller's (ingest); "
                f"medians of {cost.events}"
            )
            doc["append"] = asdict(cost)
        for images in image_sets:
            console.print(f"[bold]{images.name}[/bold]: {images.description}")
            if "ingest" in args.sections:
                runs = bench_ingest(images, args.repeat, workdir)
                summary = summarize_ingest(runs)
                print_ingest(summary)
                doc.setdefault("ingest", []).append(
                    {"summary": summary, "runs": [asdict(r) for r in runs]}
                )
            if "reads" in args.sections:
                read_runs = bench_reads(images, args.repeat, workdir, args.reads)
                rows = summarize_reads(read_runs)
                print_reads(rows)
                doc.setdefault("reads", []).append(
                    {"summary": rows, "runs": [asdict(r) for r in read_runs]}
                )
        if "verify" in args.sections:
            log = ensure_log(
                args.verify_events, args.seed, args.cache_dir, workdir, not args.no_cache
            )
            verify_runs = bench_verify(log, args.verify_repeat)
            print_verify(verify_runs)
            doc["verify"] = {"log": log.manifest, "runs": [asdict(r) for r in verify_runs]}
        if "search" in args.sections:
            log = ensure_log(args.events, args.seed, args.cache_dir, workdir, not args.no_cache)
            console.print(
                f"log: {log.manifest['events']:,} events, {log.manifest['first_time'][:10]} to "
                f"{log.manifest['last_time'][:10]}, {database_bytes(log.url) / 1e9:.2f} GB"
                f"{' (cached)' if log.reused else ''}"
            )
            results = bench_search(log, args.cold, args.warm, args.slow_ms)
            print_search(results, log.manifest["events"], args.slow_ms)
            doc["search"] = {
                "log": log.manifest,
                "results": [
                    {**asdict(r), "cold_median_ms": r.cold_median, "warm_median_ms": r.warm_median}
                    for r in results
                ],
            }
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            console.print(f"results written to {args.json}")
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; cleaning up[/yellow]")
        return 130
    finally:
        if args.keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    with terminate_as_interrupt():
        sys.exit(main())
