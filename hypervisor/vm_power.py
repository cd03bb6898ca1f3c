"""Rebooting and shutting down a VM the way an operator would: clean first, hard if the guest
cannot or will not take part.

A clean operation needs the guest's PV drivers to acknowledge within XAPI's limits (the
reference, §1.8 and §4.1). XAPI says VM_LACKS_FEATURE when there are no drivers,
VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT or VM_SHUTDOWN_TIMEOUT when the guest does not finish; a task
that is still pending after our own deadline is cancelled. Each of those falls back to the hard
operation, which cannot be refused by the guest. Any other error (the VM is not running, another
operation holds it) is the caller's to report.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from hypervisor.xapi_pool import XapiError
from hypervisor.xapi_tasks import TaskTimeout, TaskWaiter

HOW = Literal["clean", "hard"]

FALL_BACK_TO_HARD = frozenset(
    {"VM_LACKS_FEATURE", "VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT", "VM_SHUTDOWN_TIMEOUT"}
)


def reboot(waiter: TaskWaiter, vm_ref: str, clean_seconds: float) -> HOW:
    """Reboot `vm_ref`; which way it went."""
    return _clean_else_hard(waiter, vm_ref, "reboot", clean_seconds)


def shutdown(waiter: TaskWaiter, vm_ref: str, clean_seconds: float) -> HOW:
    """Halt `vm_ref`; which way it went."""
    return _clean_else_hard(waiter, vm_ref, "shutdown", clean_seconds)


def _clean_else_hard(waiter: TaskWaiter, vm_ref: str, operation: str, seconds: float) -> HOW:
    try:
        replace(waiter, timeout_seconds=seconds).run(f"VM.clean_{operation}", vm_ref)
        return "clean"
    except TaskTimeout:
        pass
    except XapiError as error:
        if error.code not in FALL_BACK_TO_HARD:
            raise
    waiter.run(f"VM.hard_{operation}", vm_ref)
    return "hard"
