"""The pool and the services, as the placement solver sees them.

Independent of XAPI on purpose: another module maps XAPI records (``host.memory_total`` minus
overheads, ``VM.memory_static_max``, ``VCPUs_max``, ``other_config`` role keys) to these plain
frozen dataclasses, so the solver, the failover repack and the what-if report can be tested and
benchmarked without a pool. Memory is counted at ``static_max`` as XAPI HA does (reference §2.4,
§3.1), which is why a VM has a single memory figure.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from hypervisor.schedule import RestartSchedule, ScheduleError, schedules_from

GIB = 1024**3

RestartPolicy = Literal["restart", "best-effort", "none"]
DrainKind = Literal["dicom", "web", "database-primary", "database-replica", "object-store"]
RESTART_POLICIES: tuple[RestartPolicy, ...] = ("restart", "best-effort", "none")
DRAIN_KINDS: tuple[DrainKind, ...] = (
    "dicom",
    "web",
    "database-primary",
    "database-replica",
    "object-store",
)


class ClusterConfigError(ValueError):
    """cluster.toml (or a programmatic model) is wrong; the message names the key and the fix."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Host:
    """A blade: memory available to guests (after Xen and dom0) and physical CPUs."""

    name: str
    memory_bytes: int
    cpus: int
    uuid: str | None = None


@dataclass(frozen=True)
class Role:
    """A service role: how many VMs, how big, how they must be spread and restarted.

    ``anti_affinity`` names a group; roles may share one (the PostgreSQL primary and replica).
    ``keep_apart_when_degraded`` keeps the group apart even while a host is down (N+1 recourse),
    which a group with as many members as hosts cannot satisfy. ``restart`` is XAPI HA's
    priority: only "restart" VMs are counted in the N+1 plan, "best-effort" ones get one try.
    ``min_replicas`` is how many must run for the service to work (a quorum for MinIO).
    ``criticality`` is the fraction of a county's hourly downtime cost this service's outage
    represents (the what-if report multiplies by it).
    """

    name: str
    count: int
    memory_bytes: int
    vcpus: int
    fixed_memory: bool = False
    anti_affinity: str | None = None
    keep_apart_when_degraded: bool = False
    restart: RestartPolicy = "restart"
    migration_cost: float = 1.0
    counties: tuple[str, ...] = ()
    criticality: float = 1.0
    min_replicas: int = 1
    drain: DrainKind = "web"
    template: str = ""
    """The XenServer template its VMs are cloned from (`arkiv cluster apply`, rollouts)."""
    endpoint: str = ""
    """Where the service in each VM answers (`{name}` is the VM's name), for the drain and the
    health checks of restarts and rollouts: an arkiv node's base URL, MinIO's URL, or a
    PostgreSQL `postgresql://` URL."""


@dataclass(frozen=True)
class Vm:
    """One VM of a role, and the host it runs on now (None: not running, or new)."""

    name: str
    role: str
    memory_bytes: int
    vcpus: int
    host: str | None = None


