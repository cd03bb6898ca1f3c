"""Exact placement of the service VMs on the pool with scipy's MILP (HiGHS).

Model (reference §3.1, §3.3). VMs that are interchangeable — same role, memory and vCPUs —
form a *class*, and the variables are integers ``n[c,h]``: how many VMs of class c run on host
h. This is an exact reformulation of the usual binaries ``x[v,h]`` that removes the symmetry:
given the counts, the fewest VMs of c that must leave h is ``max(0, cur[c,h] − n[c,h])``
(``cur`` = how many run there now), modelled by a continuous ``s[c,h] ≥ cur[c,h] − n[c,h]``
with the class's migration cost in the objective; the plan keeps the VMs already on h (in name
order) and moves only the surplus. So the 4-blade deployment solves in milliseconds and
200 hosts × 2,000 VMs stays a model of a few thousand integers.

Constraints:

* every VM on exactly one host it fits (memory, and ``VCPUs_max ≤ cpus`` as xapi requires);
* memory per host ≤ guest memory − headroom;
* anti-affinity per group: ≤1 per host ("strict"), or ≤ceil(|G|/|H|) when the group is larger
  than the pool ("spread"), see `hypervisor.model.group_limit`;
* N+1, "exact" mode: for every failed host f, recourse integers ``y[f,c,h]`` repack the
  "restart" VMs of f onto the other hosts within their memory, with groups marked
  ``keep_apart_when_degraded`` (the PostgreSQL pair) still ≤1 per host;
* N+1, "aggregate" mode (used when the recourse model would be too large): for every f, the
  "restart" memory on f ≤ the spare memory of the other hosts. It is a relaxation (it ignores
  fragmentation), so every plan is then checked per failure with XAPI's own
  biggest-fit-decreasing repack (`hypervisor.failover`) and `Placement.n_plus_one_verified`
  says whether it held.

Objective, lexicographic in two solves: first the fewest weighted migrations (Σ migration_cost
over moved VMs, so stateful VMs move last), then — with that optimum fixed as a constraint — the
lowest maximum memory utilisation over hosts (balance). Two solves rather than one weighted sum
so no weight has to be proven dominating.

Determinism: hosts, classes and VMs are sorted by name, HiGHS runs with fixed options, and VMs
are expanded from class counts in name order. A run that hits the time limit can depend on
machine speed; the status then says "feasible (gap x%)" with the bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from hypervisor.failover import verify_n_plus_one
from hypervisor.model import GIB, Cluster, Host, Vm, group_limit

NPlusOne = Literal["auto", "exact", "aggregate", "off"]
EXACT_RECOURSE_LIMIT = 60_000  # recourse variables above which "auto" aggregates N+1


class PlacementInfeasible(Exception):
    """No placement satisfies the constraints; `family` names which one and the message says
    what an operator can change."""

    family = "unknown"


class VmTooLarge(PlacementInfeasible):
    family = "vm-larger-than-any-host"


class TotalMemoryExceeded(PlacementInfeasible):
    family = "total-memory"


class AntiAffinityTooLarge(PlacementInfeasible):
    family = "anti-affinity-group-larger-than-hosts"


class AntiAffinityMemory(PlacementInfeasible):
    family = "anti-affinity-with-memory"


class CapacityInfeasible(PlacementInfeasible):
    family = "memory-packing"


class NPlusOneInfeasible(PlacementInfeasible):
    family = "n-plus-one"

    def __init__(self, message: str, host: str | None) -> None:
        super().__init__(message)
        self.host = host


class DegradedApartInfeasible(PlacementInfeasible):
    family = "keep-apart-when-degraded"


class SolverFailed(PlacementInfeasible):
    family = "solver"


@dataclass(frozen=True)
class Move:
    vm: str
    source: str
    target: str
    cost: float


@dataclass(frozen=True)
class Placement:
    """A plan: where each VM runs, and how good the solver could prove it to be.

    ``objective``/``bound``/``gap`` are those of the first (migration) stage;
    ``max_utilisation``/``balance_bound`` those of the balance stage; ``gap`` in ``status`` is
    the larger relative gap of the two.
    """

    assignment: Mapping[str, str]
    status: str  # "optimal" | "feasible (gap x%)" | "infeasible"
    objective: float  # weighted migrations
    bound: float
    max_utilisation: float
    balance_bound: float
    gap: float
    moves: tuple[Move, ...]
    solve_seconds: float
    n_plus_one: str  # mode used: "exact" | "aggregate" | "off"
    n_plus_one_verified: bool  # BFD repack found room for every "restart" VM, every failure
    unverified_failures: tuple[str, ...] = ()
    error: PlacementInfeasible | None = None
    stats: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Class:
    role: str
    vms: tuple[Vm, ...]
    memory: int
    vcpus: int
    current: Mapping[str, int]  # host → how many of the class run there now
    cost: float
    restartable: bool
    group: str | None


@dataclass
class _Model:
    """Variable layout and constraint rows of one MILP."""

    cols: int = 0
    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    integral: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    cols_idx: list[int] = field(default_factory=list)
    vals: list[float] = field(default_factory=list)
    row_lo: list[float] = field(default_factory=list)
    row_hi: list[float] = field(default_factory=list)

    def var(self, lo: float, hi: float, integer: bool) -> int:
        self.lower.append(lo)
        self.upper.append(hi)
        self.integral.append(1 if integer else 0)
        self.cols += 1
        return self.cols - 1

    def row(self, terms: Sequence[tuple[int, float]], lo: float, hi: float) -> None:
        r = len(self.row_lo)
        for col, val in terms:
            self.rows.append(r)
            self.cols_idx.append(col)
            self.vals.append(val)
        self.row_lo.append(lo)
        self.row_hi.append(hi)


def _classes(cluster: Cluster) -> list[_Class]:
    hosts = {h.name for h in cluster.hosts}
    grouped: dict[tuple[str, int, int], list[Vm]] = {}
    for vm in sorted(cluster.vms, key=lambda v: v.name):
        grouped.setdefault((vm.role, vm.memory_bytes, vm.vcpus), []).append(vm)
    out = []
    for (role_name, memory, vcpus), vms in sorted(grouped.items()):
        role = cluster.role(role_name)
        current: dict[str, int] = {}
        for vm in vms:
            if vm.host in hosts:
                current[vm.host] = current.get(vm.host, 0) + 1
        out.append(
            _Class(
                role_name,
                tuple(vms),
                memory,
                vcpus,
                current,
                role.migration_cost,
                role.restart == "restart",
                role.anti_affinity,
            )
        )
    return out


@dataclass(frozen=True)
class _Relax:
    anti_affinity: bool = True
    n_plus_one: str = "exact"
    only_failure: str | None = None
    degraded_apart: bool = True
    max_moves: float | None = None  # stage 2: weighted moves ≤ this
    balance: bool = False
    margin: float = 0.0  # aggregate N+1: spare kept beyond the restart memory (fragmentation)


def _build(
    cluster: Cluster, hosts: list[Host], classes: list[_Class], relax: _Relax
) -> tuple[_Model, dict[tuple[int, int], int], np.ndarray, float, int]:
    m = _Model()
    cap = [cluster.capacity(h) for h in hosts]
    scale = float(GIB)
    n: dict[tuple[int, int], int] = {}
    for ci, c in enumerate(classes):
        size = len(c.vms)
        for hi, h in enumerate(hosts):
            if c.memory <= cap[hi] and c.vcpus <= h.cpus:
                n[ci, hi] = m.var(0, size, True)
        m.row([(n[ci, hi], 1.0) for hi in range(len(hosts)) if (ci, hi) in n], size, size)
    for hi in range(len(hosts)):
        terms = [(n[ci, hi], c.memory / scale) for ci, c in enumerate(classes) if (ci, hi) in n]
        m.row(terms, -np.inf, cap[hi] / scale)
    groups: dict[str, list[int]] = {}
    for ci, c in enumerate(classes):
        if c.group:
            groups.setdefault(c.group, []).append(ci)
    apart = {
        r.anti_affinity
        for r in cluster.roles
        if r.anti_affinity and r.keep_apart_when_degraded and relax.degraded_apart
    }
    if relax.anti_affinity:
        for _group, members in sorted(groups.items()):
            size = sum(len(classes[ci].vms) for ci in members)
            limit, _ = group_limit(size, len(hosts))
            for hi in range(len(hosts)):
                terms = [(n[ci, hi], 1.0) for ci in members if (ci, hi) in n]
                if terms:
                    m.row(terms, -np.inf, limit)
    if relax.n_plus_one == "exact":
        for fi in range(len(hosts)):
            if relax.only_failure is not None and hosts[fi].name != relax.only_failure:
                continue
            y: dict[tuple[int, int], int] = {}
            for ci, c in enumerate(classes):
                if not c.restartable or (ci, fi) not in n:
                    continue
                for hi in range(len(hosts)):
                    if hi != fi and (ci, hi) in n:
                        y[ci, hi] = m.var(0, len(c.vms), True)
                terms = [(y[ci, hi], 1.0) for hi in range(len(hosts)) if (ci, hi) in y]
                m.row([*terms, (n[ci, fi], -1.0)], 0, 0)
            for hi in range(len(hosts)):
                if hi == fi:
                    continue
                terms = [
                    (n[ci, hi], c.memory / scale) for ci, c in enumerate(classes) if (ci, hi) in n
                ]
                terms += [
                    (y[ci, hi], c.memory / scale) for ci, c in enumerate(classes) if (ci, hi) in y
                ]
                m.row(terms, -np.inf, cap[hi] / scale)
                for group in sorted(apart):
                    members = groups.get(group, [])
                    terms = [(n[ci, hi], 1.0) for ci in members if (ci, hi) in n]
                    terms += [(y[ci, hi], 1.0) for ci in members if (ci, hi) in y]
                    if terms:
                        m.row(terms, -np.inf, 1)
    elif relax.n_plus_one == "aggregate":
        total_cap = sum(cap)
        for fi in range(len(hosts)):
            if relax.only_failure is not None and hosts[fi].name != relax.only_failure:
                continue
            # restart memory on f + used memory elsewhere ≤ capacity elsewhere
            terms = []
            for (ci, hi), col in n.items():
                c = classes[ci]
                if hi != fi or c.restartable:
                    terms.append((col, c.memory / scale))
            m.row(terms, -np.inf, (total_cap - cap[fi] - relax.margin) / scale)
    # weighted moves = Σ cost·s[c,h], s[c,h] ≥ cur[c,h] − n[c,h] (VMs that must leave h)
    move_const = 0.0
    host_index = {h.name: i for i, h in enumerate(hosts)}
    stay_terms: list[tuple[int, float]] = []
    for ci, c in enumerate(classes):
        for host_name, now in sorted(c.current.items()):
            hi = host_index[host_name]
            s = m.var(0, now, False)
            stay_terms.append((s, c.cost))
            if (ci, hi) in n:
                m.row([(s, 1.0), (n[ci, hi], 1.0)], now, np.inf)
            else:
                m.row([(s, 1.0)], now, np.inf)
    t = m.var(0, np.inf, False)
    if relax.balance:
        for hi in range(len(hosts)):
            terms = [(n[ci, hi], c.memory / scale) for ci, c in enumerate(classes) if (ci, hi) in n]
            m.row([*terms, (t, -cap[hi] / scale)], -np.inf, 0)
    if relax.max_moves is not None:
        m.row(stay_terms, -np.inf, relax.max_moves - move_const + 1e-6)
    cost = np.zeros(m.cols)
    if relax.balance:
        cost[t] = 1.0
    else:
        for col, val in stay_terms:
            cost[col] += val
    return m, n, cost, move_const, t


def _run(m: _Model, cost: np.ndarray, seconds: float) -> Any:
    a = coo_array(
        (np.array(m.vals), (np.array(m.rows), np.array(m.cols_idx))),
        shape=(len(m.row_lo), m.cols),
    ).tocsr()
    constraints = [LinearConstraint(a, np.array(m.row_lo), np.array(m.row_hi))] if m.row_lo else []
    return milp(
        cost,
        constraints=constraints,
        integrality=np.array(m.integral),
        bounds=Bounds(np.array(m.lower), np.array(m.upper)),
        options={"time_limit": max(seconds, 0.05), "presolve": True, "mip_rel_gap": 1e-6},
    )


def _feasible(cluster: Cluster, relax: _Relax, seconds: float) -> bool | None:
    """True/False when HiGHS decided feasibility, None when it ran out of time."""
    hosts = sorted(cluster.hosts, key=lambda h: h.name)
    m, _, cost, _, _ = _build(cluster, hosts, _classes(cluster), relax)
    res = _run(m, cost * 0, seconds)
    if res.x is not None:
        return True
    return False if res.status == 2 else None


def _gib(b: float) -> str:
    return f"{b / GIB:.0f} GiB"


def diagnose(cluster: Cluster, mode: str, seconds: float = 5.0) -> PlacementInfeasible:
    """Name the constraint family that makes the placement infeasible.

    Cheap counting checks first (a VM larger than every host, total memory, groups larger than
    the pool), then MILPs relaxing one family at a time: without N+1 (memory packing and
    anti-affinity), N+1 for each host alone, N+1 without keeping groups apart when degraded.
    """
    hosts = sorted(cluster.hosts, key=lambda h: h.name)
    biggest = max((cluster.capacity(h) for h in hosts), default=0)
    most_cpus = max((h.cpus for h in hosts), default=0)
    for vm in sorted(cluster.vms, key=lambda v: v.name):
        if vm.memory_bytes > biggest or vm.vcpus > most_cpus:
            return VmTooLarge(
                f"VM {vm.name} needs {_gib(vm.memory_bytes)} and {vm.vcpus} vCPUs, but the "
                f"largest host offers {_gib(biggest)} (after headroom) and {most_cpus} CPUs: "
                f"shrink role {vm.role!r} or add a larger host"
            )
    need = sum(v.memory_bytes for v in cluster.vms)
    have = sum(cluster.capacity(h) for h in hosts)
    if need > have:
        return TotalMemoryExceeded(
            f"the VMs need {_gib(need)} but the hosts offer {_gib(have)} after "
            f"{_gib(cluster.headroom_bytes)} headroom each: add a host, lower the headroom or "
            f"shrink roles by {_gib(need - have)}"
        )
    groups: dict[str, int] = {}
    for vm in cluster.vms:
        group = cluster.role(vm.role).anti_affinity
        if group:
            groups[group] = groups.get(group, 0) + 1
    apart = {r.anti_affinity for r in cluster.roles if r.keep_apart_when_degraded}
    for group, size in sorted(groups.items()):
        if group in apart and size > len(hosts):
            return AntiAffinityTooLarge(
                f"anti-affinity group {group!r} has {size} VMs that must stay on separate hosts, "
                f"but the pool has {len(hosts)} hosts: add hosts or reduce the group"
            )
    base = _Relax(n_plus_one="off")
    if _feasible(cluster, base, seconds) is False:
        if _feasible(cluster, _Relax(n_plus_one="off", anti_affinity=False), seconds):
            return AntiAffinityMemory(
                "the anti-affinity groups cannot be kept apart within the hosts' memory: "
                "relax a group to spread, add a host, or shrink the grouped roles"
            )
        return CapacityInfeasible(
            "the VMs do not pack into the hosts' memory even without N+1 (too little room per "
            "host for the large VMs): add a host or lower the headroom"
        )
    if mode == "off":
        return SolverFailed("the solver reported infeasible but no relaxation explains it")
    for group, size in sorted(groups.items()):
        if group in apart and size > len(hosts) - 1:
            return DegradedApartInfeasible(
                f"group {group!r} has {size} VMs kept apart when degraded; after a host fails "
                f"only {len(hosts) - 1} hosts remain: add a host or clear "
                f"keep_apart_when_degraded"
            )
    for host in hosts:
        if _feasible(cluster, _Relax(n_plus_one=mode, only_failure=host.name), seconds) is False:
            if _feasible(
                cluster,
                _Relax(n_plus_one=mode, only_failure=host.name, degraded_apart=False),
                seconds,
            ):
                return DegradedApartInfeasible(
                    f"when {host.name} fails, the groups kept apart when degraded cannot be "
                    f"restarted on separate hosts with enough memory: add memory or clear "
                    f"keep_apart_when_degraded"
                )
            return NPlusOneInfeasible(
                f'N+1 memory for host {host.name}: its "restart" VMs cannot be restarted on the '
                f"other hosts' spare memory; add a host, lower the headroom, or mark some roles "
                f"best-effort",
                host.name,
            )
    if _feasible(cluster, _Relax(n_plus_one=mode, degraded_apart=False), seconds):
        return DegradedApartInfeasible(
            "keeping groups apart in degraded mode is what cannot be met together with N+1: add "
            "memory or clear keep_apart_when_degraded"
        )
    return NPlusOneInfeasible(
        "N+1 cannot hold for every host failure at once (each alone can): add a host or lower "
        "the headroom",
        None,
    )


def _gap(obj: float, bound: float) -> float:
    if abs(obj - bound) <= 1e-9:
        return 0.0
    return abs(obj - bound) / max(abs(obj), 1e-9)


def solve(
    cluster: Cluster,
    time_limit_seconds: float = 10.0,
    n_plus_one: NPlusOne = "auto",
    raise_on_infeasible: bool = True,
) -> Placement:
    """Plan where every VM runs. Raises a PlacementInfeasible subclass naming the constraint
    family that cannot be met (or returns status "infeasible" with `error` set when
    `raise_on_infeasible` is False).

    In aggregate N+1 mode, a plan that fails the per-failure repack is solved once more with
    a fragmentation margin (the largest "restart" VM's memory kept spare beyond the restart
    memory of each host); the second plan is returned only if it verifies, and either way
    `n_plus_one_verified` tells the truth about the plan returned.
    """
    started = time.perf_counter()
    plan = _solve_once(cluster, time_limit_seconds, n_plus_one, raise_on_infeasible, 0.0)
    if plan.n_plus_one != "aggregate" or plan.n_plus_one_verified or plan.error is not None:
        return plan
    margin = max(
        (v.memory_bytes for v in cluster.vms if cluster.role(v.role).restart == "restart"),
        default=0,
    )
    left = time_limit_seconds - (time.perf_counter() - started)
    if margin == 0 or left <= 0.5:
        return plan
    retry = _solve_once(cluster, left, n_plus_one, False, float(margin))
    if retry.error is None and retry.n_plus_one_verified:
        return replace(retry, solve_seconds=time.perf_counter() - started)
    return replace(plan, solve_seconds=time.perf_counter() - started)


def _solve_once(
    cluster: Cluster,
    time_limit_seconds: float,
    n_plus_one: NPlusOne,
    raise_on_infeasible: bool,
    margin: float,
) -> Placement:
    started = time.perf_counter()
    hosts = sorted(cluster.hosts, key=lambda h: h.name)
    classes = _classes(cluster)
    mode = n_plus_one
    if mode == "auto":
        recourse = sum(len(hosts) - 1 for c in classes if c.restartable) * len(hosts)
        mode = "exact" if recourse <= EXACT_RECOURSE_LIMIT else "aggregate"
    pre = _precheck(cluster, hosts)
    if pre is not None:
        return _infeasible(pre, mode, started, raise_on_infeasible)
    m1, n, cost1, move_const, _ = _build(
        cluster, hosts, classes, _Relax(n_plus_one=mode, margin=margin)
    )
    res1 = _run(m1, cost1, time_limit_seconds * 0.5)
    if res1.x is None:
        if res1.status == 2:
            error = diagnose(cluster, mode)
        else:
            error = SolverFailed(
                f"no placement found within {time_limit_seconds:.1f} s ({res1.message}): raise "
                f"the time limit"
            )
        return _infeasible(error, mode, started, raise_on_infeasible)
    moves_obj = float(res1.fun) + move_const
    dual = getattr(res1, "mip_dual_bound", None)
    moves_bound = (float(res1.fun) if dual is None or np.isnan(dual) else float(dual)) + move_const
    moves_bound = min(moves_bound, moves_obj)
    remaining = max(time_limit_seconds - (time.perf_counter() - started), 0.1)
    m2, n2, cost2, _, _ = _build(
        cluster,
        hosts,
        classes,
        _Relax(n_plus_one=mode, max_moves=moves_obj, balance=True, margin=margin),
    )
    res2 = _run(m2, cost2, remaining)
    res, counts_of = (res2, n2) if res2.x is not None else (res1, n)
    x = res.x
    assignment = _expand(hosts, classes, counts_of, x)
    usage = {h.name: 0 for h in hosts}
    for vm in cluster.vms:
        usage[assignment[vm.name]] += vm.memory_bytes
    util = max((usage[h.name] / cluster.capacity(h) for h in hosts), default=0.0)
    if res2.x is not None:
        dual2 = getattr(res2, "mip_dual_bound", None)
        balance_bound = util if dual2 is None or np.isnan(dual2) else min(float(dual2), util)
    else:
        balance_bound = 0.0
    roles = {r.name: r for r in cluster.roles}
    moves = tuple(
        Move(v.name, v.host, assignment[v.name], roles[v.role].migration_cost)
        for v in sorted(cluster.vms, key=lambda v: v.name)
        if v.host is not None and v.host in usage and v.host != assignment[v.name]
    )
    moves_obj = sum(mv.cost for mv in moves)
    moves_bound = min(moves_bound, moves_obj)
    gap = max(_gap(moves_obj, moves_bound), _gap(util, balance_bound))
    status = "optimal" if gap <= 1e-6 else f"feasible (gap {gap * 100:.2f}%)"
    verified_failures: tuple[str, ...] = ()
    verified = True
    if mode != "off":
        results = verify_n_plus_one(cluster, assignment)
        verified_failures = tuple(h for h, f in sorted(results.items()) if not f.protected_ok)
        verified = not verified_failures
    return Placement(
        assignment=assignment,
        status=status,
        objective=moves_obj,
        bound=moves_bound,
        max_utilisation=util,
        balance_bound=balance_bound,
        gap=gap,
        moves=moves,
        solve_seconds=time.perf_counter() - started,
        n_plus_one=mode,
        n_plus_one_verified=verified,
        unverified_failures=verified_failures,
        stats={
            "variables": m2.cols,
            "rows": len(m2.row_lo),
            "classes": len(classes),
            "anti_affinity": group_rules(cluster),
        },
    )


def group_rules(cluster: Cluster) -> dict[str, str]:
    """Which rule each anti-affinity group gets: "strict (≤1 per host)" or "spread (≤k …)"."""
    sizes: dict[str, int] = {}
    for vm in cluster.vms:
        group = cluster.role(vm.role).anti_affinity
        if group:
            sizes[group] = sizes.get(group, 0) + 1
    rules = {}
    for group, size in sorted(sizes.items()):
        limit, rule = group_limit(size, len(cluster.hosts))
        rules[group] = f"{rule} (≤{limit} per host)"
    return rules


def _precheck(cluster: Cluster, hosts: list[Host]) -> PlacementInfeasible | None:
    """Counting checks that make a MILP pointless (and give the clearest message)."""
    if not hosts:
        return TotalMemoryExceeded("the pool has no hosts: add hosts to cluster.toml")
    error = diagnose_counting(cluster)
    return error


def diagnose_counting(cluster: Cluster) -> PlacementInfeasible | None:
    """The counting part of `diagnose` only (no MILP)."""
    hosts = cluster.hosts
    biggest = max(cluster.capacity(h) for h in hosts)
    most_cpus = max(h.cpus for h in hosts)
    if any(v.memory_bytes > biggest or v.vcpus > most_cpus for v in cluster.vms):
        return diagnose(cluster, "off")
    if sum(v.memory_bytes for v in cluster.vms) > sum(cluster.capacity(h) for h in hosts):
        return diagnose(cluster, "off")
    return None


def _infeasible(error: PlacementInfeasible, mode: str, started: float, raise_it: bool) -> Placement:
    if raise_it:
        raise error
    return Placement(
        assignment={},
        status="infeasible",
        objective=math.inf,
        bound=math.inf,
        max_utilisation=math.inf,
        balance_bound=math.inf,
        gap=math.inf,
        moves=(),
        solve_seconds=time.perf_counter() - started,
        n_plus_one=mode,
        n_plus_one_verified=False,
        error=error,
    )


def _expand(
    hosts: list[Host], classes: list[_Class], n: Mapping[tuple[int, int], int], x: np.ndarray
) -> dict[str, str]:
    """Turn class counts into VM → host: VMs already on a host stay there up to its count (in
    name order); the others fill the remaining places in host-name order."""
    assignment: dict[str, str] = {}
    for ci, c in enumerate(classes):
        left = {
            h.name: round(float(x[n[ci, hi]])) if (ci, hi) in n else 0 for hi, h in enumerate(hosts)
        }
        rest: list[Vm] = []
        for vm in c.vms:
            if vm.host is not None and left.get(vm.host, 0) > 0:
                assignment[vm.name] = vm.host
                left[vm.host] -= 1
            else:
                rest.append(vm)
        slots = [h.name for h in hosts for _ in range(left[h.name])]
        for vm, host in zip(rest, slots, strict=True):
            assignment[vm.name] = host
    return assignment
