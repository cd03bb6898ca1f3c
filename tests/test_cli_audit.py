"""The operator's commands for the audit log and accounts, end to end: `arkiv audit checkpoint`,
`public-key`, `verify` with and without checkpoints kept off the machine, `export` in the three
formats (itself audited), and `arkiv user add|disable|list`.

Most calls go through `arkiv.cli.main` in this process (fast); one runs the installed console
script, as an operator would.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from arkiv.audit import Actor, Event, EventType
from arkiv.audit_checkpoint import CHECKPOINT_DIR, load_signing_key, public_key_pem
from arkiv.cli import main
from arkiv.config import Settings
from arkiv.services import Archive
from storage.records import AuditEvent, AuditQuery
from tests.test_audit_checkpoint import record, rewrite_chain, tamper

ARKIV = Path(sys.executable).with_name("arkiv")
PASSWORD = "riktig-hest-batteri"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory whose log holds ten events (closed again: the CLI opens its own)."""
    folder = tmp_path / "data"
    archive = Archive(Settings(data_dir=folder))
    record(archive, 10)
    archive.close()
    return folder


@pytest.fixture
def cli(
    data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[CliRunner]:
    monkeypatch.delenv("ARKIV_DATA_DIR", raising=False)
    yield CliRunner(data, capsys, monkeypatch)


class CliRunner:
    def __init__(
        self, data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.data = data
        self._capsys = capsys
        self._monkeypatch = monkeypatch

    def __call__(self, *args: str, stdin: str = "") -> Result:
        self._capsys.readouterr()
        self._monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            code = main([*args, "--data", str(self.data)])
        except SystemExit as exc:  # argparse refusing the usage
            code = int(exc.code or 0)
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)


def events(data: Path, query: AuditQuery | None = None) -> list[AuditEvent]:
    archive = Archive(Settings(data_dir=data))
    try:
        return archive.index.find_audit_events(query or AuditQuery(limit=1000))
    finally:
        archive.close()


# -- checkpoints and verification ------------------------------------------------------------------


def test_checkpoint_public_key_and_verify(cli: CliRunner, tmp_path: Path) -> None:
    missing = cli("audit", "public-key")
    assert missing.code == 2
    assert "no audit signing key yet" in missing.err and "\n" not in missing.err.strip()

    signed = cli("audit", "checkpoint")
    assert signed.code == 0, signed.err
    assert signed.out.startswith("arkiv.arkiv/audit\n10\n")
    assert (cli.data / CHECKPOINT_DIR / "10.note").read_text(encoding="utf-8") == signed.out
    again = cli("audit", "checkpoint")
    assert again.code == 0 and again.out == signed.out, "an unchanged head is not signed twice"

    pem = cli("audit", "public-key")
    assert pem.code == 0 and pem.out.startswith("-----BEGIN PUBLIC KEY-----")
    vkey = cli("audit", "public-key", "--format", "vkey")
    assert vkey.code == 0 and vkey.out.startswith("arkiv.arkiv/audit+")

    note = tmp_path / "10.note"
    note.write_text(signed.out, encoding="utf-8")
    for key_text in (pem.out, vkey.out):
        key_file = tmp_path / "key"
        key_file.write_text(key_text)
        result = cli("audit", "verify", "--checkpoint", str(note), "--public-key", str(key_file))
        assert result.code == 0, result.out + result.err
        assert "intact: 10 events" in result.out and "matches 1 signed checkpoint" in result.out

    local = cli("audit", "verify")
    assert local.code == 0 and "matches 1 signed checkpoint" in local.out
    folder = cli("audit", "verify", "--checkpoint", str(cli.data / CHECKPOINT_DIR))
    assert folder.code == 0 and "the latest covers 10 events" in folder.out


def test_wrong_key_and_altered_note_fail_verification(cli: CliRunner, tmp_path: Path) -> None:
    signed = cli("audit", "checkpoint")
    note = tmp_path / "10.note"
    note.write_text(signed.out, encoding="utf-8")
    other = tmp_path / "other.pem"
    other.write_text(public_key_pem(Ed25519PrivateKey.generate().public_key()))
    wrong = cli("audit", "verify", "--checkpoint", str(note), "--public-key", str(other))
    assert wrong.code == 1
    assert "REJECTED" in wrong.out and "not signed by this public key" in wrong.out

    note.write_text(signed.out.replace("\n10\n", "\n12\n"), encoding="utf-8")
    altered = cli("audit", "verify", "--checkpoint", str(note))
    assert altered.code == 1 and "the note was altered" in altered.out

    unreadable = cli("audit", "verify", "--checkpoint", str(tmp_path / "absent.note"))
    assert unreadable.code == 2 and unreadable.err.startswith("arkiv: cannot read checkpoint")


def test_off_box_checkpoint_catches_what_the_box_no_longer_shows(
    cli: CliRunner, tmp_path: Path
) -> None:
    """The intruder cuts the tail, edits an event, recomputes the chain, moves the head, and
    deletes the checkpoints on the machine too: only the copy shipped off the box tells."""
    signed = cli("audit", "checkpoint")
    offbox = tmp_path / "offbox"
    offbox.mkdir()
    shutil.copy(cli.data / CHECKPOINT_DIR / "10.note", offbox / "10.note")
    pem = tmp_path / "arkiv.pem"
    pem.write_text(cli("audit", "public-key").out)

    tamper(
        cli.data,
        "DELETE FROM audit_patients WHERE seq >= 9",
        "DELETE FROM audit_counties WHERE seq >= 9",
        "DELETE FROM audit_events WHERE seq >= 9",
        "UPDATE audit_events SET actor = 'someone-else' WHERE seq = 2",
    )
    rewrite_chain(cli.data)
    caught_locally = cli("audit", "verify")
    assert caught_locally.code == 1
    assert "BROKEN at event 9" in caught_locally.out

    tamper(cli.data, "DELETE FROM audit_checkpoints")
    shutil.rmtree(cli.data / CHECKPOINT_DIR)
    fooled = cli("audit", "verify")
    assert fooled.code == 0 and "intact: 8 events" in fooled.out

    caught = cli("audit", "verify", "--checkpoint", str(offbox), "--public-key", str(pem))
    assert caught.code == 1
    assert "BROKEN at event 9" in caught.out
    assert "a signed checkpoint covers 10 events" in caught.out
    assert signed.code == 0


def test_checkpoint_refuses_a_broken_log(cli: CliRunner) -> None:
    tamper(cli.data, "UPDATE audit_events SET details = '{}' WHERE seq = 6")
    refused = cli("audit", "checkpoint")
    assert refused.code == 1
    assert refused.err.startswith("arkiv: audit log broken at event 6")
    assert refused.out == ""
    verify = cli("audit", "verify")
    assert verify.code == 1 and "BROKEN at event 6" in verify.out


def test_console_script(data: Path, tmp_path: Path) -> None:
    """The installed `arkiv` command, as the operator runs it."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ARKIV), *args, "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    signed = run("audit", "checkpoint")
    assert signed.returncode == 0, signed.stderr
    key = load_signing_key(data / "audit-signing-key.pem")
    assert key is not None
    pem = tmp_path / "arkiv.pem"
    pem.write_text(public_key_pem(key.public_key()))
    note = tmp_path / "10.note"
    note.write_text(signed.stdout, encoding="utf-8")
    verify = run("audit", "verify", "--checkpoint", str(note), "--public-key", str(pem))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "matches 1 signed checkpoint" in verify.stdout


# -- export ----------------------------------------------------------------------------------------


@pytest.fixture
def mixed(data: Path) -> Path:
    """Events of two counties' users and patients, besides the ten of `data`."""
    archive = Archive(Settings(data_dir=data))
    for county, patient in (("telemark", "T1"), ("buskerud", "B1"), ("telemark", "T2")):
        archive.audit.record(
            Event(
                EventType.INSTANCES_ACCESSED,
                "R",
                Actor(name=f"lege-{county}", kind="user", county=county, role="clinician"),
                patient_ids=(patient,),
                study_uids=("1.2.840.1",),
                object_count=1,
                counties=(county,),
            )
        )
    archive.close()
    return data


def audit_log_used(data: Path) -> list[AuditEvent]:
    return events(data, AuditQuery(event_id="110101", limit=100))


def test_export_csv_to_file_is_private_and_audited(cli: CliRunner, mixed: Path) -> None:
    target = mixed.parent / "export.csv"
    result = cli("audit", "export", "--format", "csv", "--output", str(target))
    assert result.code == 0, result.err
    assert target.stat().st_mode & 0o777 == 0o600
    with target.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["seq"]) for r in rows] == list(range(1, 15)), "oldest first, itself included"
    used = audit_log_used(mixed)
    assert len(used) == 1
    assert used[0].actor == f"cli:{getpass.getuser()}" and used[0].actor_kind == "system"
    assert used[0].details["use"] == "export csv"
    assert set(used[0].counties) == {"vestfold", "buskerud", "telemark"}
    assert rows[-1]["event_id"] == "110101"


