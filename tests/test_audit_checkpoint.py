"""Signed checkpoints of the audit log: the format (C2SP signed note, checked against the Go
reference implementation's vector), the signing key, and what a checkpoint catches that the chain
alone cannot — an intruder with write access to the database file who rewrites the chain.

The intruder is simulated as in test_audit.py: the append-only triggers are dropped with sqlite3
and rows changed directly; here they also recompute every hash and move the head row.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from arkiv.audit import Actor, AuditLog, Event, EventType, chain_hash
from arkiv.audit_checkpoint import (
    CHECKPOINT_DIR,
    BrokenLog,
    CheckpointScheduler,
    CheckpointSigner,
    InvalidCheckpoint,
    NoteVerifier,
    SigningKeyError,
    format_note,
    key_id,
    load_or_create_signing_key,
    log_origin,
    open_note,
    public_key_pem,
    sign_note,
    verifier_key,
    verify_against_checkpoint,
    verify_note,
    verify_stored_checkpoints,
)
from arkiv.config import Settings
from arkiv.services import Archive
from storage.index import CHAIN_GENESIS, Index

ACTOR = Actor(
    name="tannlege1", kind="user", county="vestfold", address="10.0.0.7", role="clinician"
)

# golang.org/x/mod/sumdb/note, note_test.go and the package example: an independent implementation.
GO_SIGNER_SEED = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXg"
    "KvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def record(archive: Archive, count: int, start: int = 0) -> None:
    for number in range(start, start + count):
        archive.audit.record(
            Event(
                EventType.INSTANCES_ACCESSED,
                "R",
                ACTOR,
                patient_ids=(f"P{number}",),
                study_uids=(f"1.2.3.{number}",),
                object_count=1,
                details={"purpose": "rendered", "n": number},
            )
        )


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    """An archive whose log holds ten events."""
    instance = Archive(Settings(data_dir=tmp_path / "data"))
    record(instance, 10)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def signer(archive: Archive) -> CheckpointSigner:
    return CheckpointSigner(archive.index, archive.settings)


def tamper(data: Path, *statements: str) -> None:
    """An intruder with write access to the database file: every guard dropped, rows changed."""
    db = sqlite3.connect(data / "index.sqlite3")
    triggers = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
    for (name,) in triggers:
        db.execute(f'DROP TRIGGER "{name}"')
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def rewrite_chain(data: Path) -> None:
    """...who then recomputes every link and hash and moves the head, so the chain verifies."""
    index = Index(f"sqlite:///{data / 'index.sqlite3'}")
    try:
        events = list(index.iter_audit_events())
    finally:
        index.close()
    db = sqlite3.connect(data / "index.sqlite3")
    prev = CHAIN_GENESIS
    for expected, event in enumerate(events, start=1):
        assert event.seq == expected, "renumber before rewriting"
        digest = chain_hash(prev, event.seq, event)
        db.execute(
            "UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?",
            (prev, digest, event.seq),
        )
        prev = digest
    db.execute("UPDATE audit_chain_head SET seq = ?, hash = ?", (len(events), prev))
    db.commit()
    db.close()


def data_dir(archive: Archive) -> Path:
    return archive.settings.data_dir


# -- the format ------------------------------------------------------------------------------------


def test_notes_match_the_go_reference_implementation() -> None:
    """Byte for byte the note Go's sumdb/note makes with the same key: any signed-note tool
    verifies our checkpoints, and we verify theirs."""
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(GO_SIGNER_SEED)[1:])
    assert sign_note(key, "PeterNeumann", GO_TEXT) == GO_NOTE
    assert verifier_key("PeterNeumann", key.public_key()) == GO_VERIFIER_KEY
    assert verify_note(GO_NOTE, NoteVerifier.parse(GO_VERIFIER_KEY)) == (GO_TEXT, "PeterNeumann")


def test_checkpoint_note_layout() -> None:
    key = Ed25519PrivateKey.generate()
    head = "ab" * 32
    note = format_note(key, "arkiv.arkiv/audit", 42, head, "2026-11-26T10:00:00.000000Z")
    body, signature = note.split("\n\n")
    assert body.split("\n") == [
        "arkiv.arkiv/audit",
        "42",
        base64.b64encode(bytes.fromhex(head)).decode(),
        "signed-at 2026-11-26T10:00:00.000000Z",
    ]
    assert signature.startswith("— arkiv.arkiv/audit ") and signature.endswith("\n")
    blob = base64.b64decode(signature.split(" ")[2])
    assert len(blob) == 4 + 64
    opened = open_note(note, NoteVerifier(key.public_key()))
    assert (opened.origin, opened.size, opened.head_hash) == ("arkiv.arkiv/audit", 42, head)
    assert opened.signed_at == "2026-11-26T10:00:00.000000Z"


def test_origin_is_derived_from_the_ae_title() -> None:
    assert log_origin(Settings()) == "arkiv.arkiv/audit"
    assert log_origin(Settings(ae_title="TANN VEST+1")) == "arkiv.tann-vest-1/audit"


# -- the key ---------------------------------------------------------------------------------------


def test_key_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "audit-signing-key.pem"
    first = load_or_create_signing_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    again = load_or_create_signing_key(path)
    assert key_id(again.public_key()) == key_id(first.public_key())
    assert len(key_id(first.public_key())) == 16
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "audit-signing-key.pem"
    start = threading.Barrier(8)
    ids: list[str] = []

    def create() -> None:
        start.wait()
        ids.append(key_id(load_or_create_signing_key(path).public_key()))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 8 and len(set(ids)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_key_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("not a key\n")
    with pytest.raises(SigningKeyError, match="not an unencrypted PEM private key"):
        load_or_create_signing_key(path)
    with pytest.raises(SigningKeyError, match="neither PEM nor"):
        NoteVerifier.parse("not a key")


# -- signing ---------------------------------------------------------------------------------------


def test_sign_stores_the_checkpoint_and_writes_a_note_file(
    archive: Archive, signer: CheckpointSigner
) -> None:
    checkpoint = signer.sign_now()
    assert checkpoint is not None
    head_seq, head_hash = archive.index.audit_head()
    assert (checkpoint.seq, checkpoint.head_hash, checkpoint.key_id) == (
        10,
        head_hash,
        signer.key_id,
    )
    assert head_seq == 10
    assert archive.index.checkpoints() == [checkpoint]
    note_file = data_dir(archive) / CHECKPOINT_DIR / "10.note"
    assert note_file.read_text(encoding="utf-8") == checkpoint.note
    assert archive.settings.signing_key_path.stat().st_mode & 0o777 == 0o600

    assert signer.sign_now() is None, "nothing new to sign"
    record(archive, 1, start=10)
    later = signer.sign_now()
    assert later is not None and later.seq == 11
    assert [c.seq for c in archive.index.checkpoints()] == [10, 11]

    report = verify_against_checkpoint(archive.index, checkpoint.note, signer.public_key)
    assert report.ok and report.checked == 10


def test_an_empty_log_is_not_signed(tmp_path: Path) -> None:
    archive = Archive(Settings(data_dir=tmp_path / "data"))
    try:
        assert CheckpointSigner(archive.index, archive.settings).sign_now() is None
        assert archive.index.checkpoints() == []
    finally:
        archive.close()


def test_a_broken_head_is_never_signed(archive: Archive, signer: CheckpointSigner) -> None:
    tamper(data_dir(archive), "UPDATE audit_events SET actor = 'someone' WHERE seq = 4")
    with pytest.raises(BrokenLog, match="event 4 was altered"):
        signer.sign_now()
    assert archive.index.checkpoints() == []


def test_a_rewritten_log_is_never_signed_again(archive: Archive, signer: CheckpointSigner) -> None:
    """Signing replays from the last checkpoint, so a chain rewritten since cannot be extended."""
    assert signer.sign_now() is not None
    tamper(data_dir(archive), "UPDATE audit_events SET actor = 'someone' WHERE seq = 4")
    rewrite_chain(data_dir(archive))
    fresh = CheckpointSigner(archive.index, archive.settings)
    with pytest.raises(BrokenLog, match="differs from the one signed"):
        fresh.sign_now()
    record(archive, 1, start=10)
    for candidate in (signer, CheckpointSigner(archive.index, archive.settings)):
        with pytest.raises(BrokenLog, match="event 11 does not link to event 10"):
            candidate.sign_now()


# -- what a checkpoint catches ---------------------------------------------------------------------


def test_edit_is_caught(archive: Archive, signer: CheckpointSigner) -> None:
    checkpoint = signer.sign_now()
    assert checkpoint is not None
    tamper(data_dir(archive), "UPDATE audit_events SET actor = 'someone' WHERE seq = 4")
    report = verify_against_checkpoint(archive.index, checkpoint.note, signer.public_key)
    assert not report.ok and report.broken_at == 4
    assert "altered" in report.reason


def test_edit_with_recomputed_chain_is_caught(archive: Archive, signer: CheckpointSigner) -> None:
    checkpoint = signer.sign_now()
    assert checkpoint is not None
    tamper(data_dir(archive), "UPDATE audit_events SET actor = 'someone' WHERE seq = 4")
    rewrite_chain(data_dir(archive))
    assert archive.audit.verify().ok, "the chain alone no longer shows it"
    report = verify_against_checkpoint(archive.index, checkpoint.note, signer.public_key)
    assert not report.ok and report.broken_at == 10
    assert "events 1 to 10 were edited, deleted or reordered" in report.reason


def test_deletion_with_renumbered_and_recomputed_chain_is_caught(
    archive: Archive, signer: CheckpointSigner
) -> None:
    checkpoint = signer.sign_now()
    assert checkpoint is not None
    tamper(
        data_dir(archive),
        "DELETE FROM audit_patients WHERE seq = 5",
        "DELETE FROM audit_counties WHERE seq = 5",
        "DELETE FROM audit_events WHERE seq = 5",
        *[f"UPDATE audit_events SET seq = {n - 1} WHERE seq = {n}" for n in range(6, 11)],
    )
    rewrite_chain(data_dir(archive))
    assert archive.audit.verify().ok
    report = verify_against_checkpoint(archive.index, checkpoint.note, signer.public_key)
    assert not report.ok and report.broken_at == 10
    assert "the log ends at event 9 but a signed checkpoint covers 10 events" in report.reason


def test_reorder_with_recomputed_chain_is_caught(
    archive: Archive, signer: CheckpointSigner
) -> None:
    checkpoint = signer.sign_now()
    assert checkpoint is not None
    tamper(
        data_dir(archive),
        "UPDATE audit_events SET seq = -1 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 6",
        "UPDATE audit_events SET seq = 6 WHERE seq = -1",
    )
    rewrite_chain(data_dir(archive))
    assert archive.audit.verify().ok
    report = verify_against_checkpoint(archive.index, checkpoint.note, signer.public_key)
    assert not report.ok and report.broken_at == 10


def test_truncation_with_rewritten_head_and_recomputed_chain_is_caught(
    archive: Archive, signer: CheckpointSigner
) -> None:
    """The case the chain cannot catch: the last events deleted, an earlier one edited, every
    hash recomputed and the head row moved back. Plain verification passes; the checkpoint
    does not."""
    checkpoint = signer.sign_now()
    assert checkpoint is not None
    tamper(
        data_dir(archive),
        "DELETE FROM audit_patients WHERE seq >= 9",
        "DELETE FROM audit_counties WHERE seq >= 9",
        "DELETE FROM audit_events WHERE seq >= 9",
        "UPDATE audit_events SET source_address = '192.0.2.1' WHERE seq = 3",
    )
    rewrite_chain(data_dir(archive))
    plain = AuditLog(archive.index).verify()
    assert plain.ok and plain.checked == 8 and plain.head_seq == 8
    report = verify_against_checkpoint(archive.index, checkpoint.note, signer.public_key)
    assert not report.ok and report.broken_at == 9
    assert "ends at event 8 but a signed checkpoint covers 10 events" in report.reason
    whole = verify_stored_checkpoints(archive.index, signer.verifier)
    assert not whole.ok and whole.broken_at == 9
    with pytest.raises(BrokenLog, match="checkpoint covers 10 events"):
        signer.sign_now()


def test_several_checkpoints_narrow_down_where_the_log_was_rewritten(
    archive: Archive, signer: CheckpointSigner
) -> None:
    assert signer.sign_now() is not None
    record(archive, 5, start=10)
    assert signer.sign_now() is not None
    tamper(data_dir(archive), "UPDATE audit_events SET query = 'x' WHERE seq = 12")
    rewrite_chain(data_dir(archive))
    report = verify_stored_checkpoints(archive.index, signer.verifier)
    assert not report.ok and report.broken_at == 15
    assert "events 11 to 15" in report.reason
    assert [n.size for n in report.checkpoints] == [10, 15]


def test_a_log_that_grew_after_the_checkpoint_still_matches(
    archive: Archive, signer: CheckpointSigner
) -> None:
    checkpoint = signer.sign_now()
    assert checkpoint is not None
    record(archive, 3, start=10)
    report = verify_against_checkpoint(archive.index, checkpoint.note, signer.public_key)
    assert report.ok and report.checked == 10 and report.head_seq == 13
    whole = verify_against_checkpoint(
        archive.index, checkpoint.note, signer.public_key, whole_log=True
    )
    assert whole.ok and whole.checked == 13


def test_altered_stored_checkpoint_is_reported(archive: Archive, signer: CheckpointSigner) -> None:
    checkpoint = signer.sign_now()
    assert checkpoint is not None
    altered = checkpoint.note.replace("\n10\n", "\n9\n")
    tamper(data_dir(archive), f"UPDATE audit_checkpoints SET note = '{altered}' WHERE seq = 10")
    report = verify_stored_checkpoints(archive.index, signer.verifier)
    assert not report.ok and "size 10 does not verify" in report.reason


# -- what a checkpoint refuses ---------------------------------------------------------------------


def test_wrong_public_key_is_rejected(archive: Archive, signer: CheckpointSigner) -> None:
    checkpoint = signer.sign_now()
    assert checkpoint is not None
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(InvalidCheckpoint, match="not signed by this public key"):
        verify_against_checkpoint(archive.index, checkpoint.note, other)
    pem = NoteVerifier.parse(public_key_pem(signer.public_key))
    assert verify_against_checkpoint(archive.index, checkpoint.note, pem).ok
    vkey = NoteVerifier.parse(signer.verifier_key)
    assert verify_against_checkpoint(archive.index, checkpoint.note, vkey).ok
    with pytest.raises(InvalidCheckpoint, match="not signed by this public key"):
        verify_against_checkpoint(archive.index, checkpoint.note, replace(vkey, name="other"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda note: note.replace("\n10\n", "\n11\n"), "does not verify: the note was altered"),
        (lambda note: note.replace("signed-at 2", "signed-at 1"), "note was altered"),
        (lambda note: note.replace("\n", "\r\n"), "carriage returns"),
        (lambda note: note[:-1], "does not end with a newline"),
        (lambda note: note.replace("\n\n", "\n"), "no blank line"),
        (lambda note: note.replace("— ", "- "), "not a signature line"),
    ],
)
def test_altered_note_is_rejected(
    archive: Archive,
    signer: CheckpointSigner,
    change: Callable[[str], str],
    message: str,
) -> None:
    checkpoint = signer.sign_now()
    assert checkpoint is not None
    with pytest.raises(InvalidCheckpoint, match=message):
        verify_against_checkpoint(archive.index, change(checkpoint.note), signer.public_key)


def test_cosignatures_by_other_keys_are_ignored(archive: Archive, signer: CheckpointSigner) -> None:
    """signed-note: a witness may add its signature line; the log's own must still verify."""
    checkpoint = signer.sign_now()
    assert checkpoint is not None
    text, _ = verify_note(checkpoint.note, signer.verifier)
    witness = sign_note(Ed25519PrivateKey.generate(), "witness.example/w1", text)
    cosigned = checkpoint.note + witness.split("\n\n")[-1]
    assert verify_against_checkpoint(archive.index, cosigned, signer.public_key).ok


