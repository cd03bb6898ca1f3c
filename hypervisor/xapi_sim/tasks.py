"""Async calls and tasks on a virtual clock.

`Async.<cls>.<method>` checks what XAPI checks before it forks (power state, memory, and the
reservations those imply), returns a task at once, and completes it when the virtual clock
passes the operation's duration (`XapiSimulator.advance`). So a test decides exactly when a
migration lands or a start finishes, and never sleeps. A synchronous call runs the same
operation to completion at once.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypervisor.xapi_sim.errors import ApiError
from hypervisor.xapi_sim.objects import Record, State
from hypervisor.xapi_sim.wire import NULL_REF, task_result

DEFAULT_DURATIONS: dict[str, float] = {
    "start": 20.0,
    "start_on": 20.0,
    "clean_shutdown": 30.0,
    "hard_shutdown": 2.0,
    "shutdown": 30.0,
    "clean_reboot": 45.0,
    "hard_reboot": 20.0,
    "pool_migrate": 30.0,
    "snapshot": 5.0,
    "revert": 10.0,
    "clone": 2.0,
    "copy": 60.0,
    "provision": 5.0,
    "destroy": 1.0,
}
"""Virtual seconds per operation (overridable through faults.set_duration)."""


def _noop() -> None:
    return None


def raising(error: ApiError) -> Callable[[], Any]:
    """An action that fails with `error` (a task that fails at completion)."""

    def action() -> Any:
        raise error

    return action


@dataclass
class Deferred:
    """An operation that has passed its checks and taken its reservations, and completes later.

    `finish` applies the effect (it may raise ApiError: the task then fails); `abort` undoes the
    reservations when the task is cancelled; `duration` None means it never completes (a guest
    that never acknowledges), and a synchronous caller then gets `sync_error`."""

    op: str
    finish: Callable[[], Any]
    duration: float | None
    vm: str | None = None
    hosts: tuple[str, ...] = ()
    """Hosts the operation involves: a crash of one of them fails the task."""
    abort: Callable[[], None] = field(default=_noop)
    sync_error: ApiError | None = None


def duration_of(state: State, op: str) -> float:
    return state.faults.durations.get(op, DEFAULT_DURATIONS.get(op, 0.0))


class TaskQueue:
    """Scheduled task completions ordered by virtual due time (then creation order)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self.pending: dict[str, Deferred] = {}

    def schedule(self, state: State, name: str, deferred: Deferred | None, value: Any) -> str:
        """Create the task record; a plain value (or a zero-duration op) completes at once."""
        ref = state.add(
            "task",
            {
                "name_label": name,
                "name_description": "",
                "allowed_operations": ["cancel"] if deferred else [],
                "current_operations": {},
                "created": state.now(),
                "finished": state.now(),
                "status": "pending",
                "resident_on": NULL_REF,
                "type": "<none/>",
                "result": "",
                "error_info": [],
                "other_config": {},
                "subtask_of": NULL_REF,
                "subtasks": [],
                "backtrace": "()",
                "_started": state.clock,
                "_duration": 0.0,
            },
        )
        task = state.get("task", ref)
        if deferred is None:
            self._complete(state, task, lambda: value)
            return ref
        if deferred.vm is not None:
            state.get("VM", deferred.vm)["current_operations"][ref] = deferred.op
        task["_duration"] = deferred.duration
        if deferred.duration is None:
            self.pending[ref] = deferred
        elif deferred.duration <= 0:
            self._run(state, ref, deferred)
        else:
            self.pending[ref] = deferred
            heapq.heappush(self._heap, (state.clock + deferred.duration, next(self._seq), ref))
        return ref

    def _release(self, state: State, ref: str, deferred: Deferred) -> None:
        if deferred.vm is not None and state.exists("VM", deferred.vm):
            state.get("VM", deferred.vm)["current_operations"].pop(ref, None)

    def _run(self, state: State, ref: str, deferred: Deferred) -> None:
        self.pending.pop(ref, None)
        self._release(state, ref, deferred)
        if state.exists("task", ref):
            self._complete(state, state.get("task", ref), deferred.finish)
        else:
            with contextlib.suppress(ApiError):  # the task was destroyed; the op still happens
                deferred.finish()

    @staticmethod
    def _complete(state: State, task: Record, action: Callable[[], Any]) -> None:
        try:
            value = action()
        except ApiError as err:
            task["status"] = "failure"
            task["error_info"] = err.description
        else:
            task["status"] = "success"
            task["result"] = task_result(value)
        task["finished"] = state.now()
        task["allowed_operations"] = []

    def advance(self, state: State, seconds: float) -> None:
        """Move the clock, completing every due task at its own due time, in order."""
        target = state.clock + seconds
        while self._heap and self._heap[0][0] <= target:
            due, _, ref = heapq.heappop(self._heap)
            deferred = self.pending.get(ref)
            if deferred is None:
                continue
            state.clock = max(state.clock, due)
            self._run(state, ref, deferred)
        state.clock = target

    def cancel(self, state: State, ref: str) -> None:
        """task.cancel: a pending task becomes cancelled (TASK_CANCELLED [task]) and its
        reservations are undone; anything else is OPERATION_NOT_ALLOWED."""
        task = state.get("task", ref)
        deferred = self.pending.get(ref)
        if task["status"] != "pending" or deferred is None:
            raise ApiError("OPERATION_NOT_ALLOWED", "task is not pending")
        del self.pending[ref]
        self._heap = [item for item in self._heap if item[2] != ref]
        heapq.heapify(self._heap)
        self._release(state, ref, deferred)
        deferred.abort()
        task["status"] = "cancelled"
        task["error_info"] = ["TASK_CANCELLED", ref]
        task["finished"] = state.now()
        task["allowed_operations"] = []

    def fail(self, state: State, ref: str, error: ApiError) -> None:
        """Fail a pending task from outside (a host it involved crashed)."""
        deferred = self.pending.pop(ref, None)
        if deferred is None:
            return
        self._heap = [item for item in self._heap if item[2] != ref]
        heapq.heapify(self._heap)
        self._release(state, ref, deferred)
        deferred.abort()
        if state.exists("task", ref):
            self._complete(state, state.get("task", ref), raising(error))


def run_sync(deferred: Deferred) -> Any:
    """A synchronous call: the operation completes at once, or fails as a hang would."""
    if deferred.duration is None:
        deferred.abort()
        raise deferred.sync_error or ApiError("VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT", deferred.vm)
    return deferred.finish()


def task_progress(state: State, task: Record) -> float:
    """0..1 from the virtual elapsed time (XAPI: "should not be used to determine completion")."""
    if task["status"] != "pending":
        return 1.0
    duration = task.get("_duration")
    if not duration:
        return 0.0
    elapsed = state.clock - float(task["_started"])
    return round(min(0.99, elapsed / float(duration)), 3)