def test_export_fhir_is_ndjson(cli: CliRunner, mixed: Path) -> None:
    result = cli("audit", "export", "--format", "fhir", "--county", "telemark")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    resources = [json.loads(line) for line in lines]
    assert len(resources) == 3, "telemark's two accesses, and this export of its events"
    assert all(r["resourceType"] == "AuditEvent" for r in resources)
    assert '"T1"' in lines[0] and '"T2"' in lines[1] and "export fhir" in lines[2]
    used = audit_log_used(mixed)
    assert used[0].query == "format=fhir county=telemark"
    assert used[0].counties == ("telemark", "vestfold")


def test_export_dicom_is_one_audit_message_per_line(cli: CliRunner, mixed: Path) -> None:
    result = cli("audit", "export", "--format", "dicom", "--patient", "B1")
    assert result.code == 0, result.err
    messages = [ET.fromstring(line) for line in result.out.splitlines()]
    assert len(messages) == 2, "the access to B1, and this export of B1's events"
    assert all(m.tag == "AuditMessage" for m in messages)
    assert "B1" in result.out
    assert audit_log_used(mixed)[0].patient_ids == ("B1",)


def test_export_time_bounds(cli: CliRunner, mixed: Path) -> None:
    everything = cli("audit", "export", "--format", "fhir", "--since", "2000-01-01")
    assert len(everything.out.splitlines()) == 14
    none_yet = cli("audit", "export", "--format", "fhir", "--since", "2999-01-01T00:00Z")
    assert none_yet.code == 0 and none_yet.out == ""
    none_before = cli("audit", "export", "--format", "csv", "--until", "2000-01-01")
    assert none_before.out.count("\n") == 1, "the header only"
    bad = cli("audit", "export", "--format", "csv", "--since", "last tuesday")
    assert bad.code == 2 and "must be YYYY-MM-DD" in bad.err
    unknown = cli("audit", "export", "--format", "xml")
    assert unknown.code == 2 and "invalid choice" in unknown.err


