"""Draining a node before a planned restart: stop taking new work, finish what is open, say when
done.

The operator's rolling restart (`arkiv cluster restart`) restarts one VM at a time; before it
reboots a node it asks the node to drain and waits until it reports drained. A web node then
answers /readyz with 503, so its load balancer sends new requests elsewhere, while requests in
flight finish; a DICOM node stops accepting associations (the listening socket is closed in
every process, so new connections are refused at once rather than left in a backlog, and a
modality's retry reaches another node) and lets open associations finish.

Draining is one-way: a drained node is restarted, and a restart brings it back. The adapters
register what "in flight" means for them (`add_probe`) and what to do when draining starts
(`on_drain`); this module knows neither HTTP nor DICOM.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrainStatus:
    draining: bool
    in_flight: dict[str, int]
    """Open work by kind (web requests, DICOM associations, DICOM worker processes)."""

    @property
    def drained(self) -> bool:
        return self.draining and not any(self.in_flight.values())


class NodeDrain:
    def __init__(self) -> None:
        self._draining = threading.Event()
        self._lock = threading.Lock()
        self._actions: list[Callable[[], None]] = []
        self._probes: dict[str, Callable[[], int]] = {}

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def on_drain(self, action: Callable[[], None]) -> None:
        """Run `action` when draining starts (at once if it already has)."""
        with self._lock:
            self._actions.append(action)
            started = self.draining
        if started:
            self._run(action)

    def add_probe(self, kind: str, count: Callable[[], int]) -> None:
        """Count open work of one kind; the node is drained when every probe says 0."""
        with self._lock:
            self._probes[kind] = count

    def start(self) -> DrainStatus:
        """Begin draining (again is harmless) and return the status right after."""
        with self._lock:
            first = not self.draining
            self._draining.set()
            actions = list(self._actions) if first else []
        if first:
            log.warning("draining: no new work is taken; open work finishes")
        for action in actions:
            self._run(action)
        return self.status()

    def status(self) -> DrainStatus:
        with self._lock:
            probes = dict(self._probes)
        return DrainStatus(self.draining, {kind: count() for kind, count in probes.items()})

    @staticmethod
    def _run(action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:  # one adapter failing to stop must not keep the others taking work
            log.exception("a drain action failed")
