"""The `arkiv` command: serve the archive, manage accounts, check the audit log and the store.

Exit codes: 0 done; 1 a check failed (the audit log or a checkpoint does not verify, fsck found
damage); 2 the command could not run (bad usage, configuration, unreadable files, storage down).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from arkiv import cluster_cli, import_cli, patients_cli, photo_import
from arkiv.accounts import SERVICE_SCOPES, Role
from arkiv.atomic_file import write_atomically
from arkiv.audit import Actor, Event, EventType
from arkiv.audit_checkpoint import (
    BrokenLog,
    CheckpointError,
    CheckpointSigner,
    InvalidCheckpoint,
    NoteVerifier,
    load_signing_key,
    log_origin,
    open_note,
    public_key_pem,
    verifier_key,
    verify_against_notes,
    verify_stored_checkpoints,
)
from arkiv.clock import iso
from arkiv.config import ConfigError, Settings, load_settings
from arkiv.counties import County, parse_county
from arkiv.services import Archive
from storage.errors import StorageError
from storage.index import Index
from storage.records import AuditEvent

log = logging.getLogger("arkiv")

_DESCRIPTION = "The archive's command: serve it, manage accounts, check the audit log and store."

_EXPORT_FORMATS = ("csv", "fhir", "dicom")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?Z?$")
_SKEW = timedelta(hours=1)
"""How far `recorded_at` may run behind sequence order (its time is taken before the chain's
lock, and scaled-out nodes have clocks of their own): the export's search margin."""


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
    parser.add_argument(
        "--health-port",
        type=int,
        help="`arkiv dicom` alone: HTTP port of /healthz, /readyz and /metrics (default none)",
    )


def _scopes(text: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = scopes - SERVICE_SCOPES
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scopes {', '.join(sorted(unknown))}; use {','.join(sorted(SERVICE_SCOPES))}"
        )
    return scopes


def _time_bound(value: str, upper: bool) -> str:
    """A date or UTC instant as the string `recorded_at` compares against, as in the web API:
    a date as upper bound means the whole day."""
    value = value.strip()
    if _DATE.match(value):
        return f"{value}T23:59:59.999999Z" if upper else f"{value}T00:00:00.000000Z"
    if _INSTANT.match(value):
        with contextlib.suppress(ValueError):
            return iso(_instant(value))
    raise argparse.ArgumentTypeError(
        f"time {value!r} must be YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.ffffff]]Z (UTC)"
    )


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.rstrip("Z")).replace(tzinfo=UTC)


def _lower_bound(value: str) -> str:
    return _time_bound(value, upper=False)


def _upper_bound(value: str) -> str:
    return _time_bound(value, upper=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arkiv", description=_DESCRIPTION)
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

    _user_commands(commands.add_parser("user", help="accounts"))
    _common(photo_import.add_parser(commands))
    _common(import_cli.add_parser(commands))
    _common(patients_cli.add_parser(commands))
    _audit_commands(commands.add_parser("audit", help="the audit log"))
    cluster_cli.add_parser(commands)

    migrate = commands.add_parser(
        "migrate",
        help="move an embedded archive (SQLite and files) to PostgreSQL and S3",
        description="Copy the embedded archive in --data (its SQLite index and the files under "
        "blobs/) to the PostgreSQL database and S3 bucket of --to, with a progress bar. Every "
        "object is hashed on the way and a corrupt one stops the migration before any index row "
        "is copied. At the end the counts and checksums of source and target are compared and "
        "the exit code is 0 only when they all match. Interrupted (even by kill -9), the same "
        "command continues where it stopped; after success it only proves again. The source "
        "archive must be stopped: migrate refuses to start while a process has its index open. "
        "Both audit logs record the move (an Export event in the source before copying, an "
        "Import event in the target after the proof). Exit codes: 0 the target matches the "
        "source; 1 a check failed (a corrupt source object, a difference); 2 it could not run.",
    )
    migrate.add_argument(
        "--data",
        type=Path,
        dest="data_dir",
        required=True,
        help="data directory of the stopped embedded archive (any database or S3 settings of "
        "the environment are not used for it)",
    )
    migrate.add_argument(
        "--to",
        type=Path,
        required=True,
        dest="target",
        metavar="TARGET.toml",
        help="the scale-out configuration the archive will run with afterwards: an [arkiv] "
        "table with database_url (PostgreSQL) and the s3_* settings. It is read on its own, "
        "without ARKIV_* environment variables (they describe this shell's archive), so it "
        "must hold the S3 keys; keep it readable by its owner only",
    )
    migrate.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        metavar="ROWS",
        help="index rows per transaction in the target (default 1000)",
    )
    migrate.add_argument(
        "--workers", type=int, default=8, help="objects copied at once (default 8)"
    )
    migrate.add_argument(
        "--verify-read",
        action="store_true",
        help="prove by reading every object back from the bucket and hashing it, not only by "
        "the SHA-256 stored with it",
    )

    fsck = commands.add_parser(
        "fsck", help="consistency and integrity of the index and the blob store"
    )
    _common(fsck)
    fsck.add_argument(
        "--repair",
        action="store_true",
        help="index complete objects a crash left unindexed, and make an earlier intact copy "
        "current again for missing or corrupt objects where the store keeps one (versioned S3)",
    )
    fsck.add_argument(
        "--scrub",
        action="store_true",
        help="also read every indexed object and check it against the SHA-256 recorded at "
        "ingest (each mismatch is logged and raises a security alert in the audit log)",
    )

    def scrub_rate(text: str) -> float:
        try:
            rate = float(text)
        except ValueError:
            rate = -1.0
        if not rate >= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a rate in MB/s (0 or more)")
        return rate

    fsck.add_argument(
        "--scrub-rate",
        type=scrub_rate,
        default=50.0,
        metavar="MB/s",
        help="most megabytes (10^6 bytes) the scrub reads per second, so that it does not "
        "starve ingest (default 50; 0 = unlimited)",
    )
    return parser


