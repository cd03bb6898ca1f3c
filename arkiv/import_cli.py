"""`arkiv import PATH… --county C`: a county's old image store into the shared archive.

Folders (any depth), DICOMDIR media and zip archives (`arkiv.importing.files`), photos listed in a
manifest (`arkiv.importing.photo_manifest`) and, with `--from-pacs`, a running PACS
(`arkiv.importing.pacs_cli`). Every object goes through the ingest path as the operator, owned
by the county named, with where it was found kept as its source in the index and the audit log.

The operator sees progress bars on stderr; at the end a readable report goes to stdout and the
full one, for the auditor, to a JSON file (`--report`, default `arkiv-import-<UTC time>.json`).
Ctrl-C, or the archive becoming unavailable, stops the run with the report written; the same
command run again continues, since what is already stored comes back as a cheap duplicate.

Exit codes: 0 everything found was imported or was already there (files that are not DICOM are
listed, not counted against the run); 1 something was refused, differs from what is stored, or
the run stopped; 2 the import could not start (usage, a missing path, a bad manifest).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from arkiv.atomic_file import write_atomically
from arkiv.audit import Actor
from arkiv.counties import County, parse_county
from arkiv.errors import ArchiveUnavailable, ArkivError, AuditUnavailable
from arkiv.importing import files, pacs_cli, photo_manifest
from arkiv.importing.progress import ImportProgress
from arkiv.importing.run import ImportReport, ImportRun, SourceObject
from arkiv.ingest import IngestService
from arkiv.reconciliation import conflicts_touching
from arkiv.services import Archive
from storage.errors import StorageError

log = logging.getLogger(__name__)

_SHOWN = 50
"""Lines of each list the readable report shows; the JSON report has them all."""


class _Usage(Exception):
    """The import cannot start as given (exit 2)."""


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "import",
        help="bulk import of an existing archive: folders, DICOMDIR media, zips, photo manifests",
        description="Import DICOM files found under each PATH (folders at any depth, with or "
        "without extensions; DICOMDIR media; zip archives) and photos listed in a manifest, "
        "each through the ingest path, owned by --county. Objects already stored are skipped; "
        "one that differs from a stored object with the same SOP Instance UID is kept for review "
        "and reported. Exit codes: 0 all imported or already there; 1 something was refused, "
        "differs, or the run stopped (run it again to continue); 2 it could not start.",
    )
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    parser.add_argument(
        "--county",
        required=True,
        choices=[c.value for c in County],
        help="the county (data controller) that owns what is imported",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        metavar="CSV",
        help="photos to import: file,national_id,date,category,teeth[,county] per row, "
        "files relative to the manifest's folder",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="where the JSON report goes (default arkiv-import-<UTC time>.json here)",
    )
    parser.add_argument(
        "--workers",
        type=pacs_cli.whole_number,
        default=4,
        help="objects ingested at once (default 4)",
    )
    parser.add_argument(
        "--max-object-mb",
        type=pacs_cli.whole_number,
        default=None,
        metavar="MB",
        help="largest object taken from a file or zip (default: the archive's STOW-RS limit)",
    )
    pacs_cli.add_arguments(parser)
    return parser


def run(archive: Archive, args: argparse.Namespace, operator: str) -> int:
    """Run the import as `operator` (the shell user, as the audit log names them)."""
    try:
        plan = _Plan.from_args(archive, args)
    except (_Usage, files.SourcePathError, photo_manifest.ManifestError) as exc:
        print(f"arkiv import: {exc}", file=sys.stderr)
        return 2
    county = parse_county(args.county)
    principal = photo_manifest.operator_principal(operator, county)
    report = ImportReport(county=county.value, operator=operator, sources=plan.sources)
    extra = _Extra()
    if plan.manifest is not None:
        extra.photos = photo_manifest.PhotoTally(files.shown(plan.manifest))
    console = Console(stderr=True)
    stopped = ""
    try:
        if plan.paths or plan.manifest is not None:
            with _progress(console, plan) as progress:
                if plan.paths:
                    _import_files(archive.ingest, principal.actor(), report, extra, plan, progress)
                if plan.manifest is not None and extra.photos is not None:
                    photo_manifest.import_manifest(
                        archive.photos,
                        plan.manifest,
                        county,
                        operator,
                        extra.photos,
                        lambda _outcome, size: progress.advance(size),
                    )
        if args.from_pacs:
            pacs_cli.run(
                archive, args, ImportRun(archive.ingest, principal.actor(), report), console
            )
    except KeyboardInterrupt:
        stopped = "interrupted (Ctrl-C)"
    except (ArchiveUnavailable, AuditUnavailable) as exc:
        stopped = f"the archive became unavailable: {exc}"
    except Exception as exc:  # the report of what was done so far is still owed
        log.exception("import stopped")
        stopped = f"unexpected error ({type(exc).__name__}): {exc}"
    report.patient_conflicts = _patient_conflicts(archive, report)
    report.finish(stopped)
    report.refused.sort(key=lambda item: item["origin"])
    report.differing.sort(key=lambda item: item["origin"])
    document = {**report.as_json(), **extra.as_json()}
    try:
        content = _writable(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
        write_atomically(plan.report, content, mode=0o600)
    except OSError as exc:
        print(_writable(_text(report, extra)), flush=True)
        print(f"arkiv import: the report could not be written to {plan.report}: {exc}")
        return 1
    print(_writable(_text(report, extra)))
    print(f"report: {plan.report}")
    failed = report.stopped or report.refused or report.differing
    return 1 if failed or (extra.photos is not None and extra.photos.refused) else 0


class _Plan:
    """What the command line asks for, checked before anything is imported."""

    def __init__(
        self,
        paths: list[Path],
        manifest: Path | None,
        report: Path,
        limits: files.Limits,
        workers: int,
    ) -> None:
        self.paths = paths
        self.workers = workers
        self.manifest = manifest
        self.report = report
        self.limits = limits
        self.sources = [files.shown(p) for p in paths]
        if manifest is not None:
            self.sources.append(f"manifest:{files.shown(manifest)}")

    @classmethod
    def from_args(cls, archive: Archive, args: argparse.Namespace) -> _Plan:
        if not args.paths and args.manifest is None and not args.from_pacs:
            raise _Usage("give a PATH to import, --manifest CSV, or --from-pacs AE@HOST:PORT")
        if args.from_pacs:
            try:
                pacs_cli.parse(args)
            except ArkivError as exc:  # a mistyped source or option: nothing has started
                raise _Usage(str(exc)) from exc
        paths = files.check_paths(args.paths)
        manifest = None
        if args.manifest is not None:
            manifest = files.check_paths([args.manifest])[0]
            photo_manifest.open_manifest(manifest)  # the header, checked before anything runs
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        report = args.report or Path(f"arkiv-import-{stamp}.json")
        if not report.parent.resolve().is_dir():
            raise _Usage(f"the report's folder {report.parent} does not exist")
        limit = archive.settings.stow_max_bytes
        if args.max_object_mb is not None:
            limit = args.max_object_mb * 1024 * 1024
        return cls(paths, manifest, report, files.Limits(max_object_bytes=limit), args.workers)


class _Extra:
    """What this command reports beyond the import core: files that are not DICOM, photos."""

    def __init__(self) -> None:
        self.not_dicom: list[str] = []
        self.photos: photo_manifest.PhotoTally | None = None
        self._lock = threading.Lock()

    def skipped(self, origin: str) -> None:
        with self._lock:
            self.not_dicom.append(origin)

    def as_json(self) -> dict[str, Any]:
        return {
            "not_dicom": self.not_dicom,
            "photos": None if self.photos is None else self.photos.as_json(),
        }


def _progress(console: Console, plan: _Plan) -> ImportProgress:
    survey = files.survey(plan.paths)
    if plan.manifest is not None:
        rows, size = photo_manifest.survey(plan.manifest)
        survey.files += rows
        survey.bytes += size
    return ImportProgress(console, survey.files, survey.bytes)


def _import_files(
    ingest: IngestService,
    actor: Actor,
    report: ImportReport,
    extra: _Extra,
    plan: _Plan,
    progress: ImportProgress,
) -> None:
    """Walk in this thread and ingest in `workers` threads, with at most two objects per
    worker waiting, so memory stays that of a few objects however large the tree."""
    workers = _Workers(ingest, actor, report, progress, plan.workers)
    try:
        for found in files.find(plan.paths, plan.limits):
            if found.kind is files.Kind.NOT_DICOM:
                extra.skipped(found.origin)
                progress.advance(found.size)
            elif found.kind is files.Kind.REFUSED:
                report.refuse(found.origin, found.reason)
                progress.advance(found.size)
            else:
                workers.submit(found)
    except BaseException:
        workers.close(stopping=True)
        raise
    workers.close(stopping=False)


class _Workers:
    """Each thread feeds its own ImportRun (the core's counters are not shared between
    threads); their reports are added into the run's when the walk is done."""

    def __init__(
        self,
        ingest: IngestService,
        actor: Actor,
        report: ImportReport,
        progress: ImportProgress,
        count: int,
    ) -> None:
        self._ingest = ingest
        self._actor = actor
        self._report = report
        self._progress = progress
        self._local = threading.local()
        self._reports: list[ImportReport] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="import")
        self._pending: deque[Future[None]] = deque()
        self._limit = 2 * count

    def submit(self, found: files.Found) -> None:
        self._pending.append(self._pool.submit(self._one, found))
        while len(self._pending) >= self._limit:
            self._pending.popleft().result()  # ArchiveUnavailable surfaces here and stops

    def close(self, stopping: bool) -> None:
        """Wait for what was started (or, when stopping, drop what was not), then add up."""
        self._pool.shutdown(wait=True, cancel_futures=stopping)
        error: BaseException | None = None
        for future in self._pending:
            if not future.cancelled() and future.exception() is not None and error is None:
                error = future.exception()
        self._merge()
        if error is not None and not stopping:
            raise error

    def _run(self) -> ImportRun:
        run: ImportRun | None = getattr(self._local, "run", None)
        if run is None:
            own = ImportReport(county=self._report.county, operator=self._report.operator)
            run = ImportRun(self._ingest, self._actor, own)
            self._local.run = run
            with self._lock:
                self._reports.append(own)
        return run

    def _one(self, found: files.Found) -> None:
        run = self._run()
        try:
            run.ingest(SourceObject(found.origin, found.data))
        except (ArchiveUnavailable, AuditUnavailable):
            raise
        except ArkivError as exc:
            run.report.refuse(found.origin, str(exc))
        except Exception as exc:  # one odd object must not end an import of thousands
            log.exception("importing %s", found.origin)
            run.report.refuse(found.origin, f"unexpected error ({type(exc).__name__}): {exc}")
        self._progress.advance(found.size)

    def _merge(self) -> None:
        _add(self._report, self._reports)
        self._reports = []