# -- the scheduler ---------------------------------------------------------------------------------


def test_scheduler_signs_periodically_and_once_more_at_stop(
    archive: Archive, signer: CheckpointSigner
) -> None:
    scheduler = CheckpointScheduler(signer, minutes=0.001)  # every 60 ms
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        number = 10
        while len(archive.index.checkpoints()) < 4:
            assert time.monotonic() < deadline, "the scheduler did not sign periodically"
            record(archive, 1, start=number)
            number += 1
            time.sleep(0.03)
        record(archive, 1, start=number)
    finally:
        started = time.monotonic()
        scheduler.stop()
        stopped_in = time.monotonic() - started
    assert stopped_in < 2
    head_seq, head_hash = archive.index.audit_head()
    final = archive.index.checkpoints()[-1]
    assert (final.seq, final.head_hash) == (head_seq, head_hash), "stop signs the last head"
    assert scheduler.failures == 0
    assert verify_stored_checkpoints(archive.index, signer.verifier).ok


def test_scheduler_stops_promptly_with_a_long_interval(signer: CheckpointSigner) -> None:
    scheduler = CheckpointScheduler(signer, minutes=60)
    scheduler.start()
    time.sleep(0.2)
    started = time.monotonic()
    scheduler.stop()
    assert time.monotonic() - started < 2
    assert signer.sign_now() is None, "the start signed the head already"


def test_scheduler_keeps_going_when_the_log_is_broken(
    archive: Archive, signer: CheckpointSigner
) -> None:
    tamper(data_dir(archive), "UPDATE audit_events SET actor = 'someone' WHERE seq = 4")
    scheduler = CheckpointScheduler(signer, minutes=0.001)
    scheduler.start()
    time.sleep(0.3)
    scheduler.stop()
    assert scheduler.failures >= 2
    assert archive.index.checkpoints() == []


def test_note_files_are_written_atomically(archive: Archive, signer: CheckpointSigner) -> None:
    assert signer.sign_now() is not None
    folder = data_dir(archive) / CHECKPOINT_DIR
    assert [p.name for p in folder.iterdir()] == ["10.note"]
    assert os.stat(folder / "10.note").st_size > 0
