"""The pool record's HA side and XAPI's failover planner (binpack.ml).

HA counts every VM at static_max + overhead ("conservative: useful for HA"); the plan places
the failed protected VMs biggest first, each on the surviving host with the most free memory
(biggest-fit-decreasing). A plan for n failures must exist for every combination of n failed
hosts; for a 4-host pool that is exhaustive, as in XAPI.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypervisor.xapi_sim.errors import ApiError
from hypervisor.xapi_sim.objects import State
from hypervisor.xapi_sim.vm_ops import HA_PRIORITIES, vm_srs
from hypervisor.xapi_sim.wire import as_bool, as_int, as_list, as_map, as_str


def ha_need(state: State, vm_ref: str) -> int:
    vm = state.get("VM", vm_ref)
    return int(vm["memory_static_max"]) + int(vm["memory_overhead"])


def _host_free_static(state: State, host_ref: str, leaving: set[str]) -> int:
    """A surviving host's free memory with every VM on it counted at static_max."""
    host = state.get("host", host_ref)
    total = int(state.get("host_metrics", host["metrics"])["memory_total"])
    used = int(host["memory_overhead"])
    for ref, vm in state.all("VM").items():
        if ref in leaving:
            continue
        if host_ref in (vm["resident_on"], vm["scheduled_to_be_resident_on"]):
            used += ha_need(state, ref)
    return total - used


def _agility_error(state: State, vm_ref: str) -> str | None:
    for sr in vm_srs(state, vm_ref):
        if not state.get("SR", sr)["shared"]:
            return "VM_REQUIRES_SR"
    return None


def failover_plan(
    state: State, failed_hosts: list[str], failed_vms: list[str]
) -> dict[str, dict[str, str]]:
    """pool.ha_compute_vm_failover_plan: {vm: {"host": ref}} or {vm: {"error_code": CODE}}."""
    survivors = [h for h in state.all("host") if h not in failed_hosts and state.host_live(h)]
    free = {h: _host_free_static(state, h, set(failed_vms)) for h in survivors}
    plan: dict[str, dict[str, str]] = {}
    order = sorted(failed_vms, key=lambda v: (-ha_need(state, v), list(state.all("VM")).index(v)))
    for vm_ref in order:
        agility = _agility_error(state, vm_ref)
        if agility is not None:
            plan[vm_ref] = {"error_code": agility}
            continue
        need = ha_need(state, vm_ref)
        best = max(survivors, key=lambda h: (free[h], -survivors.index(h)), default=None)
        if best is None or free[best] < need:
            plan[vm_ref] = {"error_code": "HOST_NOT_ENOUGH_FREE_MEMORY"}
            continue
        free[best] -= need
        plan[vm_ref] = {"host": best}
    return plan


def protected_vms(state: State, priorities: dict[str, str]) -> list[str]:
    """Running VMs whose (hypothetical) priority is "restart"."""
    return [
        ref
        for ref, vm in state.all("VM").items()
        if priorities.get(ref, "") == "restart"
        and vm["power_state"] in ("Running", "Paused")
        and not vm["is_control_domain"]
    ]


def plan_exists(state: State, priorities: dict[str, str], failures: int) -> bool:
    """Every combination of `failures` live hosts can fail and the protected VMs on them still
    find room on the rest."""
    live = [h for h in state.all("host") if state.host_live(h)]
    if failures > len(live):
        return False
    protected = protected_vms(state, priorities)
    for failed in itertools.combinations(live, failures):
        victims = [v for v in protected if state.get("VM", v)["resident_on"] in failed]
        plan = failover_plan(state, list(failed), victims)
        if any("error_code" in entry for entry in plan.values()):
            return False
    return True


def max_failures(state: State, priorities: dict[str, str]) -> int:
    """The largest n (at most live hosts − 1) for which a plan exists for 0..n failures."""
    live = sum(1 for h in state.all("host") if state.host_live(h))
    n = 0
    while n + 1 <= max(0, live - 1) and plan_exists(state, priorities, n + 1):
        n += 1
    return n


def current_priorities(state: State) -> dict[str, str]:
    return {ref: str(vm["ha_restart_priority"]) for ref, vm in state.all("VM").items()}


def refresh_ha(state: State) -> None:
    """With HA on, ha_plan_exists_for and ha_overcommitted follow the current state."""
    pool = state.get("pool", state.pool_ref())
    if pool["ha_enabled"]:
        n = max_failures(state, current_priorities(state))
        pool["ha_plan_exists_for"] = n
        pool["ha_overcommitted"] = n < int(pool["ha_host_failures_to_tolerate"])


# ---- API handlers --------------------------------------------------------------------------


def ha_compute_vm_failover_plan(
    state: State, failed_hosts: Any, failed_vms: Any
) -> dict[str, dict[str, str]]:
    hosts = [as_str(h, "failed_hosts") for h in as_list(failed_hosts, "failed_hosts")]
    vms = [as_str(v, "failed_vms") for v in as_list(failed_vms, "failed_vms")]
    for h in hosts:
        state.get("host", h)
    for v in vms:
        state.get("VM", v)
    return failover_plan(state, hosts, vms)


def ha_compute_max_host_failures_to_tolerate(state: State) -> int:
    n = max_failures(state, current_priorities(state))
    refresh_ha(state)
    return n


def ha_compute_hypothetical_max_host_failures_to_tolerate(state: State, config: Any) -> int:
    """Only the VMs in `config` with "restart" count as protected."""
    priorities: dict[str, str] = {}
    for vm_ref, value in as_map(config, "configuration").items():
        state.get("VM", vm_ref)
        if value not in HA_PRIORITIES:
            raise ApiError("INVALID_VALUE", "ha_restart_priority", value)
        priorities[vm_ref] = str(value)
    return max_failures(state, priorities)


def ha_failover_plan_exists(state: State, n: Any) -> bool:
    return plan_exists(state, current_priorities(state), as_int(n, "n"))


def set_ha_host_failures_to_tolerate(state: State, pool_ref: str, value: Any) -> str:
    pool = state.get("pool", pool_ref)
    n = as_int(value, "value")
    if n < 0:
        raise ApiError("INVALID_VALUE", "ha_host_failures_to_tolerate", value)
    if pool["ha_enabled"] and not plan_exists(state, current_priorities(state), n):
        raise ApiError("HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN")
    pool["ha_host_failures_to_tolerate"] = n
    refresh_ha(state)
    return ""


def enable_ha(state: State, heartbeat_srs: Any, configuration: Any) -> str:
    pool = state.get("pool", state.pool_ref())
    if pool["ha_enabled"]:
        raise ApiError("HA_IS_ENABLED")
    as_list(heartbeat_srs, "heartbeat_srs")
    pool["ha_configuration"] = {str(k): str(v) for k, v in as_map(configuration, "c").items()}
    pool["ha_enabled"] = True
    refresh_ha(state)
    return ""


def disable_ha(state: State) -> str:
    pool = state.get("pool", state.pool_ref())
    if not pool["ha_enabled"]:
        raise ApiError("HA_NOT_ENABLED")
    pool["ha_enabled"] = False
    return ""


def set_ha_allow_overcommit(state: State, pool_ref: str, value: Any) -> str:
    state.get("pool", pool_ref)["ha_allow_overcommit"] = as_bool(value, "value")
    return ""
