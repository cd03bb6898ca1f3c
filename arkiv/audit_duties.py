"""The audit duties: signing checkpoints of the audit log (`arkiv.audit_checkpoint`) and
forwarding it to the syslog receiver (`arkiv.audit_syslog`), done by exactly one process among
all the `arkiv serve|dicom|web` processes that share an index.

Every such process makes an `AuditDuties` and starts it. The one that takes the index's lease
`audit-duties` (`storage.leases`) runs the checkpoint scheduler and the forwarder; the others
stand by and try to take the lease every `audit_duties_retry_seconds`, so when the holder stops or
dies, another node takes over within about that interval: its forwarder continues from the cursor
in the index, and its scheduler signs at once. The holder checks the lease as often, and a holder
that finds it lost (its database connection dropped) stops its duties without a last checkpoint or
flush: those are the new holder's.

For that overlap of at most one interval, and for any surprise of the lease, both duties stay
correct when two processes do them: a checkpoint is stored once per log size (the second is
ignored), and forwarding is at-least-once anyway (the receiver sees a repeat by its sequence
number). All nodes must sign with the same key (`audit_signing_key_file`); a holder that finds the
newest checkpoint signed by another key says so in the log.

DICOM worker processes of `arkiv serve` never make one: their main process does the duties.
"""

from __future__ import annotations

import logging
import threading

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from arkiv.audit_checkpoint import (
    CheckpointScheduler,
    CheckpointSigner,
    load_or_create_signing_key,
)
from arkiv.audit_syslog import SyslogForwarder, tls_context
from arkiv.config import ConfigError
from arkiv.services import Archive
from storage.leases import Lease, this_process

__all__ = ["LEASE_NAME", "AuditDuties"]

log = logging.getLogger(__name__)

LEASE_NAME = "audit-duties"

_STOP_TIMEOUT_SECONDS = 60.0


