"""Signed checkpoints of the audit log: proof, kept off the machine, of how far the log reached.

The hash chain (`arkiv.audit`) shows any edit, deletion or reordering — unless the intruder
rewrites everything after the change *and* the head row, which someone with write access to the
database file can do. A checkpoint closes that gap: every so often the archive signs the chain's
size and head hash with an Ed25519 key and copies the statement out of the database. Later, the log
as stored must verify from the first event through event `size`, and event `size` must carry the
signed hash; a log that was rewritten or cut short since cannot meet both, because recomputing the
hashes changes the head, and forging a new statement needs the private key.

Format: a C2SP signed note (https://c2sp.org/signed-note) shaped as a tlog checkpoint
(https://c2sp.org/tlog-checkpoint), so any signed-note verifier (Go's `golang.org/x/mod/sumdb/note`,
the transparency-dev tools) can check the signature with the verifier key `arkiv audit public-key
--format vkey` prints::

    arkiv.arkiv/audit                          origin: "arkiv.<AE title, lower case>/audit"
    1234                                       size: the chain's last sequence number n
    q1Zs…=                                     base64 of event n's SHA-256 chain hash (32 bytes)
    signed-at 2026-11-26T10:00:00.000000Z      extension line: when it was signed (UTC)

    — arkiv.arkiv/audit <base64(4-byte key ID || 64-byte Ed25519 signature)>

The third line is the head of a *hash chain*, not the root of an RFC 6962 Merkle tree: the format
is the C2SP one, but consistency between two checkpoints is shown by replaying the chain, not by a
consistency proof, so a standard tlog witness cannot cosign these. The origin and key name (the
same) are derived from the AE title once; verification does not pin them, the key decides.

Two key identifiers exist and both are documented here because both appear:

- the *key ID* in the signature line is the C2SP one, SHA-256(key name || 0x0A || 0x01 || public
  key)[:4], which depends on the name;
- `key_id` stored with each checkpoint in the index is the first 8 bytes (16 hex digits) of
  SHA-256 of the raw 32-byte public key: it names the key itself, whatever the AE title was.

The private key lives in `settings.signing_key_path` (PEM PKCS#8, mode 0600), created on first use.
Each checkpoint is kept in the index (insert-only table) and written to
`<data_dir>/audit-checkpoints/<size>.note` for the operator to ship off the machine: copies in the
database are only as trustworthy as the database.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from arkiv.atomic_file import fsync_directory, write_atomically
from arkiv.audit import AuditLog, VerifyReport
from arkiv.clock import now_iso
from arkiv.config import Settings
from storage.index import CHAIN_GENESIS, Index
from storage.records import Checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "audit-checkpoints"
"""Under the data directory: one `<size>.note` file per checkpoint, for shipping off the box."""

ED25519_SIGNATURE_TYPE = 0x01
"""The C2SP signed-note signature type byte of Ed25519."""

_SIGNATURE_PREFIX = "— "  # em dash, space
_TIME_PREFIX = "signed-at "
_SIZE = re.compile(r"0|[1-9][0-9]*")
_MAX_NOTE_CHARS = 64 * 1024


class CheckpointError(RuntimeError):
    """Something about checkpoints went wrong; the message says what, in one line."""


class InvalidCheckpoint(CheckpointError):
    """A note is malformed, altered, or not signed by the key it is checked with."""


class SigningKeyError(CheckpointError):
    """A signing or verifying key cannot be read or is not an Ed25519 key."""


class BrokenLog(CheckpointError):
    """The log does not verify up to its head: the archive refuses to sign such a head."""

    def __init__(self, message: str, report: VerifyReport | None = None) -> None:
        super().__init__(message)
        self.report = report


# -- keys ------------------------------------------------------------------------------------------


def log_origin(settings: Settings) -> str:
    """The checkpoint origin and key name: a schema-less URL without spaces or plus signs."""
    name = re.sub(r"[^a-z0-9.-]+", "-", settings.ae_title.strip().lower()).strip("-.")
    return f"arkiv.{name or 'arkiv'}/audit"


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """The id stored with each checkpoint: SHA-256 of the raw public key, first 8 bytes, hex."""
    return hashlib.sha256(raw_public_key(public_key)).digest()[:8].hex()


def note_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The C2SP key ID that starts every signature: SHA-256(name || LF || 0x01 || key)[:4]."""
    material = name.encode() + b"\n" + bytes([ED25519_SIGNATURE_TYPE]) + raw_public_key(public_key)
    return hashlib.sha256(material).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The one-line verifier key of signed-note tools: `name+keyid+base64(0x01 || key)`."""
    blob = bytes([ED25519_SIGNATURE_TYPE]) + raw_public_key(public_key)
    return f"{name}+{note_key_id(name, public_key).hex()}+{base64.b64encode(blob).decode()}"


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def load_signing_key(path: Path) -> Ed25519PrivateKey | None:
    """The private key at `path`, or None when there is none yet (never creates one)."""
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SigningKeyError(f"cannot read the audit signing key {path}: {exc}") from exc
    if mode & 0o077:
        log.warning("audit signing key %s can be read by others; chmod 600 it", path)
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(
            f"{path} is not an unencrypted PEM private key ({exc.__class__.__name__})"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}; audit signing needs Ed25519")
    return key


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The key at `path`, created (PKCS#8 PEM, mode 0600) if it does not exist yet.

    The new key is written whole to a private temporary file and then hard-linked into place,
    which fails if the name exists: of two processes starting at once, exactly one key wins, and
    nobody ever reads a half-written file. Both then use the winner's key.
    """
    existing = load_signing_key(path)
    if existing is not None:
        return existing
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
        _create_exclusively(path, pem)
    except OSError as exc:
        raise SigningKeyError(f"cannot create the audit signing key {path}: {exc}") from exc
    key = load_signing_key(path)
    if key is None:
        raise SigningKeyError(f"the audit signing key {path} disappeared while it was created")
    return key


