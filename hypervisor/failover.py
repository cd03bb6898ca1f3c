"""What XAPI HA would do when a host fails: biggest-fit-decreasing repack.

Mirrors ``ocaml/xapi/binpack.ml`` (reference §2.4, §3.2): the protected ("restart") VMs of
the failed host, biggest first, each onto the surviving host with the most free memory; then
the "best-effort" VMs the same way, one attempt each; "none" VMs stay down. Newer XAPI also
keeps anti-affinity groups apart while evacuating, so a VM of a group kept apart in degraded
mode never lands next to a member of its group. Using the same rule as the pool keeps the N+1
check honest: a plan we call safe is one HA itself can execute. Ties break by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hypervisor.model import Cluster, Vm


@dataclass(frozen=True)
class Failover:
    """The outcome of one host failure."""

    failed_host: str
    restarts: Mapping[str, str]  # VM → host it restarts on
    unplaced: tuple[str, ...]  # restartable VMs ("restart" or "best-effort") that found no room
    not_restarted: tuple[str, ...]  # VMs whose policy is "none"
    unplaced_protected: tuple[str, ...] = ()  # the "restart" ones among `unplaced`

    @property
    def protected_ok(self) -> bool:
        """True when no "restart" VM was left unplaced (the N+1 promise)."""
        return not self.unplaced_protected


def repack(cluster: Cluster, assignment: Mapping[str, str], failed_host: str) -> Failover:
    """Simulate `failed_host` failing under `assignment` (VM → host)."""
    survivors = [h for h in cluster.hosts if h.name != failed_host]
    free = {h.name: cluster.capacity(h) for h in survivors}
    members: dict[str, dict[str, int]] = {h.name: {} for h in survivors}
    apart = {
        r.anti_affinity for r in cluster.roles if r.anti_affinity and r.keep_apart_when_degraded
    }
    group_of = {r.name: r.anti_affinity for r in cluster.roles}
    cpus = {h.name: h.cpus for h in survivors}
    lost: list[Vm] = []
    for vm in cluster.vms:
        host = assignment.get(vm.name)
        if host == failed_host:
            lost.append(vm)
        elif host in free:
            free[host] -= vm.memory_bytes
            group = group_of[vm.role]
            if group:
                members[host][group] = members[host].get(group, 0) + 1
    restarts: dict[str, str] = {}
    unplaced: list[str] = []
    unplaced_protected: list[str] = []
    not_restarted: list[str] = []
    for policy in ("restart", "best-effort"):
        batch = [v for v in lost if cluster.role(v.role).restart == policy]
        for vm in sorted(batch, key=lambda v: (-v.memory_bytes, v.name)):
            group = group_of[vm.role]
            fits = [
                h
                for h in free
                if free[h] >= vm.memory_bytes
                and vm.vcpus <= cpus[h]
                and not (group in apart and members[h].get(group or "", 0) > 0)
            ]
            if not fits:
                unplaced.append(vm.name)
                if policy == "restart":
                    unplaced_protected.append(vm.name)
                continue
            target = min(fits, key=lambda h: (-free[h], h))
            free[target] -= vm.memory_bytes
            if group:
                members[target][group] = members[target].get(group, 0) + 1
            restarts[vm.name] = target
    not_restarted = sorted(v.name for v in lost if cluster.role(v.role).restart == "none")
    return Failover(
        failed_host,
        restarts,
        tuple(unplaced),
        tuple(not_restarted),
        tuple(unplaced_protected),
    )


def verify_n_plus_one(cluster: Cluster, assignment: Mapping[str, str]) -> dict[str, Failover]:
    """Repack every single-host failure; the caller checks ``protected_ok`` on each."""
    return {h.name: repack(cluster, assignment, h.name) for h in cluster.hosts}


def survives_every_failure(cluster: Cluster, assignment: Mapping[str, str]) -> bool:
    """True when for every host failure all "restart" VMs find a place."""
    return all(f.protected_ok for f in verify_n_plus_one(cluster, assignment).values())