def _user_commands(user: argparse.ArgumentParser) -> None:
    commands = user.add_subparsers(dest="user_command", required=True)
    add = commands.add_parser("add", help="create an account")
    _common(add)
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    add.add_argument("--county", required=True, choices=[c.value for c in County])
    secret = add.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    secret.add_argument(
        "--no-password",
        action="store_true",
        help="no password: signs in through OpenID Connect only (needs --hpr-number)",
    )
    add.add_argument("--display-name", default="", help="the name shown in the UI")
    add.add_argument("--hpr-number", help="HPR number, linking a HelseID sign-in to the account")
    add.add_argument(
        "--scopes",
        type=_scopes,
        default=frozenset(),
        help=f"service accounts: comma-separated, of {','.join(sorted(SERVICE_SCOPES))}",
    )
    disable = commands.add_parser("disable", help="disable an account and end its sessions")
    _common(disable)
    disable.add_argument("name")
    listing = commands.add_parser("list", help="the accounts (no password hashes)")
    _common(listing)


def _audit_commands(audit: argparse.ArgumentParser) -> None:
    commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = commands.add_parser(
        "verify",
        help="check the hash chain from the first event and hold it against signed checkpoints",
    )
    _common(verify)
    verify.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        metavar="FILE",
        help="a signed checkpoint kept off the machine (a .note file, or a directory of them; "
        "repeatable); without it, the checkpoints stored in the index are used",
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="the key the checkpoints were signed with (PEM or verifier key line); "
        "default: the archive's own signing key",
    )
    checkpoint = commands.add_parser(
        "checkpoint", help="sign the log's head now and print the signed note"
    )
    _common(checkpoint)
    public_key = commands.add_parser(
        "public-key", help="print the public key that verifies the checkpoints"
    )
    _common(public_key)
    public_key.add_argument(
        "--format",
        choices=("pem", "vkey"),
        default="pem",
        help="PEM (default) or the one-line signed-note verifier key",
    )
    export = commands.add_parser(
        "export", help="matching events, oldest first (the export is itself audited)"
    )
    _common(export)
    export.add_argument("--format", required=True, choices=_EXPORT_FORMATS)
    export.add_argument("--since", type=_lower_bound, help="from (YYYY-MM-DD or UTC instant)")
    export.add_argument("--until", type=_upper_bound, help="to (a date means the whole day)")
    export.add_argument(
        "--county",
        choices=[c.value for c in County],
        help="events that concern this county (its users' or its patients')",
    )
    export.add_argument("--patient", help="events about this patient ID")
    export.add_argument(
        "--output", type=Path, metavar="FILE", help="write here (mode 0600) instead of stdout"
    )


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
            health_port=getattr(args, "health_port", None),
        )
        return _dispatch(args, settings)
    except (BrokenLog, InvalidCheckpoint) as exc:
        print(f"arkiv: {exc}", file=sys.stderr)
        return 1
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
    if args.command == "audit" and args.audit_command == "public-key":
        return _audit_public_key(settings, args.format)
    if args.command == "migrate":
        return _migrate(settings, args)
    if args.command == "cluster":
        return cluster_cli.run(args)
    archive = Archive(settings)
    try:
        if args.command == "user":
            if args.user_command == "add":
                return _user_add(archive, args)
            if args.user_command == "disable":
                return _user_disable(archive, args.name)
            return _user_list(archive)
        if args.command == "audit":
            if args.audit_command == "checkpoint":
                return _audit_checkpoint(archive)
            if args.audit_command == "export":
                return _audit_export(archive, args)
            return _audit_verify(archive, args.checkpoint or [], args.public_key)
        if args.command == "fsck":
            return _fsck(archive, args)
        if args.command == "import-photos":
            return photo_import.run(archive, args, _cli_actor(settings).name)
        if args.command == "patients":
            return patients_cli.run(archive, args, _cli_actor(settings))
        if args.command == "import":
            return import_cli.run(archive, args, _cli_actor(settings).name)
    finally:
        archive.close()
    return 2


