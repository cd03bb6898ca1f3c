"""Fault injection: what the archive's apply/restart/rollout code must survive.

Available from Python (`sim.faults`) and over a separate `sim.*` XML-RPC namespace that takes
no session and is not part of the XAPI surface (so a demo can break the pool from another
terminal). Every method takes the simulator's lock.
"""

from __future__ import annotations

import threading
from typing import Any

from hypervisor.xapi_sim import pool_ops, sessions, vm_ops
from hypervisor.xapi_sim.errors import ApiError
from hypervisor.xapi_sim.objects import State
from hypervisor.xapi_sim.tasks import TaskQueue
from hypervisor.xapi_sim.wire import NULL_REF


class Faults:
    """Injected faults on one simulator."""

    def __init__(self, state: State, tasks: TaskQueue, lock: threading.RLock) -> None:
        self._state = state
        self._tasks = tasks
        self._lock = lock

    def crash_host(self, host: str) -> dict[str, str]:
        """The host dies: host_metrics.live false, its VMs Halted with resident_on NULL,
        reservations on it dropped and tasks involving it failed. With HA on, protected VMs
        ("restart" and ha_always_run) are restarted by the failover plan, then best-effort ones
        where they fit. Returns {vm ref: host ref it was restarted on}."""
        with self._lock:
            state = self._state
            metrics = state.get("host_metrics", state.get("host", host)["metrics"])
            metrics["live"] = False
            for ref, deferred in list(self._tasks.pending.items()):
                if host in deferred.hosts:
                    self._tasks.fail(state, ref, ApiError("HOST_OFFLINE", host))
            victims: list[str] = []
            for ref, vm in state.all("VM").items():
                if vm["scheduled_to_be_resident_on"] == host:
                    vm["scheduled_to_be_resident_on"] = NULL_REF
                if vm["resident_on"] == host:
                    if vm["is_control_domain"]:
                        vm["power_state"] = "Halted"
                        continue
                    vm["power_state"] = "Halted"
                    vm["resident_on"] = NULL_REF
                    vm["domid"] = -1
                    victims.append(ref)
            restarted: dict[str, str] = {}
            pool = state.get("pool", state.pool_ref())
            if not pool["ha_enabled"]:
                return restarted
            protected = [
                v
                for v in victims
                if state.get("VM", v)["ha_restart_priority"] == "restart"
                and state.get("VM", v)["ha_always_run"]
            ]
            plan = pool_ops.failover_plan(state, [host], protected)
            for vm_ref, entry in plan.items():
                if "host" in entry and self._restart(vm_ref, entry["host"]):
                    restarted[vm_ref] = entry["host"]
            for vm_ref in victims:
                if state.get("VM", vm_ref)["ha_restart_priority"] != "best-effort":
                    continue
                for candidate in state.all("host"):
                    if self._restart(vm_ref, candidate):
                        restarted[vm_ref] = candidate
                        break
            pool_ops.refresh_ha(state)
            return restarted

    def _restart(self, vm_ref: str, host: str) -> bool:
        try:
            vm_ops.assert_can_boot_here(self._state, vm_ref, host)
        except ApiError:
            return False
        vm = self._state.get("VM", vm_ref)
        vm.update(power_state="Running", resident_on=host, domid=next(vm_ops._domids))
        return True

    def recover_host(self, host: str) -> None:
        """The host is back (live again, its dom0 running); VMs HA did not restart stay
        Halted, as after a real crash."""
        with self._lock:
            state = self._state
            metrics = state.get("host_metrics", state.get("host", host)["metrics"])
            metrics["live"] = True
            for vm in state.all("VM").values():
                if vm["is_control_domain"] and vm["resident_on"] == host:
                    vm["power_state"] = "Running"
            pool_ops.refresh_ha(state)

    def fail_next_migration(self, vm: str, message: str = "injected migration failure") -> None:
        """The VM's next pool_migrate fails at its end with VM_MIGRATE_FAILED
        [vm, source, destination, message]; the VM stays on the source."""
        with self._lock:
            self._state.get("VM", vm)
            self._state.faults.fail_migration[vm] = message

    def hang_shutdown(self, vm: str, mode: str = "forever", timeout: float = 1200.0) -> None:
        """The guest never acknowledges clean_shutdown/clean_reboot: in "forever" mode the task
        stays pending (until cancelled); in "timeout" mode it fails after `timeout` virtual
        seconds with VM_SHUTDOWN_TIMEOUT [vm, timeout]. A synchronous call fails at once with
        VM_SHUTDOWN_TIMEOUT. hard_shutdown still works. Sticky until clear_hang."""
        if mode not in ("forever", "timeout"):
            raise ValueError("mode must be 'forever' or 'timeout'")
        with self._lock:
            self._state.get("VM", vm)
            self._state.faults.hang_shutdown[vm] = (mode, float(timeout))

    def clear_hang(self, vm: str) -> None:
        with self._lock:
            self._state.faults.hang_shutdown.pop(vm, None)

    def sr_full_on_next_snapshot(self, vm: str = "*") -> None:
        """The next snapshot of `vm` (of any VM with "*") fails with SR_FULL
        [requested, maximum]."""
        with self._lock:
            if vm != "*":
                self._state.get("VM", vm)
            self._state.faults.sr_full_snapshot.add(vm)

    def expire_sessions(self) -> int:
        """Every session becomes invalid (the SDK logs in again on SESSION_INVALID)."""
        with self._lock:
            return sessions.expire_all(self._state)

    def set_duration(self, op: str, seconds: float) -> None:
        """Virtual duration of an operation, e.g. a slow `pool_migrate`."""
        with self._lock:
            self._state.faults.durations[op] = float(seconds)

    def set_pv_drivers(self, vm: str, present: bool) -> None:
        """Without PV drivers clean operations fail with VM_LACKS_FEATURE [vm]."""
        with self._lock:
            self._state.get("VM", vm)["_has_pv_drivers"] = bool(present)


SIM_METHODS = (
    "crash_host",
    "recover_host",
    "fail_next_migration",
    "hang_shutdown",
    "clear_hang",
    "sr_full_on_next_snapshot",
    "expire_sessions",
    "set_duration",
    "set_pv_drivers",
)
"""The `sim.*` XML-RPC names (plus `sim.advance(seconds)` and `sim.clock()`)."""


def call_fault(faults: Faults, name: str, params: tuple[Any, ...]) -> Any:
    """Dispatch `sim.<name>` to the Python fault API; wrong use is reported as an API error."""
    if name not in SIM_METHODS:
        raise ApiError("MESSAGE_METHOD_UNKNOWN", f"sim.{name}")
    try:
        return getattr(faults, name)(*params)
    except TypeError as err:
        raise ApiError("MESSAGE_PARAMETER_COUNT_MISMATCH", f"sim.{name}", "?", len(params)) from err
    except ValueError as err:
        raise ApiError("INVALID_VALUE", name, str(err)) from err
