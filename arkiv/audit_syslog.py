"""Forwarding the audit log to an external audit record repository (IHE ATNA ITI-20).

Each event goes out as a DICOM PS3.15 AuditMessage (`arkiv.audit_export.dicom_audit_message`) in
an RFC 5424 syslog message, over mutually authenticated TLS with RFC 5425 octet-counting framing.

The archive's own audit table stays the primary, legally required copy; forwarding is a second
copy outside the reach of anyone who controls the archive's machines. So forwarding never blocks
or fails an action: a background thread follows the log. Its *cursor* (the sequence number and
hash of the last event the receiver took, in the index's `audit_forward_cursor` table) and the
insert-only audit table together are the spool: while the receiver is down nothing is lost, and
after reconnecting everything after the cursor is sent again, oldest first. Delivery is
at-least-once: an event can arrive twice after a failure, and its sequence number (carried in
the message as a ParticipantObject with ID type `seq`) lets the receiver recognise the repeat.

One process per index forwards at a time (`arkiv.audit_duties` holds a lease for that); since
the cursor is in the index, whichever node takes over continues where the last one stopped.
Archives from before the cursor moved into the index kept it in `audit-forward.cursor` in the
data directory: when the index has no cursor yet, the forwarder takes that file's position once,
says so in the log, and renames the file to `audit-forward.cursor.imported`.

"The receiver took it" is as strong as syslog over TLS allows, which has no acknowledgement of
its own (RELP would): after each batch the forwarder waits until the receiver's TCP stack has
acknowledged every byte and the connection is still healthy, and only then moves the cursor.
A receiver killed in the few milliseconds between acknowledging and reading would lose that
batch; a receiver that closes or resets the connection, refuses the certificate, or is down,
loses nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import random
import re
import select
import socket
import ssl
import struct
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from arkiv.audit_export import dicom_audit_message
from arkiv.clock import now_iso
from arkiv.config import ConfigError, Settings
from storage.index import Index
from storage.records import AuditEvent

__all__ = [
    "CURSOR_FILE",
    "CURSOR_NAME",
    "ForwarderState",
    "SyslogForwarder",
    "SyslogUnavailable",
    "syslog_frame",
    "tls_context",
]

log = logging.getLogger(__name__)

CURSOR_NAME = "syslog"
"""The forwarder's row in the index's `audit_forward_cursor` table."""
CURSOR_FILE = "audit-forward.cursor"
"""Where the cursor was kept, in the data directory, before it moved into the index."""
IMPORTED_SUFFIX = ".imported"
PRI = 85
"""Facility 10 (security/authorization, authpriv) × 8 + severity 5 (notice), as ITI-20 asks."""
MSGID = "IHE+RFC-3881"
APP_NAME = "arkiv"

_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")
_TCP_ESTABLISHED = 1
_TCP_CLOSE_WAIT = 8
_HEALTHY_TCP_STATES = frozenset({_TCP_ESTABLISHED, _TCP_CLOSE_WAIT})


def _header_field(value: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, bounded, or `-` if empty."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def syslog_frame(
    event: AuditEvent,
    source_id: str,
    hostname: str,
    *,
    app_name: str = APP_NAME,
    procid: str = "-",
) -> bytes:
    """One event as an octet-counted RFC 5425 frame: `MSG-LEN SP SYSLOG-MSG`.

    The message is `<85>1 TIMESTAMP HOSTNAME APP-NAME PROCID IHE+RFC-3881 - <?xml …AuditMessage…>`:
    no structured data, and no BOM before the UTF-8 XML (ITI-CP477 discourages it). The timestamp
    is the event's own time, so a resend carries the same time as the first copy.
    """
    timestamp = event.recorded_at if _TIMESTAMP.match(event.recorded_at) else "-"
    header = " ".join(
        (
            f"<{PRI}>1",
            timestamp,
            _header_field(hostname, 255),
            _header_field(app_name, 48),
            _header_field(procid, 128),
            MSGID,
            "-",
        )
    )
    message = f"{header} {dicom_audit_message(event, source_id)}".encode()
    return str(len(message)).encode("ascii") + b" " + message


class SyslogUnavailable(Exception):
    """The receiver could not be reached, refused us, or did not take the events; the message says
    which. Nothing after the cursor is lost: it is sent again on the next try."""


@dataclass(frozen=True)
class ForwarderState:
    """What monitoring needs: is the receiver reachable, and how far behind is it."""

    connected: bool
    last_forwarded_seq: int
    head_seq: int
    lag: int
    """Events written to the log but not yet taken by the receiver."""
    consecutive_failures: int
    last_error: str
    last_success_at: float | None
    """Wall-clock time (`time.time()`) of the last successful forwarding round."""


@dataclass(frozen=True)
class _Cursor:
    seq: int
    hash: str


_START = _Cursor(0, "")


class SyslogForwarder:
    """Follows the audit log and forwards every event to the configured syslog receiver.

    `start()` runs it in a background thread; `forward_pending()` does one round in the caller's
    thread (tests, and the final flush in `stop()`). Both may be used on one object: rounds never
    overlap. One forwarder per index at a time: two would both send everything and move the one
    cursor (`arkiv.audit_duties` runs it in one process only). The cursor is read from the index
    when the forwarder is made, so a forwarder made on another node continues from it.
    """

    def __init__(
        self,
        index: Index,
        settings: Settings,
        *,
        hostname: str | None = None,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 30.0,
        timeout_seconds: float = 10.0,
        settle_seconds: float = 0.3,
    ) -> None:
        if not settings.audit_syslog_host:
            raise ConfigError("audit_syslog_host is empty: audit forwarding is not configured")
        self._index = index
        self._settings = settings
        self._host = settings.audit_syslog_host
        self._port = settings.audit_syslog_port
        self._source_id = settings.ae_title
        self._hostname = hostname or socket.gethostname()
        self._procid = str(os.getpid())
        self._batch_size = max(1, batch_size)
        self._poll_seconds = poll_seconds
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        self._timeout = timeout_seconds
        self._settle = settle_seconds
        self.legacy_cursor_path = Path(settings.data_dir) / CURSOR_FILE
        tls_context(settings)  # fail at start-up on unusable TLS files, not at the first send

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: ssl.SSLSocket | None = None
        self._fresh = False
        self._cursor = self._load_cursor()
        self._cursor_checked = False
        self._head_seq = self._cursor.seq
        self._failures = 0
        self._last_error = ""
        self._last_success_at: float | None = None
        self._outage = False

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Forward in a background thread until `stop()`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audit-syslog", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0, *, flush: bool = True) -> None:
        """End the thread; with `flush`, first try once more to send what is pending (the
        Application Stop event written just before), unless the receiver is already known down."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if flush and not self._outage:
            try:
                self._round(lambda: time.monotonic() > deadline)
            except Exception as exc:  # the events stay in the log; the next start sends them
                log.warning("audit forwarding: final send failed, will resume at start: %s", exc)
        with self._lock:
            self._disconnect()

    def wake(self) -> None:
        """Look for new events now instead of at the next poll (optional; polling suffices)."""
        self._wake.set()

    def state(self) -> ForwarderState:
        """A snapshot for health checks and metrics; reads the chain head for an exact lag."""
        with contextlib.suppress(Exception):
            self._head_seq = max(self._head_seq, self._index.audit_head()[0])
        last = self._cursor.seq
        return ForwarderState(
            connected=self._conn is not None,
            last_forwarded_seq=last,
            head_seq=self._head_seq,
            lag=max(0, self._head_seq - last),
            consecutive_failures=self._failures,
            last_error=self._last_error,
            last_success_at=self._last_success_at,
        )

    # -- one round -------------------------------------------------------------------------------

    def forward_pending(self) -> int:
        """Send every event after the cursor, oldest first; return how many were sent.

        Raises SyslogUnavailable when the receiver cannot be reached or does not take a batch;
        the cursor then stands after the last batch that was taken, so a later call resumes
        there. Index errors (`storage.errors.StorageError`) pass through unchanged.
        """
        return self._round(lambda: False)

    def _round(self, pause: Callable[[], bool]) -> int:
        """One round under the lock; `pause` is asked between batches, so a long backlog after an
        outage does not hold up `stop()` (the rest waits in the log behind the cursor)."""
        with self._lock:
            try:
                sent = self._forward_pending(pause)
            except Exception as exc:
                self._failures += 1
                self._last_error = str(exc)
                raise
            self._failures = 0
            self._last_error = ""
            self._last_success_at = time.time()
            return sent

    def _forward_pending(self, pause: Callable[[], bool]) -> int:
        self._check_cursor()
        self._head_seq = self._index.audit_head()[0]
        if self._head_seq <= self._cursor.seq:
            return 0
        sent = 0
        batch: list[AuditEvent] = []
        for event in self._index.iter_audit_events(batch=self._batch_size, after=self._cursor.seq):
            batch.append(event)
            if len(batch) >= self._batch_size:
                sent += self._send_batch(batch)
                batch = []
                if pause():
                    return sent
        if batch:
            sent += self._send_batch(batch)
        return sent

    def _send_batch(self, events: list[AuditEvent]) -> int:
        payload = b"".join(
            syslog_frame(event, self._source_id, self._hostname, procid=self._procid)
            for event in events
        )
        conn = self._connection()
        try:
            conn.sendall(payload)
            self._confirm_delivery(conn)
        except (OSError, SyslogUnavailable) as exc:
            self._disconnect()
            raise SyslogUnavailable(
                f"audit receiver {self._host}:{self._port} did not take events "
                f"{events[0].seq}-{events[-1].seq}: {exc}"
            ) from exc
        last = events[-1]
        self._save_cursor(_Cursor(last.seq, last.hash))
        return len(events)

    # -- the connection --------------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        return tls_context(self._settings)

    def _connection(self) -> ssl.SSLSocket:
        """The open connection if it is still healthy, else a new one."""
        if self._conn is not None:
            try:
                self._check_alive(self._conn, 0.0)
                return self._conn
            except (OSError, SyslogUnavailable):
                # The receiver closed an idle connection (restart, timeout): reconnect quietly.
                self._disconnect()
        try:
            context = self._ssl_context()
            raw = socket.create_connection((self._host, self._port), timeout=self._timeout)
        except (OSError, ConfigError) as exc:
            raise SyslogUnavailable(
                f"cannot connect to audit receiver {self._host}:{self._port}: {exc}"
            ) from exc
        conn: ssl.SSLSocket | None = None
        try:
            conn = context.wrap_socket(raw, server_hostname=self._host)
            # TLS 1.3 ends the client's handshake before the server has judged our certificate;
            # a refusal arrives just after, so wait briefly for one before sending anything.
            self._check_alive(conn, self._settle)
        except (OSError, SyslogUnavailable) as exc:
            (raw if conn is None else conn).close()
            raise SyslogUnavailable(
                f"TLS with audit receiver {self._host}:{self._port} failed: {exc}"
            ) from exc
        self._conn = conn
        self._fresh = True
        return conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None

    def _check_alive(self, conn: ssl.SSLSocket, wait: float) -> None:
        """Raise unless the connection is open: a syslog receiver never sends data, so anything
        readable is an end of stream, a reset or a TLS alert (a refused certificate). TLS 1.3
        session tickets are readable too and are consumed here without complaint."""
        deadline = time.monotonic() + wait
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([conn], [], [], remaining)
            if readable:
                conn.setblocking(False)
                try:
                    data = conn.recv(4096)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    data = None  # only handshake records (session tickets) were there
                finally:
                    conn.settimeout(self._timeout)
                if data == b"":
                    raise SyslogUnavailable("the receiver closed the connection")
            if remaining <= 0.0:
                return

    def _confirm_delivery(self, conn: ssl.SSLSocket) -> None:
        """Wait until the receiver's TCP stack has acknowledged every byte sent and the
        connection is still established; only then may the cursor move past these events."""
        deadline = time.monotonic() + self._timeout
        while True:
            tcp_state = _tcp_state(conn)
            if tcp_state is not None and tcp_state not in _HEALTHY_TCP_STATES:
                raise SyslogUnavailable(f"the connection was lost (TCP state {tcp_state})")
            unacknowledged = _unacknowledged_bytes(conn)
            if not unacknowledged:  # 0, or None where the system cannot tell
                break
            if time.monotonic() > deadline:
                raise OSError(errno.ETIMEDOUT, "the receiver did not acknowledge the events")
            time.sleep(0.002)
        # On a new connection a slow receiver may still be judging our certificate: give it the
        # settle time once more before the first batch counts as taken.
        self._check_alive(conn, self._settle if self._fresh else 0.0)
        self._fresh = False

    # -- the cursor ------------------------------------------------------------------------------

    def _load_cursor(self) -> _Cursor:
        stored = self._index.forward_cursor(CURSOR_NAME)
        if stored is not None:
            return _Cursor(*stored)
        legacy = self._legacy_cursor()
        if legacy is None:
            return _START
        # The upgrade of an archive that kept the cursor in its data directory: take the file's
        # position into the index once (checked against the log like any cursor, in the first
        # round), and rename the file so that it is never read again.
        self._save_cursor(legacy)
        imported = self.legacy_cursor_path.with_name(CURSOR_FILE + IMPORTED_SUFFIX)
        try:
            self.legacy_cursor_path.replace(imported)
        except OSError as exc:
            log.warning("audit forwarding: could not rename %s: %s", self.legacy_cursor_path, exc)
        log.warning(
            "audit forwarding: took the cursor (event %d) from %s into the index; the index "
            "keeps it from now on and the file is renamed %s",
            legacy.seq,
            self.legacy_cursor_path,
            imported.name,
        )
        return legacy

    def _legacy_cursor(self) -> _Cursor | None:
        """The position in an old `audit-forward.cursor` file, if there is one."""
        try:
            document = json.loads(self.legacy_cursor_path.read_text(encoding="utf-8"))
            return _Cursor(int(document["seq"]), str(document["hash"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Resending everything is a nuisance; skipping events would be a gap in the copy.
            log.error(
                "audit forwarding: old cursor %s unreadable (%s); sending from the first event",
                self.legacy_cursor_path,
                exc,
            )
            return None

    def _check_cursor(self) -> None:
        """Once per forwarder: the cursor must name an event of *this* log. A database restored
        from a backup or replaced would otherwise leave the cursor ahead and silence forwarding."""
        if self._cursor_checked or self._cursor.seq == 0:
            self._cursor_checked = True
            return
        stored = next(self._index.iter_audit_events(batch=1, after=self._cursor.seq - 1), None)
        if stored is None or stored.seq != self._cursor.seq or stored.hash != self._cursor.hash:
            log.error(
                "audit forwarding: cursor at event %d does not match this audit log "
                "(restored or replaced database?); sending from the first event",
                self._cursor.seq,
            )
            self._cursor = _START
        self._cursor_checked = True

    def _save_cursor(self, cursor: _Cursor) -> None:
        """In the index, committed before the in-memory cursor moves: if the write fails, the
        batch is sent again later (at-least-once), never skipped."""
        with self._index.transaction() as tx:
            tx.set_forward_cursor(CURSOR_NAME, cursor.seq, cursor.hash, now_iso())
        self._cursor = cursor

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        """Poll, send, and on failure back off exponentially (with jitter, up to the cap) rather
        than spin; one warning per outage, one notice when it ends."""
        while not self._stop.is_set():
            try:
                sent = self._round(self._stop.is_set)
            except Exception as exc:
                if not self._outage:
                    self._outage = True
                    log.warning(
                        "audit forwarding to %s:%d stopped; events are kept and will be sent "
                        "when it works again: %s",
                        self._host,
                        self._port,
                        exc,
                    )
                doublings = min(max(self._failures - 1, 0), 16)
                delay = min(self._retry_max, self._retry_initial * 2**doublings)
                self._stop.wait(delay * random.uniform(0.75, 1.0))
                continue
            if self._outage:
                self._outage = False
                log.warning(
                    "audit forwarding to %s:%d works again (%d pending events sent)",
                    self._host,
                    self._port,
                    sent,
                )
            self._wake.wait(self._poll_seconds)
            self._wake.clear()


def tls_context(settings: Settings) -> ssl.SSLContext:
    """TLS 1.2 or later, the receiver's certificate checked against the configured CA (the
    system's when none is set) and its name against the configured host; our client certificate
    presented when set, as ATNA node authentication (ITI-19) requires. Raises ConfigError when
    the configured files cannot be used."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if settings.audit_syslog_ca_file:
            context.load_verify_locations(cafile=settings.audit_syslog_ca_file)
        else:
            context.load_default_certs()
        if settings.audit_syslog_cert_file:
            context.load_cert_chain(
                settings.audit_syslog_cert_file, settings.audit_syslog_key_file or None
            )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"audit syslog TLS files cannot be used: {exc}") from exc
    return context


def _tcp_state(conn: socket.socket) -> int | None:
    """The kernel's TCP state of the connection (Linux TCP_INFO), or None where unavailable."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return None
    try:
        info = conn.getsockopt(socket.IPPROTO_TCP, option, 8)
    except OSError:
        return None
    return int(info[0])


def _unacknowledged_bytes(conn: socket.socket) -> int | None:
    """Bytes sent but not yet acknowledged by the peer (Linux SIOCOUTQ), or None if unknown."""
    request = getattr(termios, "TIOCOUTQ", None)
    if request is None:
        return None
    try:
        answer = fcntl.ioctl(conn.fileno(), request, struct.pack("i", 0))
    except OSError:
        return None
    return int(struct.unpack("i", answer)[0])