def _cli_actor(settings: Settings) -> Actor:
    """The operator at the machine's shell, as the audit log names them."""
    try:
        who = getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        who = f"uid-{os.getuid()}"
    return Actor(name=f"cli:{who}", kind="system", county=settings.county.value)


# -- accounts --------------------------------------------------------------------------------------


def _user_add(archive: Archive, args: argparse.Namespace) -> int:
    password: str | None
    if args.no_password:
        password = None
    elif args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("arkiv: the passwords differ", file=sys.stderr)
            return 2
    archive.accounts.add_user(
        args.name,
        password,
        Role(args.role),
        parse_county(args.county),
        display_name=args.display_name,
        hpr_number=args.hpr_number,
        pid=None,
        scopes=args.scopes,
    )
    print(f"user {args.name} added ({args.role}, {args.county})")
    return 0


def _user_disable(archive: Archive, name: str) -> int:
    """Disabled by the operator: audited as the web admin's disabling is, with the CLI actor."""
    archive.accounts.disable_user(name)
    archive.audit.record(
        Event(
            EventType.SECURITY_ALERT,
            "U",
            _cli_actor(archive.settings),
            details={"subtype": "user disabled", "user": name},
        )
    )
    print(f"user {name} disabled")
    return 0


def _user_list(archive: Archive) -> int:
    rows = [("USER", "ROLE", "COUNTY", "STATE", "SIGN-IN", "HPR", "SCOPES", "NAME")]
    for account in archive.index.list_users():
        state = "disabled" if account.disabled else "locked" if account.locked_until else "active"
        rows.append(
            (
                account.username,
                account.role,
                account.county,
                state,
                "oidc-only" if account.password_hash == "!" else "password",
                account.hpr_number or "-",
                ",".join(account.scopes) or "-",
                account.display_name,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [value.ljust(width) for value, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
    return 0


# -- the audit log ---------------------------------------------------------------------------------


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc


def _note_files(paths: Sequence[Path]) -> list[Path]:
    """Files given, and the `.note` files of directories given (a shipped checkpoint folder)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            notes = sorted(path.glob("*.note"))
            if not notes:
                raise ConfigError(f"no .note files in {path}")
            found.extend(notes)
        else:
            found.append(path)
    return found


def _audit_verify(archive: Archive, checkpoints: Sequence[Path], public_key: Path | None) -> int:
    """The chain from the first event, held against signed checkpoints: those given, else those
    stored in the index that the key (given, or the archive's own) signed."""
    settings = archive.settings
    verifier: NoteVerifier | None = None
    if public_key is not None:
        verifier = NoteVerifier.parse(_read_text(public_key, "public key"))
    else:
        key = load_signing_key(settings.signing_key_path)
        verifier = NoteVerifier(key.public_key()) if key is not None else None
    if checkpoints:
        if verifier is None:
            raise ConfigError(
                f"no signing key at {settings.signing_key_path}: give --public-key FILE"
            )
        notes = []
        for path in _note_files(checkpoints):
            try:
                notes.append(open_note(_read_text(path, "checkpoint"), verifier))
            except InvalidCheckpoint as exc:
                print(f"checkpoint {path} REJECTED: {exc}")
                return 1
        report = verify_against_notes(archive.index, notes)
    else:
        report = verify_stored_checkpoints(archive.index, verifier)
        if verifier is None and report.unchecked:
            print(
                f"arkiv: {report.unchecked} stored checkpoint(s) not checked: no signing key at "
                f"{settings.signing_key_path} (give --public-key FILE)",
                file=sys.stderr,
            )
    if not report.ok:
        if report.broken_at is not None:
            print(f"audit log BROKEN at event {report.broken_at}: {report.reason}")
            print(f"({report.checked} events before it verified)")
        else:
            print(f"audit checkpoints BROKEN: {report.reason}")
        return 1
    print(f"audit log intact: {report.checked} events, head at event {report.head_seq}")
    if report.checkpoints:
        last = report.checkpoints[-1]
        print(
            f"matches {len(report.checkpoints)} signed checkpoint(s); the latest covers "
            f"{last.size} events, signed {last.signed_at or '(no time)'} by {last.key_name}"
        )
    elif not checkpoints:
        print("no signed checkpoints to hold it against yet")
    if report.unchecked and verifier is not None:
        print(f"{report.unchecked} stored checkpoint(s) signed by other keys were not checked")
    return 0


def _audit_checkpoint(archive: Archive) -> int:
    """Sign now (creating the key on first use) and print the note; if the head is signed
    already, print that checkpoint."""
    signer = CheckpointSigner(archive.index, archive.settings)
    checkpoint = signer.sign_now()
    if checkpoint is None:
        head_seq, _ = archive.index.audit_head()
        if head_seq == 0:
            print("arkiv: the audit log is empty; there is nothing to sign", file=sys.stderr)
            return 0
        covering = archive.index.checkpoints(since_seq=head_seq - 1)
        if not covering:
            raise CheckpointError("no checkpoint was signed; try again")
        checkpoint = covering[0]
    sys.stdout.write(checkpoint.note)
    return 0


def _audit_public_key(settings: Settings, fmt: str) -> int:
    key = load_signing_key(settings.signing_key_path)
    if key is None:
        raise ConfigError(
            f"no audit signing key yet at {settings.signing_key_path} "
            "(`arkiv audit checkpoint` or starting the archive makes one)"
        )
    public = key.public_key()
    if fmt == "vkey":
        print(verifier_key(log_origin(settings), public))
    else:
        sys.stdout.write(public_key_pem(public))
    return 0


def _audit_export(archive: Archive, args: argparse.Namespace) -> int:
    """Events read directly (the operator at the machine sees every county), the use of the log
    recorded before any is read: an export that cannot be audited does not happen."""
    county = parse_county(args.county).value if args.county else None
    patient = (args.patient or "").strip() or None
    query = " ".join(
        f"{name}={value}"
        for name, value in (
            ("format", args.format),
            ("since", args.since),
            ("until", args.until),
            ("county", county),
        )
        if value
    )
    archive.audit.record(
        Event(
            EventType.AUDIT_LOG_USED,
            "R",
            _cli_actor(archive.settings),
            patient_ids=(patient,) if patient else (),
            query=query,
            counties=(county,) if county else tuple(c.value for c in County),
            details={"use": f"export {args.format}", "output": str(args.output or "stdout")},
        )
    )
    last_seq, _ = archive.index.audit_head()
    events = _export_events(archive.index, last_seq, args.since, args.until, county, patient)
    lines = _export_lines(args.format, events, archive.settings.ae_title)
    if args.output is None:
        sys.stdout.writelines(lines)
        sys.stdout.flush()
        return 0
    # Audit exports name patients: the file is for its owner only, and appears whole or not.
    write_atomically(args.output, lines, mode=0o600)
    print(f"audit events written to {args.output}", file=sys.stderr)
    return 0


def _export_lines(fmt: str, events: Iterator[AuditEvent], source: str) -> Iterator[str]:
    from arkiv import audit_export

    lines: Iterable[str]
    if fmt == "csv":
        lines = audit_export.csv_rows(events)
    elif fmt == "fhir":  # as FHIR bulk data: one AuditEvent resource per line (NDJSON)
        lines = (
            json.dumps(audit_export.fhir_audit_event(e, source), ensure_ascii=False) for e in events
        )
    else:
        lines = audit_export.dicom_audit_lines(events, source)
    for line in lines:
        yield line if line.endswith("\n") else line + "\n"


def _export_events(
    index: Index,
    last_seq: int,
    since: str | None,
    until: str | None,
    county: str | None,
    patient: str | None,
) -> Iterator[AuditEvent]:
    """Matching events in sequence order, up to `last_seq`, in constant memory.

    The log is read in its physical order so that appends during a long export neither repeat
    nor skip events. Time bounds are found by binary search over the (nearly) time-ordered
    sequence, widened by a margin, so a day's export does not read ten years of log.
    """
    after = _seq_before(index, since, last_seq) if since else 0
    stop_after = iso(_instant(until) + _SKEW) if until else None
    for event in index.iter_audit_events(after=after):
        if event.seq > last_seq or (stop_after and event.recorded_at > stop_after):
            return
        if since and event.recorded_at < since:
            continue
        if until and event.recorded_at > until:
            continue
        if county and county != event.county and county not in event.counties:
            continue
        if patient and patient not in event.patient_ids:
            continue
        yield event


def _seq_before(index: Index, since: str, last_seq: int) -> int:
    """A sequence number after which every event recorded at `since` or later lies."""
    moment = iso(_instant(since) - _SKEW)
    low, high = 0, last_seq  # events up to `low` are older than `moment`
    while low < high:
        middle = (low + high + 1) // 2
        event = index.audit_event_at(middle)
        if event is None:  # a gap (the log is damaged): read it all
            return 0
        if event.recorded_at < moment:
            low = middle
        else:
            high = middle - 1
    return low


# -- the store -------------------------------------------------------------------------------------


def _fsck(archive: Archive, args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from arkiv.consistency import ScrubProgress

    repair: bool = args.repair
    scrub: bool = args.scrub
    rate = args.scrub_rate * 1_000_000 or None
    with contextlib.ExitStack() as stack:
        progress: ScrubProgress | None = None
        if scrub and sys.stdout.isatty():
            bar = stack.enter_context(
                Progress(
                    TextColumn("scrub"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("objects, {task.fields[read]:.1f} MB read"),
                    TimeRemainingColumn(),
                    transient=True,
                )
            )
            task = bar.add_task("scrub", total=None, read=0.0)
            for handler in logging.getLogger().handlers:  # log lines above the bar, not through it
                if isinstance(handler, logging.StreamHandler) and handler.stream is sys.__stderr__:
                    handler.setStream(sys.stderr)
                    stack.callback(handler.setStream, sys.__stderr__)

            def show(done: int, total: int, read: int) -> None:
                bar.update(task, completed=done, total=total, read=read / 1_000_000)

            progress = show

        report = archive.consistency.check(
            repair=repair, scrub=scrub, scrub_rate=rate, progress=progress
        )
    counts = (
        f"{report.objects} objects, {report.indexed} indexed, {len(report.unindexed)} unindexed"
        f"{f' ({len(report.reindexed)} re-indexed)' if repair else ''}, "
        f"{len(report.missing)} missing"
    )
    if report.scrubbed:
        counts += (
            f", {report.checked} checked ({report.bytes_read / 1_000_000:.1f} MB), "
            f"{len(report.corrupt)} corrupt"
        )
        if report.unreadable:
            counts += f", {len(report.unreadable)} unreadable"
    if repair:
        counts += f", {len(report.restored)} restored, {len(report.unrepairable)} unrepairable"
    print(counts)
    if not report.scrubbed:
        print("(not scrubbed: --scrub checks every object against its SHA-256)")
    for key in report.unindexed:
        if key in report.reindexed:
            print(f"re-indexed (left unindexed by an interrupted store): {key}")
        elif key in report.unrepairable:
            print(f"CANNOT re-index {key}: {report.unrepairable[key]}")
        else:
            print(f"unindexed object (left by an interrupted store; --repair indexes it): {key}")
    for problem, keys, what in (
        ("MISSING", report.missing, "object the index refers to (resend it from its source)"),
        ("CORRUPT", report.corrupt, "object does not match the SHA-256 recorded at ingest"),
    ):
        for key in keys:
            if key in report.restored:
                print(f"restored ({problem.lower()}; an intact earlier copy is current): {key}")
            else:
                print(f"{problem} {what}: {key}")
                if key in report.unrepairable:
                    print(f"  CANNOT restore {key}: {report.unrepairable[key]}")
                elif not repair:
                    print("  (--repair restores an intact earlier copy if the store keeps one)")
    for key, error in report.unreadable.items():
        print(f"UNREADABLE {key}: {error} (check the store, then run fsck --scrub again)")
    print("healthy" if report.healthy else "NOT HEALTHY: see the problems above")
    return 0 if report.healthy else 1


# -- migration -------------------------------------------------------------------------------------


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    """The embedded archive in --data to the scale-out configuration in --to."""
    from arkiv.config import load_settings_file
    from arkiv.migration import Options
    from arkiv.migration_progress import run_command

    target = load_settings_file(args.target)
    options = Options(
        batch_size=args.batch_size, workers=args.workers, verify_read=args.verify_read
    )
    return run_command(settings, target, _cli_actor(settings), options)


if __name__ == "__main__":
    sys.exit(main())
