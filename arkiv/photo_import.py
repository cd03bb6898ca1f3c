"""`arkiv import-photos DIR --patient …`: a camera's or phone's dump of one patient's photos.

Each file goes through the same upload as the web form (`PhotoService.upload`), one at a time, so
that one unreadable file is reported and skipped while the rest are stored. Files that are not
photos or videos at all (sidecars, thumbnails databases) are listed as skipped. The operator is
the uploader in the audit log, for the county given.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from arkiv.accounts import Principal, Role
from arkiv.counties import parse_county
from arkiv.errors import ArkivError
from arkiv.photo_formats import UnknownMediaType
from arkiv.photos import CATEGORIES, PhotoForm, UploadedFile
from arkiv.services import Archive


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "import-photos", help="import a folder of one patient's photos and videos"
    )
    parser.add_argument("directory", type=Path, metavar="DIR")
    parser.add_argument("--patient", required=True, help="the patient's national ID")
    parser.add_argument("--category", required=True, choices=sorted(CATEGORIES))
    parser.add_argument("--teeth", default="", help='FDI tooth numbers, e.g. "11 21"')
    parser.add_argument("--note", default="")
    parser.add_argument(
        "--county", default=None, help="the county whose clinic took them (default: the node's)"
    )
    return parser


@dataclass
class ImportReport:
    stored: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def run(archive: Archive, args: argparse.Namespace, operator: str) -> int:
    """Import the folder as `operator` (the shell user, as the audit log names them)."""
    if not args.directory.is_dir():
        print(f"arkiv: {args.directory} is not a directory")
        return 2
    county = parse_county(args.county) if args.county else archive.settings.county
    principal = Principal(
        username=operator,
        role=Role.SERVICE,
        county=county,
        scopes=frozenset({"store"}),
        auth_method="cli",
    )
    form = PhotoForm(
        patient_id=args.patient, category=args.category, teeth=args.teeth, note=args.note
    )
    files = sorted(p for p in args.directory.rglob("*") if p.is_file() and _visible(p, args))
    report = ImportReport()
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("photos", total=sum(p.stat().st_size for p in files))
        for path in files:
            name = str(path.relative_to(args.directory))
            try:
                stored = archive.photos.upload(
                    principal, [UploadedFile(path.read_bytes(), "", path.name)], form
                )
            except UnknownMediaType:
                report.skipped.append(name)
            except (ArkivError, OSError) as exc:
                report.refused[name] = str(exc)
                if not report.stored and "patient" in str(exc):
                    progress.stop()
                    print(f"arkiv: {exc}")
                    return 2
            else:
                (report.duplicates if stored[0].duplicate else report.stored).append(name)
            progress.advance(task, path.stat().st_size)
    _print(report)
    return 1 if report.refused else 0


def _visible(path: Path, args: argparse.Namespace) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(args.directory).parts)


def _print(report: ImportReport) -> None:
    print(
        f"stored {len(report.stored)}, already stored {len(report.duplicates)}, "
        f"skipped {len(report.skipped)} (not photos or videos), refused {len(report.refused)}"
    )
    for name in report.skipped:
        print(f"  skipped  {name}")
    for name, reason in report.refused.items():
        print(f"  refused  {name}: {reason}")
