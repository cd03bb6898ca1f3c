"""`arkiv import --from-pacs AE@host:port`: the options of a pull from a running PACS and its
progress on the operator's terminal (`arkiv.import_cli` owns the rest of the command).

The progress shows studies and objects with their rates and, since the number of studies is
learned window by window, the time left is estimated from the share of date windows done.
Problems with the PACS (unreachable, rejected, a query refused) and with the state file end the
pull with the reason printed and recorded in the report's refusals under `pacs:AE@host:port`,
so the report and the exit code say the pull did not complete; the archive being unavailable
(ArchiveUnavailable) and Ctrl-C propagate, as the import command stops on them.
"""

from __future__ import annotations

import argparse
import threading
from datetime import date, datetime
from pathlib import Path

import rich.console

from arkiv.importing.pacs_state import PullState, PullStateError, default_state_path
from arkiv.importing.progress import progress_bars
from arkiv.importing.run import Disposition, ImportRun
from arkiv.services import Archive
from dicom_node.pacs_pull import (
    EARLIEST,
    FoundStudy,
    PacsAddress,
    PacsError,
    PullListener,
    PullOptions,
    PullResult,
    pull,
)


def _day(text: str) -> date:
    for form in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(text, form).date()
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)")


def whole_number(text: str) -> int:
    """An argparse type: a whole number of 1 or more (counts, limits, workers)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _per_minute(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of studies a minute")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "pulling from a running PACS",
        "C-FIND study by study over date windows, then C-GET (default) or C-MOVE per study, "
        "with limited concurrency and rate; resumable and repeatable through a state file",
    )
    group.add_argument(
        "--from-pacs",
        default=None,
        metavar="AE@HOST:PORT",
        help="the PACS to import from, e.g. OLDPACS@10.20.0.5:104",
    )
    group.add_argument(
        "--calling-ae",
        default="ARKIVIMPORT",
        help="the AE title this import calls the PACS with (default ARKIVIMPORT); the PACS "
        "must allow it to query and retrieve",
    )
    group.add_argument(
        "--retrieve",
        choices=("get", "move"),
        default="get",
        help="C-GET (default: needs nothing more on the PACS) or C-MOVE to a temporary "
        "Storage SCP (--listen-ae, --listen-port, known to the PACS)",
    )
    group.add_argument(
        "--listen-ae", default="ARKIVIMPORT", help="AE title of the C-MOVE Storage SCP"
    )
    group.add_argument(
        "--listen-port", type=_port, default=None, help="port of the C-MOVE Storage SCP"
    )
    group.add_argument(
        "--since",
        type=_day,
        default=EARLIEST,
        metavar="YYYY-MM-DD",
        help="first study date asked for (default 1990-01-01)",
    )
    group.add_argument(
        "--until",
        type=_day,
        default=None,
        metavar="YYYY-MM-DD",
        help="last study date asked for (default today)",
    )
    group.add_argument(
        "--window-days",
        type=whole_number,
        default=30,
        help="days of study dates per C-FIND (default 30; halved where the PACS answers too many)",
    )
    group.add_argument(
        "--max-per-query",
        type=whole_number,
        default=1000,
        help="answers to one C-FIND at which its window is split (default 1000)",
    )
    group.add_argument(
        "--concurrency", type=whole_number, default=1, help="studies retrieved at once (default 1)"
    )
    group.add_argument(
        "--rate",
        type=_per_minute,
        default=None,
        metavar="PER_MINUTE",
        help="study retrieves started per minute at most (default: no limit)",
    )
    group.add_argument(
        "--state",
        type=Path,
        default=None,
        metavar="FILE",
        help="what was done, for resuming and repeating "
        "(default arkiv-import-<AE>-<host>-<port>.state.json here)",
    )


def parse(args: argparse.Namespace) -> tuple[PacsAddress, PullOptions]:
    """The source and the options, checked before anything is imported; PacsError says what is
    wrong with them (the command's usage error)."""
    address = PacsAddress.parse(str(args.from_pacs or ""))
    options = PullOptions(
        calling_ae=args.calling_ae,
        retrieve=args.retrieve,
        listen_ae=args.listen_ae,
        listen_port=args.listen_port,
        since=args.since,
        until=args.until,
        window_days=args.window_days,
        max_per_query=args.max_per_query,
        concurrency=args.concurrency,
        rate=args.rate,
    )
    options.check()
    return address, options


def run(
    archive: Archive, args: argparse.Namespace, run: ImportRun, console: rich.console.Console
) -> None:
    """Pull everything new from `args.from_pacs` into `run`. ArchiveUnavailable and
    KeyboardInterrupt propagate (the command stops); PACS problems are printed and reported."""
    label = f"pacs:{args.from_pacs}"
    try:
        address, options = parse(args)
        label = f"pacs:{address}"
        path = args.state or default_state_path(address.ae_title, address.host, address.port)
        state = PullState(Path(path), str(address))
        with _PullProgress(console) as progress:
            if state.has_run_in_progress():
                console.print(f"resuming the interrupted pull from {address} ({path})")
            result = pull(address, options, run, state, progress)
        _summary(console, result, path)
    except (PacsError, PullStateError) as exc:
        console.print(f"[bold red]arkiv import:[/] {exc}")
        run.report.refuse(label, str(exc))


def _summary(console: rich.console.Console, result: PullResult, state: Path) -> None:
    console.print(
        f"{result.source}: {result.studies_found} studies found, {result.studies_retrieved} "
        f"retrieved, {result.studies_skipped} already complete, {result.studies_failed} failed "
        f"(retried next run); {result.objects_received} objects, "
        f"{result.bytes_received / 1e6:.1f} MB received; {result.queries} queries"
        f"{f', {result.windows_split} windows split' if result.windows_split else ''}; "
        f"state in {state}"
    )
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}")


class _PullProgress(PullListener):
    """Four lines on the console: date windows (with the time left), studies, objects, MB."""

    def __init__(self, console: rich.console.Console) -> None:
        self._progress = progress_bars(console, 120.0)
        self._lock = threading.Lock()
        self._windows = self._progress.add_task("period", total=None, unit="windows")
        self._studies = self._progress.add_task("studies", total=0, unit="studies")
        self._objects = self._progress.add_task("objects", total=0, unit="objects")
        self._bytes = self._progress.add_task("received", total=None, unit="MB")

    def __enter__(self) -> _PullProgress:
        self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._progress.stop()

    def windows_planned(self, count: int) -> None:
        self._progress.update(self._windows, total=count)

    def window_finished(self) -> None:
        self._progress.advance(self._windows)

    def studies_found(self, found: list[FoundStudy], wanted: list[FoundStudy]) -> None:
        with self._lock:
            studies = self._progress.tasks[self._studies].total or 0
            objects = self._progress.tasks[self._objects].total or 0
            self._progress.update(self._studies, total=studies + len(wanted))
            more = sum(s.instances or 0 for s in wanted)
            self._progress.update(self._objects, total=objects + more)

    def study_finished(self, study: FoundStudy, ok: bool) -> None:
        self._progress.advance(self._studies)

    def object_received(self, disposition: Disposition, size: int) -> None:
        self._progress.advance(self._objects)
        self._progress.advance(self._bytes, size)