class AuditDuties:
    """The checkpoint scheduler and the syslog forwarder, run while this process holds the lease.

    `start()` tries the lease at once and then from a daemon thread; `stop()` ends the duties
    (with the last checkpoint and a final flush when this process still holds the lease) and
    releases the lease, so another node may take over at once. With neither duty configured it
    does nothing and takes no lease.
    """

    def __init__(
        self, archive: Archive, *, retry_seconds: float | None = None, lease: Lease | None = None
    ) -> None:
        settings = archive.settings
        self._archive = archive
        self._settings = settings
        self._retry = (
            settings.audit_duties_retry_seconds if retry_seconds is None else retry_seconds
        )
        if self._retry <= 0:
            raise ConfigError("setting 'audit_duties_retry_seconds' must be positive")
        self._forwarding = bool(settings.audit_syslog_host)
        self._signing = settings.audit_checkpoint_minutes > 0
        # Every node checks what it would need as holder now, at its start, not at a failover.
        if self._forwarding:
            tls_context(settings)
        self._key: Ed25519PrivateKey | None = (
            load_or_create_signing_key(settings.signing_key_path) if self._signing else None
        )
        self._lease = lease
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._standing_by = False
        self.forwarder: SyslogForwarder | None = None
        self.checkpoints: CheckpointScheduler | None = None

    @property
    def enabled(self) -> bool:
        return self._forwarding or self._signing

    @property
    def running(self) -> bool:
        """True while this process does the duties."""
        return self.forwarder is not None or self.checkpoints is not None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Take the duties if no other process has them; keep trying from a daemon thread."""
        if not self.enabled or self._thread is not None:
            return
        if self._lease is None:
            self._lease = self._archive.index.lease(LEASE_NAME)
        self._stopping.clear()
        self.check()
        self._thread = threading.Thread(target=self._watch, name="audit-duties", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """At the end of the process, after its last audit event (Application Stop): the holder
        signs the last checkpoint and sends what is left, then gives the lease up."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(_STOP_TIMEOUT_SECONDS)
        with self._lock:
            if self.running:
                final = self._held()
                if not final:
                    log.warning(
                        "audit duties lost while stopping: the last checkpoint and the final "
                        "forwarding are left to the node that holds them now"
                    )
                self._end(final=final)
            if self._lease is not None:
                self._lease.release()

    def check(self) -> None:
        """One look at the lease: start the duties when it was taken, stop them when it was lost.
        The thread calls this every `retry_seconds`."""
        with self._lock:
            if self._stopping.is_set():
                return
            held = self._held()
            if held and not self.running:
                self._begin()
            elif not held and self.running:
                log.warning(
                    "audit duties LOST by this node (%s): the lease is gone (database connection "
                    "dropped?); stopping checkpoint signing and forwarding, another node takes "
                    "them over",
                    this_process(),
                )
                self._end(final=False)
                self._standing_by = True
            elif not held and not self._standing_by:
                self._standing_by = True
                log.info(
                    "audit duties are held by %s; this node (%s) stands by and takes them over "
                    "if that one stops (checking every %g s)",
                    self._holder() or "another process",
                    this_process(),
                    self._retry,
                )

    # -- inside the lock -----------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.wait(self._retry):
            try:
                self.check()
            except Exception:  # the thread must outlive any surprise; the next check retries
                log.exception("audit duties: checking the lease failed")

    def _held(self) -> bool:
        assert self._lease is not None
        try:
            return self._lease.held()
        except Exception:
            log.exception("audit duties: the lease could not be checked")
            return False

    def _holder(self) -> str:
        assert self._lease is not None
        try:
            return self._lease.holder()
        except Exception:
            return ""

    def _begin(self) -> None:
        index, settings = self._archive.index, self._settings
        try:
            forwarder = SyslogForwarder(index, settings) if self._forwarding else None
            scheduler = None
            if self._key is not None:
                signer = CheckpointSigner(index, settings, key=self._key)
                self._warn_about_other_keys(signer.key_id)
                scheduler = CheckpointScheduler(signer, settings.audit_checkpoint_minutes)
        except Exception:
            log.exception(
                "audit duties: this node holds the lease but could not start them; "
                "trying again in %g s",
                self._retry,
            )
            return
        what = []
        if scheduler is not None:
            what.append(f"checkpoint signing every {settings.audit_checkpoint_minutes:g} min")
        if forwarder is not None:
            what.append(f"forwarding to {settings.audit_syslog_host}:{settings.audit_syslog_port}")
        log.log(
            logging.WARNING if self._standing_by else logging.INFO,
            "audit duties %s by this node (%s): %s",
            "TAKEN OVER" if self._standing_by else "held",
            this_process(),
            ", ".join(what),
        )
        self._standing_by = False
        if scheduler is not None:
            scheduler.start()
            self.checkpoints = scheduler
        if forwarder is not None:
            forwarder.start()
            self.forwarder = forwarder
            self._archive.audit_forwarder = forwarder  # for monitoring (metrics)

    def _end(self, *, final: bool) -> None:
        """Stop the duties; with `final`, the last checkpoint covers every event so far, and the
        forwarder sends what is left (in that order: the stop event is among them)."""
        scheduler, self.checkpoints = self.checkpoints, None
        forwarder, self.forwarder = self.forwarder, None
        if scheduler is not None:
            scheduler.stop(final=final)
        if forwarder is not None:
            forwarder.stop(flush=final)
            if self._archive.audit_forwarder is forwarder:
                self._archive.audit_forwarder = None

    def _warn_about_other_keys(self, own_key_id: str) -> None:
        latest = self._archive.index.latest_checkpoint_seq()
        if latest == 0:
            return
        newest = self._archive.index.checkpoints(since_seq=latest - 1)
        if newest and newest[-1].key_id != own_key_id:
            log.warning(
                "the newest audit checkpoint (event %d) was signed with key %s, this node signs "
                "with key %s (%s): every node that may hold the audit duties must use the same "
                "audit_signing_key_file",
                newest[-1].seq,
                newest[-1].key_id,
                own_key_id,
                self._settings.signing_key_path,
            )
