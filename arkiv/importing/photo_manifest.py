"""Clinical photos listed in a manifest: `arkiv import --manifest photos.csv`.

An old photo store keeps who and what outside the pictures (a database export, a spreadsheet),
so the operator gives a CSV with one row per photo::

    file,national_id,date,category,teeth[,county]
    2019/kari/IMG_0001.JPG,01017012345,2019-03-14,before-treatment,11 21

`file` is relative to the manifest's folder; `date` is YYYY-MM-DD or an ISO date and time (used
when the photo carries no capture time of its own); `teeth` FDI numbers separated by spaces;
`county`, when present and filled, owns that row's photo instead of the command line's county.

Each row goes through the same upload as the web form (`PhotoService.upload`), one at a time, as
the CLI operator with store rights in the row's county, so a row that is refused (unknown
patient, not a photo, a bad tooth number) is reported with its row number and the rest go on.
The same manifest run again stores nothing twice: a photo's id comes from its content.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from arkiv.accounts import Principal, Role
from arkiv.counties import County, parse_county
from arkiv.errors import ArchiveUnavailable, ArkivError, AuditUnavailable
from arkiv.photo_formats import UnknownMediaType
from arkiv.photos import PhotoForm, PhotoService, UploadedFile

COLUMNS = ("file", "national_id", "date", "category", "teeth")
OPTIONAL = ("county",)


class ManifestError(ValueError):
    """The manifest as a whole cannot be used (unreadable, columns missing): nothing is
    imported from it, and the operator is told what to fix."""


@dataclass
class PhotoTally:
    """What became of a manifest's rows, for the report."""

    manifest: str
    imported: int = 0
    duplicates: int = 0
    bytes_imported: int = 0
    refused: list[dict[str, str]] = field(default_factory=list)
    """{"row", "file", "reason"}; `row` is the line in the CSV (the header is line 1)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "bytes_imported": self.bytes_imported,
            "refused": self.refused,
        }


@dataclass(frozen=True)
class Row:
    line: int
    file: str
    national_id: str
    taken: str
    category: str
    teeth: str
    county: str


def operator_principal(operator: str, county: County) -> Principal:
    """The CLI operator as an uploader: store rights in one county, nothing else."""
    return Principal(
        username=operator,
        role=Role.SERVICE,
        county=county,
        scopes=frozenset({"store"}),
        auth_method="cli",
    )


def open_manifest(path: Path) -> tuple[list[str], Generator[Row, None, None]]:
    """Check the header now (a usage error if it is wrong), and return the rows lazily."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header_line = handle.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read the manifest {path}: {exc}") from exc
    # Spreadsheets set to Norwegian save "CSV" with semicolons.
    delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
    header = [h.strip().lower() for h in next(csv.reader([header_line], delimiter=delimiter), [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ManifestError(
            f"the manifest {path} lacks the column(s) {', '.join(missing)}; its first line must "
            f"name {','.join(COLUMNS)} (and optionally county)"
        )

    def rows() -> Generator[Row, None, None]:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            next(reader, None)
            for values in reader:
                if not any(v.strip() for v in values):
                    continue
                cell = dict(zip(header, (v.strip() for v in values), strict=False))
                yield Row(
                    line=reader.line_num,
                    file=cell.get("file", ""),
                    national_id=cell.get("national_id", ""),
                    taken=cell.get("date", ""),
                    category=cell.get("category", ""),
                    teeth=cell.get("teeth", ""),
                    county=cell.get("county", ""),
                )

    return header, rows()


def survey(path: Path) -> tuple[int, int]:
    """(rows, bytes of the files they name) for the progress bars; unreadable rows count 0."""
    files = size = 0
    try:
        _, rows = open_manifest(path)
        for row in rows:
            files += 1
            target = _photo_path(path.parent, row.file)
            if target is not None and target.is_file():
                size += target.stat().st_size
    except (ManifestError, OSError, csv.Error):
        pass
    return files, size


Observer = Callable[[str, int], None]
"""Told of each row when it is done: (what became of it, bytes of its file)."""


def import_manifest(
    photos: PhotoService,
    manifest: Path,
    county: County,
    operator: str,
    tally: PhotoTally,
    observe: Observer | None = None,
) -> None:
    """Upload every row. ArchiveUnavailable propagates: the caller stops the run, and the same
    manifest run again continues (what was stored comes back as duplicates)."""
    _, rows = open_manifest(manifest)
    try:
        for row in rows:
            outcome, size = _one(photos, manifest, row, county, operator, tally)
            if observe is not None:
                observe(outcome, size)
    except csv.Error as exc:
        tally.refused.append({"row": "", "file": "", "reason": f"the CSV breaks off: {exc}"})


def _one(
    photos: PhotoService, manifest: Path, row: Row, county: County, operator: str, tally: PhotoTally
) -> tuple[str, int]:
    def refuse(reason: str, size: int = 0) -> tuple[str, int]:
        tally.refused.append({"row": str(row.line), "file": row.file, "reason": reason})
        return "refused", size

    target = _photo_path(manifest.parent, row.file)
    if target is None:
        return refuse("the file must be named relative to the manifest's folder, inside it")
    owner = county
    if row.county:
        try:
            owner = parse_county(row.county)
        except ValueError as exc:
            return refuse(str(exc))
    taken = _taken(row.taken)
    if taken is None:
        return refuse(f"date {row.taken!r} is not YYYY-MM-DD or an ISO date and time")
    try:
        data = target.read_bytes()
    except OSError as exc:
        return refuse(f"cannot read {row.file}: {exc.strerror or exc}")
    form = PhotoForm(
        patient_id=row.national_id,
        category=row.category,
        teeth=row.teeth,
        taken_at=taken,
        origin=f"manifest:{manifest.resolve()}#row{row.line}:{row.file}",
    )
    try:
        stored = photos.upload(
            operator_principal(operator, owner), [UploadedFile(data, "", row.file)], form
        )
    except (ArchiveUnavailable, AuditUnavailable):
        raise
    except UnknownMediaType as exc:
        return refuse(f"not a photo or video: {exc}", len(data))
    except ArkivError as exc:
        return refuse(str(exc), len(data))
    if stored[0].duplicate:
        tally.duplicates += 1
        return "duplicate", len(data)
    tally.imported += 1
    tally.bytes_imported += len(data)
    return "imported", len(data)


def _photo_path(folder: Path, name: str) -> Path | None:
    """The row's file, only inside the manifest's folder: a manifest names photos, it does
    not reach elsewhere on the machine."""
    if not name or os.path.isabs(name):
        return None
    target = Path(os.path.normpath(folder / name))
    if os.path.commonpath([target, folder]) != str(folder):
        return None
    return target


def _taken(value: str) -> str | None:
    """The form's capture time, "YYYY-MM-DDTHH:MM[:SS]" (a date alone is that day's start)."""
    if not value:
        return None
    try:
        return date.fromisoformat(value).isoformat() + "T00:00"
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=None).isoformat(timespec="seconds")