def _create_exclusively(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return  # another process created it first; theirs is the key
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            _create_without_link(path, data)  # a file system without hard links
        log.info("created the audit signing key %s", path)
        fsync_directory(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def _create_without_link(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


@dataclass(frozen=True)
class NoteVerifier:
    """A public key to check notes with, and optionally the key name it must sign under."""

    public_key: Ed25519PublicKey
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> NoteVerifier:
        """A PEM public key (or the PEM private key file itself), or a signed-note verifier key
        line `name+keyid+base64`, as `arkiv audit public-key` prints them."""
        text = text.strip()
        if text.startswith("-----BEGIN"):
            try:
                if "PRIVATE KEY" in text.split("\n", 1)[0]:
                    loaded: object = load_pem_private_key(text.encode(), password=None)
                else:
                    loaded = load_pem_public_key(text.encode())
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise SigningKeyError("the public key is not a readable PEM key") from None
            if isinstance(loaded, Ed25519PrivateKey):
                loaded = loaded.public_key()
            if not isinstance(loaded, Ed25519PublicKey):
                raise SigningKeyError("the public key is not an Ed25519 key")
            return cls(loaded)
        parts = text.split("+", 2)
        if len(parts) != 3 or not parts[0]:
            raise SigningKeyError("the public key is neither PEM nor a `name+keyid+base64` line")
        name, hex_id, encoded = parts
        try:
            blob = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise SigningKeyError("the verifier key's key is not base64") from None
        if len(blob) != 33 or blob[0] != ED25519_SIGNATURE_TYPE:
            raise SigningKeyError("the verifier key is not an Ed25519 key (type 0x01, 32 bytes)")
        public_key = Ed25519PublicKey.from_public_bytes(blob[1:])
        if note_key_id(name, public_key).hex() != hex_id.lower():
            raise SigningKeyError("the verifier key's key ID does not match its name and key")
        return cls(public_key, name)


# -- notes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointNote:
    """A checkpoint whose signature has been verified: what the archive said about its log."""

    origin: str
    size: int
    head_hash: str
    """Hex, as in the index."""
    signed_at: str
    """From the `signed-at` extension line; empty if the note has none."""
    key_name: str
    text: str
    """The whole signed note."""


def sign_note(private_key: Ed25519PrivateKey, key_name: str, text: str) -> str:
    """A signed note: the text, a blank line, and one Ed25519 signature line by `key_name`."""
    if not text.endswith("\n") or not key_name or " " in key_name or "+" in key_name:
        raise ValueError("note text ends with a newline; key names have no spaces or plus signs")
    key_hint = note_key_id(key_name, private_key.public_key())
    signature = private_key.sign(text.encode("utf-8"))
    blob = base64.b64encode(key_hint + signature).decode()
    return f"{text}\n{_SIGNATURE_PREFIX}{key_name} {blob}\n"


def format_note(
    private_key: Ed25519PrivateKey, origin: str, size: int, head_hash: str, signed_at: str
) -> str:
    """A signed checkpoint note; the key name is the origin, as tlog-checkpoint recommends."""
    digest = bytes.fromhex(head_hash)
    if len(digest) != 32:
        raise ValueError("a head hash is 32 bytes (64 hex digits)")
    text = f"{origin}\n{size}\n{base64.b64encode(digest).decode()}\n{_TIME_PREFIX}{signed_at}\n"
    return sign_note(private_key, origin, text)


def open_note(note: str, verifier: NoteVerifier) -> CheckpointNote:
    """Check a checkpoint note's signature with `verifier` and read the checkpoint it carries.
    Raises InvalidCheckpoint when it is malformed, altered or not signed by this key."""
    text, key_name = verify_note(note, verifier)
    return _checkpoint_body(text, key_name, note)


def verify_note(note: str, verifier: NoteVerifier) -> tuple[str, str]:
    """The text of a signed note and the name of the key whose signature on it verified.

    Signatures by other keys are ignored, as signed-note requires (a witness may have cosigned);
    one by this key must be present and must verify.
    """
    text, signatures = _split_note(note)
    names: list[str] = []
    for line in signatures:
        name, blob = _signature(line)
        names.append(name)
        if verifier.name is not None and name != verifier.name:
            continue
        if blob[:4] != note_key_id(name, verifier.public_key):
            continue
        if len(blob) != 4 + 64:
            raise InvalidCheckpoint(f"the signature by {name} is not an Ed25519 signature")
        try:
            verifier.public_key.verify(blob[4:], text.encode("utf-8"))
        except InvalidSignature:
            raise InvalidCheckpoint(
                f"the signature by {name} does not verify: the note was altered after signing"
            ) from None
        return text, name
    raise InvalidCheckpoint(
        f"the checkpoint is not signed by this public key (key {key_id(verifier.public_key)}); "
        f"it carries signatures by {', '.join(names)} made with another key"
    )


def _split_note(note: str) -> tuple[str, list[str]]:
    if len(note) > _MAX_NOTE_CHARS:
        raise InvalidCheckpoint("the note is too long to be a checkpoint")
    if "\r" in note:
        raise InvalidCheckpoint(
            "the note contains carriage returns (was it converted to CRLF line ends?)"
        )
    if any(ord(ch) < 0x20 and ch != "\n" for ch in note):
        raise InvalidCheckpoint("the note contains control characters")
    if not note.endswith("\n"):
        raise InvalidCheckpoint("the note does not end with a newline (truncated?)")
    split = note.rfind("\n\n")
    if split < 0:
        raise InvalidCheckpoint("the note has no blank line before its signatures")
    signatures = note[split + 2 :].split("\n")[:-1]
    if not signatures:
        raise InvalidCheckpoint("the note has no signature lines")
    return note[: split + 1], signatures


def _signature(line: str) -> tuple[str, bytes]:
    if not line.startswith(_SIGNATURE_PREFIX):
        raise InvalidCheckpoint(f"not a signature line: {line[:60]!r}")
    parts = line[len(_SIGNATURE_PREFIX) :].split(" ")
    if len(parts) != 2 or not parts[0]:
        raise InvalidCheckpoint(f"not a signature line: {line[:60]!r}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        raise InvalidCheckpoint(f"the signature by {parts[0]} is not base64") from None
    if len(blob) < 5:
        raise InvalidCheckpoint(f"the signature by {parts[0]} is too short")
    return parts[0], blob


def _checkpoint_body(text: str, key_name: str, note: str) -> CheckpointNote:
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not lines[0] or any(not line for line in lines[3:]):
        raise InvalidCheckpoint("the note is not a checkpoint (origin, size, hash lines)")
    if not _SIZE.fullmatch(lines[1]):
        raise InvalidCheckpoint(f"the checkpoint size {lines[1][:30]!r} is not a number")
    try:
        digest = base64.b64decode(lines[2], validate=True)
    except binascii.Error:
        digest = b""
    if len(digest) != 32:
        raise InvalidCheckpoint("the checkpoint hash is not a base64 SHA-256 hash")
    signed_at = next((x[len(_TIME_PREFIX) :] for x in lines[3:] if x.startswith(_TIME_PREFIX)), "")
    return CheckpointNote(lines[0], int(lines[1]), digest.hex(), signed_at, key_name, note)


# -- signing ---------------------------------------------------------------------------------------


class CheckpointSigner:
    """Signs the chain head when it has moved, after checking that the log leading to it holds.

    The log is never signed in a state that does not verify: the first checkpoint a process makes
    replays the chain from the last checkpoint it can verify with its own key (or from the first
    event), later ones from the checkpoint before; and the head row must match event n itself.
    """

    def __init__(
        self, index: Index, settings: Settings, key: Ed25519PrivateKey | None = None
    ) -> None:
        self._index = index
        self._audit = AuditLog(index)
        self._key = (
            key if key is not None else load_or_create_signing_key(settings.signing_key_path)
        )
        self.public_key = self._key.public_key()
        self.origin = log_origin(settings)
        self.key_id = key_id(self.public_key)
        self.verifier = NoteVerifier(self.public_key)
        self.note_dir = settings.data_dir / CHECKPOINT_DIR
        self._verified: tuple[int, str] | None = None
        self._lock = threading.Lock()

    @property
    def verifier_key(self) -> str:
        return verifier_key(self.origin, self.public_key)

    def sign_now(self) -> Checkpoint | None:
        """Sign the current head if no checkpoint covers it yet; None when there was nothing new
        (or another process stored a checkpoint of the same size first). Raises BrokenLog."""
        with self._lock:
            return self._sign()

    def _sign(self) -> Checkpoint | None:
        head_seq, head_hash = self._index.audit_head()
        later = self._index.checkpoints(since_seq=max(head_seq - 1, 0))
        beyond = [c for c in later if c.seq > head_seq]
        if beyond:
            raise BrokenLog(
                f"the log's head is at event {head_seq} but a checkpoint covers {beyond[-1].seq} "
                "events (events were removed from the end)"
            )
        if later and later[0].head_hash != head_hash:
            raise BrokenLog(
                f"the log's head hash differs from the one signed at event {head_seq} "
                "(the log was rewritten)"
            )
        if head_seq == 0 or later:
            return None
        start = self._trusted_start()
        if start[0] > head_seq:
            raise BrokenLog(
                f"the log's head is at event {head_seq} but event {start[0]} was already signed"
            )
        report = self._audit.verify(until=head_seq, after=start)
        if not report.ok:
            raise BrokenLog(
                f"audit log broken at event {report.broken_at}: {report.reason}", report
            )
        event = self._index.audit_event_at(head_seq)
        if event is None or event.hash != head_hash:
            raise BrokenLog(f"the log's head row does not match event {head_seq}")
        self._verified = (head_seq, head_hash)
        signed_at = now_iso()
        note = format_note(self._key, self.origin, head_seq, head_hash, signed_at)
        checkpoint = Checkpoint(head_seq, head_hash, signed_at, self.key_id, note)
        with self._index.transaction() as tx:
            if not tx.add_checkpoint(checkpoint):
                return None
        self._write_note(checkpoint)
        log.info("audit checkpoint signed at event %d", head_seq)
        return checkpoint

    def _trusted_start(self) -> tuple[int, str]:
        """Where replay may begin: the last head this signer verified, else the newest stored
        checkpoint that verifies with this key, else the genesis."""
        if self._verified is not None:
            return self._verified
        for stored in reversed(self._index.checkpoints()):
            if stored.key_id != self.key_id:
                continue
            try:
                note = open_note(stored.note, self.verifier)
            except InvalidCheckpoint as exc:
                log.warning("stored audit checkpoint %d ignored: %s", stored.seq, exc)
                continue
            if (note.size, note.head_hash) == (stored.seq, stored.head_hash):
                return note.size, note.head_hash
        return 0, CHAIN_GENESIS

    def _write_note(self, checkpoint: Checkpoint) -> None:
        """A copy to ship off the machine; the index copy is the record, so a failure only warns."""
        try:
            self.note_dir.mkdir(parents=True, exist_ok=True)
            write_atomically(self.note_dir / f"{checkpoint.seq}.note", checkpoint.note)
        except OSError as exc:
            log.warning(
                "audit checkpoint %d not written to %s: %s", checkpoint.seq, self.note_dir, exc
            )


class CheckpointScheduler:
    """Signs a checkpoint when started, every `minutes`, and once more when stopped.

    Failures are logged and the next period tries again: a broken log is the operator's alarm,
    and the archive keeps serving (its chain still records everything appended).
    """

    def __init__(self, signer: CheckpointSigner, minutes: float) -> None:
        if minutes <= 0:
            raise ValueError("audit_checkpoint_minutes must be positive")
        self._signer = signer
        self._interval = minutes * 60.0
        self._stopping = threading.Event()
        self._final = True
        self._thread: threading.Thread | None = None
        self.failures = 0

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the checkpoint scheduler is running already")
        self._stopping.clear()
        self._final = True
        self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0, *, final: bool = True) -> None:
        """Wake the thread, let it sign the final checkpoint (unless `final` is False: another
        process has taken over the signing), and wait for it."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._final = final
        self._stopping.set()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("audit checkpoint thread still busy after %.0f s", timeout)

    def _run(self) -> None:
        self._sign()
        while not self._stopping.wait(self._interval):
            self._sign()
        if self._final:
            self._sign()

    def _sign(self) -> None:
        try:
            self._signer.sign_now()
        except BrokenLog as exc:
            self.failures += 1
            log.error("audit checkpoint NOT signed: %s", exc)
        except Exception:
            self.failures += 1
            log.exception("audit checkpoint failed")


# -- verifying -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointReport:
    """The log held against signed checkpoints: which ones, and how the walk went."""

    log: VerifyReport
    checkpoints: tuple[CheckpointNote, ...] = ()
    unchecked: int = 0
    """Stored checkpoints signed by keys not at hand, so not held against the log."""
    problem: str = ""
    """A stored checkpoint that does not verify or contradicts another (the index was altered)."""

    @property
    def ok(self) -> bool:
        return self.log.ok and not self.problem

    @property
    def checked(self) -> int:
        return self.log.checked

    @property
    def head_seq(self) -> int:
        return self.log.head_seq

    @property
    def broken_at(self) -> int | None:
        return self.log.broken_at

    @property
    def reason(self) -> str:
        return self.problem or self.log.reason


def verify_against_checkpoint(
    index: Index,
    note_text: str,
    public_key: Ed25519PublicKey | NoteVerifier,
    *,
    whole_log: bool = False,
) -> CheckpointReport:
    """Check the note's signature (InvalidCheckpoint if wrong key or altered), then that the log
    as stored extends it: the chain verifies from the first event through event n and event n
    carries the signed hash. With `whole_log`, the rest of the log and its head are checked too.
    """
    verifier = public_key if isinstance(public_key, NoteVerifier) else NoteVerifier(public_key)
    note = open_note(note_text, verifier)
    return verify_against_notes(index, [note], whole_log=whole_log)


def verify_against_notes(
    index: Index, notes: Iterable[CheckpointNote], *, whole_log: bool = True
) -> CheckpointReport:
    """One walk of the chain held against several verified checkpoints at once."""
    kept = tuple(sorted(notes, key=lambda n: n.size))
    anchors, problem = _anchors(kept)
    if problem:
        return CheckpointReport(VerifyReport(0, index.audit_head()[0]), kept, problem=problem)
    if kept and kept[0].size == 0 and kept[0].head_hash != CHAIN_GENESIS:
        problem = "a checkpoint of size 0 must carry the genesis hash"
    anchors.pop(0, None)
    until = None if whole_log or not kept else kept[-1].size
    report = AuditLog(index).verify(until, anchors=anchors)
    return CheckpointReport(report, kept, problem=problem)


def verify_stored_checkpoints(index: Index, verifier: NoteVerifier | None) -> CheckpointReport:
    """The whole log held against the checkpoints kept in the index that `verifier` signed.

    A stored checkpoint row of this key whose note does not verify, or whose row differs from its
    note, means the index was tampered with; rows of other keys are counted, not checked.
    """
    notes: list[CheckpointNote] = []
    unchecked = 0
    for stored in index.checkpoints():
        if verifier is None or stored.key_id != key_id(verifier.public_key):
            unchecked += 1
            continue
        try:
            note = open_note(stored.note, verifier)
        except InvalidCheckpoint as exc:
            return CheckpointReport(
                VerifyReport(0, index.audit_head()[0]),
                problem=f"the stored checkpoint of size {stored.seq} does not verify: {exc}",
            )
        if (note.size, note.head_hash) != (stored.seq, stored.head_hash):
            return CheckpointReport(
                VerifyReport(0, index.audit_head()[0]),
                problem=f"the stored checkpoint row of size {stored.seq} differs from its note",
            )
        notes.append(note)
    result = verify_against_notes(index, notes, whole_log=True)
    return CheckpointReport(result.log, result.checkpoints, unchecked, result.problem)


def _anchors(notes: Iterable[CheckpointNote]) -> tuple[dict[int, str], str]:
    anchors: dict[int, str] = {}
    for note in notes:
        known = anchors.setdefault(note.size, note.head_hash)
        if known != note.head_hash:
            return anchors, (
                f"two checkpoints signed for size {note.size} disagree: the log was forked"
            )
    return anchors, ""