@dataclass(frozen=True)
class Cluster:
    """Hosts, roles and VMs, plus what planning and the what-if report need.

    ``headroom_bytes`` is kept free on every host in normal operation *and* after a failure
    (migrations reserve memory on both ends; an overfull host cannot take a migration).
    ``restart_minutes`` per role is how long a restarted VM's service is away; ``repair_hours``
    how long a stopped service stays away (until the blade is back).
    """

    hosts: tuple[Host, ...]
    roles: tuple[Role, ...]
    vms: tuple[Vm, ...]
    headroom_bytes: int = 0
    downtime_nok_per_hour: Mapping[str, float] = field(default_factory=dict)
    restart_minutes: Mapping[str, float] = field(default_factory=dict)
    repair_hours: float = 4.0
    endpoints: Mapping[str, str] = field(default_factory=dict)
    """Per-VM endpoints that override the role's template (`[endpoints]` in cluster.toml)."""
    restart_schedules: tuple[RestartSchedule, ...] = ()

    def endpoint(self, vm_name: str) -> str | None:
        """Where `vm_name`'s service answers, or None when neither the VM nor its role says."""
        if vm_name in self.endpoints:
            return self.endpoints[vm_name]
        vm = next((v for v in self.vms if v.name == vm_name), None)
        if vm is None or not self.role(vm.role).endpoint:
            return None
        return self.role(vm.role).endpoint.replace("{name}", vm_name)

    def role(self, name: str) -> Role:
        """The role called `name`."""
        for role in self.roles:
            if role.name == name:
                return role
        raise ClusterConfigError(f"role {name!r}", "no such role")

    def host(self, name: str) -> Host:
        """The host called `name`."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise ClusterConfigError(f"host {name!r}", "no such host")

    def capacity(self, host: Host) -> int:
        """Memory the planner may fill on `host`: guest memory minus the headroom."""
        return host.memory_bytes - self.headroom_bytes

    def vm_restart_policy(self, vm: Vm) -> RestartPolicy:
        return self.role(vm.role).restart

    def with_current(self, placement: Mapping[str, str | None]) -> Cluster:
        """The same cluster with the VMs' current hosts replaced (e.g. by a plan)."""
        vms = tuple(
            Vm(v.name, v.role, v.memory_bytes, v.vcpus, placement.get(v.name, v.host))
            for v in self.vms
        )
        return replace(self, vms=vms)


def group_limit(group_size: int, hosts: int) -> tuple[int, str]:
    """Members of an anti-affinity group allowed per host, and which rule applies.

    A group no larger than the pool is strict (≤1 per host); a larger one is spread evenly
    (≤ceil(|G|/|H|) per host), as XenServer's own groups fall back to doing.
    """
    if group_size <= hosts:
        return 1, "strict"
    return math.ceil(group_size / max(hosts, 1)), "spread"


