"""The `arkiv` command: serve the archive, manage accounts, check the audit log and the store."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from arkiv.accounts import Role
from arkiv.config import ConfigError, Settings, load_settings
from arkiv.counties import County, parse_county
from arkiv.services import Archive
from storage.errors import StorageError

log = logging.getLogger("arkiv")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument(
        "--data", type=Path, dest="data_dir", help="data directory (default ./arkiv-data)"
    )


def _network(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, help="web port (default 8000)")
    parser.add_argument("--dicom-port", type=int, help="DICOM port (default 11112)")
    parser.add_argument(
        "--dicom-workers",
        type=int,
        help="DICOM processes on the one port (default: two per core, up to 4)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arkiv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    for name, text in (
        ("serve", "DICOM node and web app in one process (the embedded default)"),
        ("dicom", "the DICOM node alone"),
        ("web", "the web app alone"),
    ):
        sub = commands.add_parser(name, help=text)
        _common(sub)
        _network(sub)

    worker = commands.add_parser("dicom-worker", help=argparse.SUPPRESS)
    worker.add_argument("--listen-fd", type=int, required=True)
    worker.add_argument("--ready-fd", type=int, required=True)

    user = commands.add_parser("user", help="accounts")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = user_commands.add_parser("add", help="create an account")
    _common(add)
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--county", required=True, choices=[c.value for c in County])
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    audit = commands.add_parser("audit", help="the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser("verify", help="check the hash chain from the first event")
    _common(verify)

    fsck = commands.add_parser("fsck", help="consistency of the index and the blob store")
    _common(fsck)
    fsck.add_argument(
        "--repair", action="store_true", help="index complete objects a crash left unindexed"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # pynetdicom logs every request at INFO: too much for a node taking thousands a day
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(
            getattr(args, "config", None),
            data_dir=getattr(args, "data_dir", None),
            host=getattr(args, "host", None),
            http_port=getattr(args, "http_port", None),
            dicom_port=getattr(args, "dicom_port", None),
            dicom_workers=getattr(args, "dicom_workers", None),
        )
        return _dispatch(args, settings)
    except (ConfigError, StorageError, ValueError, OSError, RuntimeError) as exc:
        print(f"arkiv: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "dicom-worker":
        from arkiv.runner import run_worker

        return run_worker(settings, args.listen_fd, args.ready_fd)
    if args.command in ("serve", "dicom", "web"):
        from arkiv.runner import run

        return run(
            settings, dicom=args.command in ("serve", "dicom"), web=args.command in ("serve", "web")
        )
    archive = Archive(settings)
    try:
        if args.command == "user":
            return _user_add(archive, args)
        if args.command == "audit":
            return _audit_verify(archive)
        if args.command == "fsck":
            return _fsck(archive, args.repair)
    finally:
        archive.close()
    return 2


def _user_add(archive: Archive, args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("arkiv: the passwords differ", file=sys.stderr)
            return 2
    archive.accounts.add_user(args.name, password, Role(args.role), parse_county(args.county))
    print(f"user {args.name} added ({args.role}, {args.county})")
    return 0


def _audit_verify(archive: Archive) -> int:
    report = archive.audit.verify()
    if report.ok:
        print(f"audit log intact: {report.checked} events, head at event {report.head_seq}")
        return 0
    print(f"audit log BROKEN at event {report.broken_at}: {report.reason}")
    print(f"({report.checked} events before it verified)")
    return 1


def _fsck(archive: Archive, repair: bool) -> int:
    report = archive.consistency.check(repair=repair)
    for key in report.unindexed:
        if key in report.reindexed:
            print(f"re-indexed (left unindexed by an interrupted store): {key}")
        elif key in report.unrepairable:
            print(f"CANNOT re-index {key}: {report.unrepairable[key]}")
        else:
            print(f"unindexed object (left by an interrupted store; --repair indexes it): {key}")
    for key in report.missing:
        print(f"MISSING object the index refers to (resend it from its source): {key}")
    print(
        f"{report.objects} objects, {report.indexed} indexed, {len(report.unindexed)} unindexed"
        f"{f' ({len(report.reindexed)} re-indexed)' if repair else ''}, "
        f"{len(report.missing)} missing"
    )
    return 0 if report.healthy else 1


if __name__ == "__main__":
    sys.exit(main())
