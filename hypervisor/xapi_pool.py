"""The pool as XAPI reports it, read through the real XenAPI SDK.

Everything `arkiv cluster` decides starts from one read of the pool: hosts with the memory the
archive's VMs may use, the archive's VMs (recognised by `other_config["arkiv:role"]`, never by
name, so an operator may rename them), templates and snapshots. References (`OpaqueRef:…`) are
valid only within this session; UUIDs are what is kept.

Memory is counted as XAPI's HA planner counts it: a VM needs `memory_static_max` plus its
`memory_overhead`; a host offers `memory_total` less the host's own overhead and less what every
VM that is not the archive's (dom0 above all) holds (`memory_dynamic_min` + overhead, as
`host.compute_free_memory` counts resident and scheduled VMs).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any

import XenAPI

from hypervisor.model import Cluster, Host

ROLE_KEY = "arkiv:role"
NAME_KEY = "arkiv:name"
"""`other_config` keys that mark a VM as one of the archive's, and which one."""
TEMPLATE_KEY = "arkiv:template"
"""The template a VM was cloned from (a rollout skips VMs already on its template)."""
NULL_REF = "OpaqueRef:NULL"


class XapiError(RuntimeError):
    """XAPI refused a call; `code` and `params` are its ErrorDescription."""

    def __init__(self, call: str, details: list[str]) -> None:
        self.code = details[0] if details else "UNKNOWN"
        self.params = details[1:]
        super().__init__(f"{call} failed: {self.code} {' '.join(self.params)}".strip())


@dataclass(frozen=True)
class ObservedHost:
    ref: str
    uuid: str
    name: str
    live: bool
    enabled: bool
    memory_total: int
    cpus: int
    memory_for_archive: int
    """What the archive's VMs may use: total less the host's overhead and other VMs' memory."""


@dataclass(frozen=True)
class ObservedVm:
    ref: str
    uuid: str
    name_label: str
    role: str
    name: str
    """The archive's own name for the VM (`dicom-1`), from other_config."""
    power_state: str
    host: str | None
    """Name of the host it is resident on (or scheduled to be), None when halted."""
    memory: int
    """static_max + overhead, what it needs on a host."""
    vcpus: int
    ha_restart_priority: str
    groups: tuple[str, ...]
    snapshots: tuple[str, ...]
    unfinished: bool = False
    """Still a template: a clone that an interrupted run marked but did not provision."""
    other_config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ObservedPool:
    hosts: dict[str, ObservedHost]
    """By host name."""
    vms: dict[str, ObservedVm]
    """The archive's VMs by their archive name."""
    templates: dict[str, str]
    """Template name → ref (templates that are not snapshots)."""
    pool_ref: str
    ha_enabled: bool

    def host_by_ref(self, ref: str) -> ObservedHost | None:
        return next((h for h in self.hosts.values() if h.ref == ref), None)


@contextmanager
def connect(url: str, username: str, password: str) -> Iterator[Any]:
    """A logged-in XenAPI session, logged out afterwards. The SDK logs in again by itself when
    XAPI says SESSION_INVALID (a pool master restart)."""
    session = XenAPI.Session(url)
    try:
        session.xenapi.login_with_password(username, password, "2.0", "arkiv cluster")
    except XenAPI.Failure as failure:
        raise XapiError("session.login_with_password", list(failure.details)) from failure
    try:
        yield session.xenapi
    finally:
        # logging out of a pool that went away must not hide the real error
        with suppress(Exception):
            session.xenapi.session.logout()


def call(api: Any, method: str, *args: Any) -> Any:
    """`api.<method>(*args)` with XAPI's Failure turned into XapiError."""
    target = api
    for part in method.split("."):
        target = getattr(target, part)
    try:
        return target(*args)
    except XenAPI.Failure as failure:
        raise XapiError(method, list(failure.details)) from failure


