"""Memory accounting as XAPI's memory_check.ml does it.

A host's free memory for placement is `memory_total − host.memory_overhead − Σ(dynamic_min +
memory_overhead)` over every VM resident on **or scheduled to be resident on** it; dom0 is a
resident VM and so counts. A VM in flight (migrating, starting) is therefore counted on both
hosts until it lands, which is what keeps concurrent placements honest.
"""

from __future__ import annotations

import math

from hypervisor.xapi_sim.errors import ApiError
from hypervisor.xapi_sim.objects import MiB, Record, State

PAGE = 4096


def _mib_of_pages(pages: float) -> int:
    return math.ceil(pages * PAGE / MiB)


def vm_overhead(static_max: int, vcpus: int, shadow_multiplier: float = 1.0) -> int:
    """HVM overhead in bytes (xapi-idl memory.ml): 2 MiB + shadow + 38 pages per vCPU, where
    shadow is (256 pages per vCPU + 2 pages per MiB of static_max) × the shadow multiplier."""
    static_max_mib = static_max // MiB
    shadow_mib = math.ceil(_mib_of_pages(256 * vcpus + 2 * static_max_mib) * shadow_multiplier)
    return (2 + shadow_mib + _mib_of_pages(38 * vcpus)) * MiB


def refresh_overhead(vm: Record) -> None:
    """Recompute a VM's memory_overhead after its static_max or vCPUs changed."""
    if vm["is_control_domain"]:
        return
    vm["memory_overhead"] = vm_overhead(
        vm["memory_static_max"], vm["VCPUs_max"], vm["HVM_shadow_multiplier"]
    )


def vm_footprint(vm: Record) -> int:
    """What a running (or reserved) VM takes from its host in XAPI's free-memory count."""
    return int(vm["memory_dynamic_min"]) + int(vm["memory_overhead"])


def start_memory(vm: Record) -> int:
    """Memory a VM needs to boot: dynamic_min plus its overhead (the `needed` of
    HOST_NOT_ENOUGH_FREE_MEMORY)."""
    return vm_footprint(vm)


def compute_free_memory(state: State, host_ref: str, exclude_vm: str | None = None) -> int:
    """host.compute_free_memory: total less host overhead less every resident or scheduled VM
    (each counted once per host), floored at 0; `exclude_vm` leaves out the VM being placed,
    as assert_can_boot_here does with its own reservation."""
    host = state.get("host", host_ref)
    metrics = state.get("host_metrics", host["metrics"])
    used = int(host["memory_overhead"])
    for ref, vm in state.all("VM").items():
        if ref == exclude_vm:
            continue
        if host_ref in (vm["resident_on"], vm["scheduled_to_be_resident_on"]):
            used += vm_footprint(vm)
    return max(0, int(metrics["memory_total"]) - used)


def metrics_memory_free(state: State, metrics_ref: str) -> int:
    """host_metrics.memory_free: what the hypervisor reports free, i.e. total less host
    overhead less what resident domains actually hold (their dynamic_max, not a reservation)."""
    metrics = state.get("host_metrics", metrics_ref)
    host_ref = state.host_of_metrics(metrics_ref)
    if not metrics["live"] or not state.exists("host", host_ref):
        return 0
    used = int(state.get("host", host_ref)["memory_overhead"])
    for vm in state.all("VM").values():
        if vm["resident_on"] == host_ref:
            used += int(vm["memory_dynamic_max"]) + int(vm["memory_overhead"])
    return max(0, int(metrics["memory_total"]) - used)


def check_memory(state: State, vm_ref: str, host_ref: str) -> None:
    """HOST_NOT_ENOUGH_FREE_MEMORY [needed, available] (bytes, as strings on the wire)."""
    vm = state.get("VM", vm_ref)
    needed = start_memory(vm)
    available = compute_free_memory(state, host_ref, exclude_vm=vm_ref)
    if needed > available:
        raise ApiError("HOST_NOT_ENOUGH_FREE_MEMORY", needed, available)


def check_pcpus(state: State, vm_ref: str, host_ref: str) -> None:
    """HOST_NOT_ENOUGH_PCPUS [vcpus, pcpus] when one VM wants more vCPUs than the host has
    pCPUs; the total over VMs is not limited (XAPI allows vCPU overcommit)."""
    vm = state.get("VM", vm_ref)
    pcpus = int(state.get("host", host_ref)["cpu_info"]["cpu_count"])
    if int(vm["VCPUs_max"]) > pcpus:
        raise ApiError("HOST_NOT_ENOUGH_PCPUS", vm["VCPUs_max"], pcpus)


def check_memory_order(static_min: int, static_max: int, dyn_min: int, dyn_max: int) -> None:
    """MEMORY_CONSTRAINT_VIOLATION_ORDER unless static_min ≤ dynamic_min ≤ dynamic_max ≤
    static_max."""
    if not static_min <= dyn_min <= dyn_max <= static_max:
        raise ApiError("MEMORY_CONSTRAINT_VIOLATION_ORDER")
