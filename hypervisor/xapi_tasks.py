"""Waiting for XAPI's asynchronous calls.

Long operations (start, migrate, shutdown, reboot, snapshot, revert) are called as
`Async.VM.<op>`, which returns a task at once; the caller polls the task until it is no longer
pending, then destroys it (XAPI keeps finished tasks until someone does). Polling is what the
XenServer samples and Ansible do; the sleep between polls is injectable so that tests against
the simulator advance its virtual clock instead of the wall clock.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from hypervisor.xapi_pool import XapiError, call

_REF_IN_RESULT = re.compile(r"<value>(.*?)</value>", re.DOTALL)


class TaskTimeout(RuntimeError):
    """A task was still pending after its deadline (the operation may still finish in XAPI)."""


@dataclass(frozen=True)
class TaskWaiter:
    """Runs `Async.<method>` and waits for it: `sleep(seconds)` between polls, at most
    `timeout_seconds` of such sleeps."""

    api: Any
    sleep: Callable[[float], None] = time.sleep
    poll_seconds: float = 1.0
    timeout_seconds: float = 1800.0

    def run(self, method: str, *args: Any) -> str:
        """Call `Async.<method>(*args)`, wait, and return the task's result value (a ref for
        clone and snapshot, "" for void calls); XapiError with the task's error_info when it
        failed; TaskTimeout when it did not finish in time (the task is cancelled)."""
        task = call(self.api, f"Async.{method}", *args)
        waited = 0.0
        try:
            while True:
                status = call(self.api, "task.get_status", task)
                if status == "success":
                    return _result_value(call(self.api, "task.get_result", task))
                if status in ("failure", "cancelled"):
                    details = list(call(self.api, "task.get_error_info", task))
                    raise XapiError(method, details or [status.upper()])
                if waited >= self.timeout_seconds:
                    # not cancellable: it is reported as timed out all the same
                    with suppress(XapiError):
                        call(self.api, "task.cancel", task)
                    raise TaskTimeout(
                        f"{method} did not finish within {self.timeout_seconds:g} s "
                        f"(task status {status})"
                    )
                self.sleep(self.poll_seconds)
                waited += self.poll_seconds
        finally:
            with suppress(XapiError):  # already gone, or the pool is: nothing to tidy
                call(self.api, "task.destroy", task)


def _result_value(result: str) -> str:
    """A task's result is its value serialised as XML-RPC (`<value>OpaqueRef:…</value>`)."""
    match = _REF_IN_RESULT.search(result or "")
    return match.group(1).strip() if match else (result or "").strip()