def _add(into: ImportReport, parts: Iterable[ImportReport]) -> None:
    for part in parts:
        into.imported += part.imported
        into.duplicates += part.duplicates
        into.bytes_imported += part.bytes_imported
        into.differing.extend(part.differing)
        into.refused.extend(part.refused)
        into.study_uids |= part.study_uids


def _patient_conflicts(archive: Archive, report: ImportReport) -> list[dict[str, Any]]:
    """The reconciliation's open conflicts on the patients of the studies this run touched (an
    admin resolves them: `arkiv patients conflicts`, or the admin page)."""
    try:
        return conflicts_touching(archive.index, study_uids=report.study_uids)
    except (StorageError, AuditUnavailable) as exc:
        log.warning("the patient conflicts could not be listed: %s", exc)
        return []


def _writable(text: str) -> str:
    """Text that encodes as UTF-8 whatever a reason quoted (an undecodable file name)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _text(report: ImportReport, extra: _Extra) -> str:
    lines = [report.text()]
    if extra.not_dicom:
        lines.append(f"  not DICOM (skipped) {len(extra.not_dicom)}")
        lines.extend(f"  not DICOM {origin}" for origin in extra.not_dicom[:_SHOWN])
        if len(extra.not_dicom) > _SHOWN:
            lines.append(f"  … and {len(extra.not_dicom) - _SHOWN} more (see the JSON report)")
    photos = extra.photos
    if photos is not None:
        lines.append(
            f"photos from {photos.manifest}: imported {photos.imported} "
            f"({photos.bytes_imported / 1e6:.1f} MB), already stored {photos.duplicates}, "
            f"refused {len(photos.refused)}"
        )
        lines.extend(
            f"  refused  row {item['row']} {item['file']}: {item['reason']}"
            for item in photos.refused
        )
    return "\n".join(lines)
