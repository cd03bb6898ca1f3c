"""An ordered plan from where the VMs are to where the placement wants them, in which every step
is possible at the moment it runs.

XAPI reserves a migrating VM's memory on the destination while the source still holds it, so a
migration needs room on the destination *before* the source is freed; two VMs that must swap
hosts with no slack cannot simply trade places. The plan therefore runs one step at a time and
orders them: first what frees memory (shutting down VMs the placement no longer wants), then
any step whose destination has room now, preferring those that free room others wait for; when
only a cycle is left, one VM takes a detour through a host with room. If even that is
impossible, the plan says which moves are stuck and why, rather than trying its luck.

Pure functions over names and byte counts: the same input gives the same plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

StepKind = Literal["shutdown", "migrate", "start"]


class SequencingError(RuntimeError):
    """No order of single steps reaches the placement; the message names the stuck moves."""


@dataclass(frozen=True)
class Step:
    kind: StepKind
    vm: str
    host: str
    """Where the VM ends up (for a shutdown: the host it leaves)."""
    source: str | None = None
    """For a migration: the host it leaves."""
    detour: bool = False
    """A migration through a host that is not the VM's target, to break a cycle."""

    def describe(self) -> str:
        if self.kind == "migrate":
            via = " (detour)" if self.detour else ""
            return f"migrate {self.vm}: {self.source} → {self.host}{via}"
        if self.kind == "start":
            return f"start {self.vm} on {self.host}"
        return f"shut down {self.vm} on {self.host}"


def sequence(
    current: Mapping[str, str | None],
    target: Mapping[str, str | None],
    need: Mapping[str, int],
    capacity: Mapping[str, int],
) -> list[Step]:
    """Steps from `current` (vm → host, None when not running) to `target` (vm → host, None to
    stop it), each feasible when it runs: memory `need` per VM against host `capacity`.

    VMs absent from `target` are left as they are.
    """
    where = {vm: host for vm, host in current.items()}
    used = {host: 0 for host in capacity}
    for vm, host in where.items():
        if host is not None:
            used[host] = used.get(host, 0) + need[vm]
    steps: list[Step] = []

    def free(host: str) -> int:
        return capacity[host] - used.get(host, 0)

    for vm in sorted(target):
        if target[vm] is None and where.get(vm) is not None:
            host = where[vm]
            assert host is not None
            steps.append(Step("shutdown", vm, host))
            used[host] -= need[vm]
            where[vm] = None
    pending = sorted(
        vm for vm, host in target.items() if host is not None and where.get(vm) != host
    )
    detoured: set[str] = set()
    while pending:
        ready = [vm for vm in pending if free(_dest(target, vm)) >= need[vm]]
        if ready:
            # the first (by name) of those whose leaving lets the most others in
            vm = max(ready, key=lambda v: _unblocks(v, where, pending, target))
            steps.append(_move(vm, where.get(vm), _dest(target, vm)))
            _apply(vm, where, used, need, _dest(target, vm))
            pending.remove(vm)
            continue
        detour = _detour(pending, where, target, need, capacity, detoured)
        if detour is None:
            raise SequencingError(_stuck(pending, where, target, need))
        vm, host = detour
        detoured.add(vm)
        steps.append(Step("migrate", vm, host, where.get(vm), detour=True))
        _apply(vm, where, used, need, host)
    return steps


def _dest(target: Mapping[str, str | None], vm: str) -> str:
    host = target[vm]
    assert host is not None
    return host


def _move(vm: str, source: str | None, host: str) -> Step:
    if source is None:
        return Step("start", vm, host)
    return Step("migrate", vm, host, source)


def _apply(
    vm: str, where: dict[str, str | None], used: dict[str, int], need: Mapping[str, int], host: str
) -> None:
    source = where.get(vm)
    if source is not None:
        used[source] -= need[vm]
    used[host] = used.get(host, 0) + need[vm]
    where[vm] = host


def _unblocks(
    vm: str,
    where: Mapping[str, str | None],
    pending: list[str],
    target: Mapping[str, str | None],
) -> int:
    """How many other waiting VMs want the host this one leaves (so moving it first helps)."""
    source = where.get(vm)
    if source is None:
        return 0
    return sum(1 for other in pending if other != vm and target[other] == source)


def _detour(
    pending: list[str],
    where: Mapping[str, str | None],
    target: Mapping[str, str | None],
    need: Mapping[str, int],
    capacity: Mapping[str, int],
    detoured: set[str],
) -> tuple[str, str] | None:
    """A running waiting VM and a host with room that is neither its source nor its target,
    chosen so that its leaving lets another waiting VM in (a cycle broken)."""
    room = {host: capacity[host] - _used(host, where, need) for host in capacity}
    for vm in pending:
        source = where.get(vm)
        if source is None or vm in detoured:
            continue
        helps = any(
            other != vm and target[other] == source and room[source] + need[vm] >= need[other]
            for other in pending
        )
        if not helps:
            continue
        for host in sorted(capacity):
            if host not in (source, target[vm]) and room[host] >= need[vm]:
                return vm, host
    return None


def _used(host: str, where: Mapping[str, str | None], need: Mapping[str, int]) -> int:
    return sum(need[vm] for vm, h in where.items() if h == host)


def _stuck(
    pending: list[str],
    where: Mapping[str, str | None],
    target: Mapping[str, str | None],
    need: Mapping[str, int],
) -> str:
    parts = []
    for vm in pending:
        host = target[vm]
        parts.append(f"{vm} ({where.get(vm) or 'halted'} → {host}, needs {need[vm] >> 20} MiB)")
    return (
        "no order of single steps reaches the placement, and no host has room for a detour: "
        + "; ".join(parts)
        + ". Free memory on some host (or stop a VM) and plan again."
    )