def _get(table: Mapping[str, Any], key: str, where: str, kind: type, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ClusterConfigError(f"{where}.{key}", "missing")
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ClusterConfigError(
            f"{where}.{key}", f"must be {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _gib(table: Mapping[str, Any], key: str, where: str, default: Any = ...) -> int:
    value = float(_get(table, key, where, float, default))
    if value < 0:
        raise ClusterConfigError(f"{where}.{key}", f"must not be negative, got {value}")
    return round(value * GIB)


def _host(table: Mapping[str, Any], where: str) -> Host:
    cpus = _get(table, "cpus", where, int)
    if cpus < 1:
        raise ClusterConfigError(f"{where}.cpus", "must be at least 1")
    uuid = _get(table, "uuid", where, str, None)
    return Host(_get(table, "name", where, str), _gib(table, "memory_gib", where), cpus, uuid)


def _role(table: Mapping[str, Any], where: str) -> tuple[Role, list[str] | None, float | None]:
    name = _get(table, "name", where, str)
    where = f"role {name!r}"
    restart = _get(table, "restart", where, str, "restart")
    if restart not in RESTART_POLICIES:
        raise ClusterConfigError(f"{where}.restart", f"must be one of {RESTART_POLICIES}")
    drain = _get(table, "drain", where, str)
    if drain not in DRAIN_KINDS:
        raise ClusterConfigError(f"{where}.drain", f"must be one of {DRAIN_KINDS}")
    count = _get(table, "count", where, int)
    if count < 0:
        raise ClusterConfigError(f"{where}.count", "must not be negative")
    counties = _get(table, "counties", where, list, [])
    if not all(isinstance(c, str) for c in counties):
        raise ClusterConfigError(f"{where}.counties", "must be a list of county names")
    names = _get(table, "names", where, list, None)
    if names is not None and (len(names) != count or not all(isinstance(n, str) for n in names)):
        raise ClusterConfigError(f"{where}.names", f"must list exactly {count} VM names")
    role = Role(
        name=name,
        count=count,
        memory_bytes=_gib(table, "memory_gib", where),
        vcpus=_get(table, "vcpus", where, int),
        fixed_memory=_get(table, "fixed_memory", where, bool, False),
        anti_affinity=_get(table, "anti_affinity", where, str, None),
        keep_apart_when_degraded=_get(table, "keep_apart_when_degraded", where, bool, False),
        restart=cast(RestartPolicy, restart),
        migration_cost=_get(table, "migration_cost", where, float, 1.0),
        counties=tuple(counties),
        criticality=_get(table, "criticality", where, float, 1.0),
        min_replicas=_get(table, "min_replicas", where, int, 1),
        drain=cast(DrainKind, drain),
        template=_get(table, "template", where, str, f"arkiv-{name}"),
        endpoint=_get(table, "endpoint", where, str, ""),
    )
    return role, names, _get(table, "restart_minutes", where, float, None)


def load_cluster(path: Path | str) -> Cluster:
    """Read cluster.toml; every mistake raises ClusterConfigError naming the key."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ClusterConfigError(str(path), f"not valid TOML: {exc}") from exc
    return cluster_from_dict(doc)


def cluster_from_dict(doc: Mapping[str, Any]) -> Cluster:
    """Build a Cluster from the parsed TOML document (see hypervisor/cluster.toml)."""
    host_tables = _get(doc, "host", "cluster", list)
    hosts = tuple(_host(t, f"host[{i}]") for i, t in enumerate(host_tables))
    if len({h.name for h in hosts}) != len(hosts):
        raise ClusterConfigError("host", "host names must be unique")
    current = _get(doc, "current", "cluster", dict, {})
    for vm_name, host_name in current.items():
        if not isinstance(host_name, str) or host_name not in {h.name for h in hosts}:
            raise ClusterConfigError(f"current.{vm_name}", f"unknown host {host_name!r}")
    roles: list[Role] = []
    vms: list[Vm] = []
    restart_minutes: dict[str, float] = {}
    for i, table in enumerate(_get(doc, "role", "cluster", list)):
        role, names, minutes = _role(table, f"role[{i}]")
        roles.append(role)
        if minutes is not None:
            restart_minutes[role.name] = minutes
        for n in range(role.count):
            name = names[n] if names else f"{role.name}-{n + 1}"
            vms.append(Vm(name, role.name, role.memory_bytes, role.vcpus, current.get(name)))
    if len({r.name for r in roles}) != len(roles):
        raise ClusterConfigError("role", "role names must be unique")
    if len({v.name for v in vms}) != len(vms):
        raise ClusterConfigError("role.names", "VM names must be unique across roles")
    unknown = set(current) - {v.name for v in vms}
    if unknown:
        raise ClusterConfigError(f"current.{sorted(unknown)[0]}", "no VM of that name")
    costs = _get(doc, "downtime_nok_per_hour", "cluster", dict, {})
    for county, nok in costs.items():
        if not isinstance(nok, int | float) or isinstance(nok, bool):
            raise ClusterConfigError(f"downtime_nok_per_hour.{county}", "must be a number")
    for role in roles:
        for county in role.counties:
            if county not in costs:
                raise ClusterConfigError(
                    f"role {role.name!r}.counties", f"{county!r} has no downtime_nok_per_hour"
                )
    endpoints = _get(doc, "endpoints", "cluster", dict, {})
    for vm_name, url in endpoints.items():
        if vm_name not in {v.name for v in vms}:
            raise ClusterConfigError(f"endpoints.{vm_name}", "no VM of that name")
        if not isinstance(url, str) or "://" not in url:
            raise ClusterConfigError(f"endpoints.{vm_name}", f"must be a URL, got {url!r}")
    return Cluster(
        hosts=hosts,
        roles=tuple(roles),
        vms=tuple(vms),
        headroom_bytes=_gib(doc, "headroom_gib", "cluster", 0.0),
        downtime_nok_per_hour={k: float(v) for k, v in costs.items()},
        restart_minutes=restart_minutes,
        repair_hours=_get(doc, "repair_hours", "cluster", float, 4.0),
        endpoints=dict(endpoints),
        restart_schedules=_schedules(doc, roles),
    )


def _schedules(doc: Mapping[str, Any], roles: list[Role]) -> tuple[RestartSchedule, ...]:
    try:
        return schedules_from(doc, [r.name for r in roles])
    except ScheduleError as error:
        raise ClusterConfigError("restart_schedule", str(error)) from error