def read_pool(api: Any) -> ObservedPool:
    """One consistent-enough read of hosts, metrics, VMs and the pool record."""
    hosts = call(api, "host.get_all_records")
    metrics = call(api, "host_metrics.get_all_records")
    vms = call(api, "VM.get_all_records")
    pools = call(api, "pool.get_all_records")
    pool_ref, pool = next(iter(pools.items()))
    archive_vms = {
        ref: vm
        for ref, vm in vms.items()
        if not vm["is_a_template"]
        and not vm["is_control_domain"]
        and ROLE_KEY in vm["other_config"]
    }
    held_by_others: dict[str, int] = {}
    for ref, vm in vms.items():
        if ref in archive_vms or vm["is_a_template"]:
            continue
        where = _placed_on(vm)
        if where is not None:
            need = int(vm["memory_dynamic_min"]) + int(vm["memory_overhead"])
            held_by_others[where] = held_by_others.get(where, 0) + need
    observed_hosts: dict[str, ObservedHost] = {}
    for ref, host in hosts.items():
        metric = metrics.get(host["metrics"], {})
        total = int(metric.get("memory_total", "0"))
        available = total - int(host["memory_overhead"]) - held_by_others.get(ref, 0)
        observed_hosts[host["name_label"]] = ObservedHost(
            ref=ref,
            uuid=host["uuid"],
            name=host["name_label"],
            live=bool(metric.get("live", False)),
            enabled=bool(host["enabled"]),
            memory_total=total,
            cpus=int(host["cpu_info"].get("cpu_count", "0")),
            memory_for_archive=max(0, available),
        )
    host_names = {h.ref: h.name for h in observed_hosts.values()}
    observed_vms: dict[str, ObservedVm] = {}
    for ref, vm in archive_vms.items():
        other = dict(vm["other_config"])
        name = other.get(NAME_KEY) or vm["name_label"]
        where = _placed_on(vm)
        observed_vms[name] = ObservedVm(
            ref=ref,
            uuid=vm["uuid"],
            name_label=vm["name_label"],
            role=other[ROLE_KEY],
            name=name,
            power_state=vm["power_state"],
            host=host_names.get(where) if where else None,
            memory=int(vm["memory_static_max"]) + int(vm["memory_overhead"]),
            vcpus=int(vm["VCPUs_max"]),
            ha_restart_priority=vm.get("ha_restart_priority", ""),
            groups=tuple(vm.get("groups", ())),
            snapshots=tuple(vm.get("snapshots", ())),
            unfinished=bool(vm["is_a_template"]),
            other_config=other,
        )
    templates = {
        vm["name_label"]: ref
        for ref, vm in vms.items()
        if vm["is_a_template"] and not vm["is_a_snapshot"] and ROLE_KEY not in vm["other_config"]
    }
    return ObservedPool(
        hosts=observed_hosts,
        vms=observed_vms,
        templates=templates,
        pool_ref=pool_ref,
        ha_enabled=bool(pool.get("ha_enabled", False)),
    )


def _placed_on(vm: dict[str, Any]) -> str | None:
    """The host a VM holds memory on: where it runs, else where it is about to start."""
    resident = str(vm.get("resident_on", NULL_REF))
    if vm["power_state"] != "Halted" and resident not in ("", NULL_REF):
        return resident
    scheduled = str(vm.get("scheduled_to_be_resident_on", NULL_REF))
    if scheduled not in ("", NULL_REF):
        return scheduled
    return None


def cluster_on_pool(cluster: Cluster, pool: ObservedPool) -> Cluster:
    """The cluster file's services on the pool's live, enabled hosts (their memory and CPUs as
    XAPI reports them), starting from where the VMs run now."""
    hosts = tuple(
        Host(h.name, h.memory_for_archive, h.cpus, h.uuid)
        for h in sorted(pool.hosts.values(), key=lambda h: h.name)
        if h.live and h.enabled
    )
    current = {
        name: vm.host
        for name, vm in pool.vms.items()
        if vm.power_state == "Running" and vm.host is not None
    }
    return replace(cluster, hosts=hosts).with_current(current)