# -- accounts --------------------------------------------------------------------------------------


def test_user_add_list_disable(cli: CliRunner) -> None:
    added = cli(
        "user",
        "add",
        "tannlege1",
        "--role",
        "clinician",
        "--county",
        "telemark",
        "--display-name",
        "Kari Nordmann",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert added.code == 0, added.err
    service = cli(
        "user",
        "add",
        "ris",
        "--role",
        "service",
        "--county",
        "buskerud",
        "--scopes",
        "search,retrieve",
        "--no-password",
        "--hpr-number",
        "1234567",
    )
    assert service.code == 0, service.err
    auditor = cli(
        "user", "add", "ombud", "--role", "joint-auditor", "--county", "vestfold", "--no-password"
    )
    assert auditor.code == 2
    assert auditor.err.strip() == (
        "arkiv: an account without a password needs an HPR number or national ID"
    )

    listed = cli("user", "list")
    assert listed.code == 0
    assert "argon2" not in listed.out and "$" not in listed.out
    lines = {line.split()[0]: line.split() for line in listed.out.splitlines()[1:]}
    assert lines["tannlege1"][:5] == ["tannlege1", "clinician", "telemark", "active", "password"]
    assert lines["ris"][:7] == [
        "ris",
        "service",
        "buskerud",
        "active",
        "oidc-only",
        "1234567",
        "retrieve,search",
    ]
    assert "Kari Nordmann" in listed.out

    disabled = cli("user", "disable", "tannlege1")
    assert disabled.code == 0
    assert cli("user", "list").out.split("\n")[2].split()[3] == "disabled"
    alert = events(cli.data, AuditQuery(event_id="110113"))
    assert alert[0].details == {"subtype": "user disabled", "user": "tannlege1"}
    assert alert[0].actor.startswith("cli:")
    unknown = cli("user", "disable", "nobody")
    assert unknown.code == 2 and "no user 'nobody'" in unknown.err


def test_user_add_usage_errors(cli: CliRunner) -> None:
    role = cli("user", "add", "x", "--role", "superuser", "--county", "vestfold")
    assert role.code == 2 and "invalid choice" in role.err
    scopes = cli(
        "user", "add", "x", "--role", "service", "--county", "vestfold", "--scopes", "delete"
    )
    assert scopes.code == 2 and "unknown scopes delete" in scopes.err
    both = cli(
        "user",
        "add",
        "x",
        "--role",
        "admin",
        "--county",
        "vestfold",
        "--password-stdin",
        "--no-password",
    )
    assert both.code == 2 and "not allowed with" in both.err
    short = cli(
        "user",
        "add",
        "x",
        "--role",
        "admin",
        "--county",
        "vestfold",
        "--password-stdin",
        stdin="kort\n",
    )
    assert short.code == 2 and "at least 10 characters" in short.err


def test_export_finds_a_time_range_inside_a_long_log(cli: CliRunner) -> None:
    """The start is found by binary search over the log; events either side stay out."""
    tamper(
        cli.data,
        "UPDATE audit_events SET recorded_at = '2020-03-01T10:00:00.000000Z' WHERE seq <= 4",
        "UPDATE audit_events SET recorded_at = '2021-06-01T10:00:00.000000Z' "
        "WHERE seq BETWEEN 5 AND 7",
        "UPDATE audit_events SET recorded_at = '2022-09-01T10:00:00.000000Z' WHERE seq >= 8",
    )
    result = cli(
        "audit", "export", "--format", "csv", "--since", "2021-01-01", "--until", "2021-12-31"
    )
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out, newline="")))
    assert [int(r["seq"]) for r in rows] == [5, 6, 7]
    instant = cli("audit", "export", "--format", "csv", "--since", "2022-09-01T10:00Z")
    assert [int(r["seq"]) for r in csv.DictReader(io.StringIO(instant.out, newline=""))] == [
        8,
        9,
        10,
        11,
        12,
    ], "the two exports' own events are recorded now, after 2022"
