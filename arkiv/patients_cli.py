"""`arkiv patients conflicts|changes|merge|split|accept|undo`: the reconciliation of patient
records at the shell, for the operator merging the counties' archives and for scripts (`--json`).

The operator is the actor in the audit log (`cli:<login>`), as for the other commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from arkiv.audit import Actor
from arkiv.counties import parse_county
from arkiv.errors import ArkivError
from arkiv.reconciliation import ChangeResult, NewRecord, readable_name
from arkiv.services import Archive
from storage.patient_records import ChangeRow


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser = commands.add_parser("patients", help="patient record conflicts, merges and splits")
    sub = parser.add_subparsers(dest="patients_command", required=True)
    conflicts = sub.add_parser("conflicts", help="what could not be matched automatically")
    conflicts.add_argument("--county", help="only records with studies of this county")
    conflicts.add_argument("--json", action="store_true", help="as JSON, for scripts")
    changes = sub.add_parser("changes", help="the merges, splits, accepts and undos made")
    changes.add_argument("--limit", type=int, default=50)
    changes.add_argument("--json", action="store_true")
    merge = sub.add_parser("merge", help="move every study of one record to another")
    merge.add_argument("source", metavar="FROM", help="#12 (record number) or a Patient ID")
    merge.add_argument("--into", required=True, metavar="TO")
    split = sub.add_parser("split", help="move chosen studies of a record to another record")
    split.add_argument("source", metavar="FROM")
    split.add_argument("--study", action="append", required=True, metavar="STUDY_UID")
    target = split.add_mutually_exclusive_group(required=True)
    target.add_argument("--into", metavar="TO", help="an existing record")
    target.add_argument("--new-id", metavar="PATIENT_ID", help="a new record with this ID")
    split.add_argument("--issuer", default="", help="issuer of --new-id")
    split.add_argument("--name", default="", help="name of the new record (DICOM PN)")
    split.add_argument("--birth-date", default="", help="YYYYMMDD of the new record")
    accept = sub.add_parser("accept", help="mark a record's conflicts as checked")
    accept.add_argument("record", metavar="RECORD")
    accept.add_argument("--name", help="the name the record keeps (one of those seen)")
    accept.add_argument("--birth-date", help="the birth date it keeps (one of those seen)")
    undo = sub.add_parser("undo", help="reverse one change")
    undo.add_argument("change", type=int, metavar="CHANGE")
    for command in (merge, split, accept, undo):
        command.add_argument("--reason", default="", help="why (kept in the audit log)")
    for command in (conflicts, changes, merge, split, accept, undo):
        # Also after the subcommand; SUPPRESS keeps a value given before it.
        command.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML file")
        command.add_argument(
            "--data", type=Path, dest="data_dir", default=argparse.SUPPRESS, help="data directory"
        )
    return parser


def run(archive: Archive, args: argparse.Namespace, actor: Actor) -> int:
    service = archive.reconciliation
    try:
        command = args.patients_command
        if command == "conflicts":
            county = parse_county(args.county).value if args.county else None
            found = service.conflicts(actor, county)
            if args.json:
                print(json.dumps([c.as_json() for c in found], indent=2, ensure_ascii=False))
            else:
                for conflict in found:
                    print(conflict.summary)
                    for study in conflict.studies:
                        print(f"    study {study.study_uid} {study.study_date} {study.county}")
                print(f"{len(found)} conflict{'s' if len(found) != 1 else ''}")
            return 0
        if command == "changes":
            rows = service.changes(args.limit)
            if args.json:
                print(json.dumps([_change_json(c) for c in rows], indent=2, ensure_ascii=False))
            else:
                for row in rows:
                    print(_change_line(row))
            return 0
        result = _change(service, args, actor)
    except ArkivError as exc:
        print(f"arkiv: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # an unknown county name
        print(f"arkiv: {exc}", file=sys.stderr)
        return 2
    print(f"change {result.change.id}: {result.message}")
    return 0


def _change(service: Any, args: argparse.Namespace, actor: Actor) -> ChangeResult:
    command = args.patients_command
    if command == "merge":
        result: ChangeResult = service.merge(actor, args.source, args.into, args.reason)
    elif command == "split":
        new = None
        if args.new_id is not None:
            new = NewRecord(args.new_id, args.issuer, args.name, args.birth_date)
        result = service.split(actor, args.source, args.study, args.into, new, args.reason)
    elif command == "accept":
        result = service.accept(actor, args.record, args.name, args.birth_date, args.reason)
    else:
        result = service.undo(actor, args.change, args.reason)
    return result


def _change_json(row: ChangeRow) -> dict[str, Any]:
    return {
        "change": row.id,
        "kind": row.kind,
        "record": row.patient_pk,
        "target": row.target_pk,
        "study_uids": list(row.study_uids),
        "details": row.details,
        "undoes": row.undoes,
        "undone_by": row.undone_by,
        "actor": row.actor,
        "made_at": row.made_at,
    }


def _change_line(row: ChangeRow) -> str:
    target = f" -> #{row.target_pk}" if row.target_pk else ""
    what = f"{row.kind} #{row.patient_pk}{target}"
    if row.kind == "accept":
        what += f" as {readable_name(str(row.details.get('name', '')))}"
    if row.undoes:
        what += f" (undoes {row.undoes})"
    undone = f" [undone by {row.undone_by}]" if row.undone_by else ""
    return f"{row.id:>6} {row.made_at} {row.actor}: {what}, {len(row.study_uids)} studies{undone}"
