"""The placement solver against an exhaustive oracle, and its promises: deterministic, no-op
when nothing needs to move, stateful VMs moved last, infeasibility named by family, the shipped
deployment surviving every blade failure, and the what-if arithmetic."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from pathlib import Path

import pytest

from hypervisor.failover import repack, survives_every_failure
from hypervisor.model import (
    GIB,
    Cluster,
    ClusterConfigError,
    Host,
    Role,
    Vm,
    cluster_from_dict,
    group_limit,
    load_cluster,
)
from hypervisor.placement import (
    AntiAffinityMemory,
    AntiAffinityTooLarge,
    CapacityInfeasible,
    DegradedApartInfeasible,
    NPlusOneInfeasible,
    PlacementInfeasible,
    TotalMemoryExceeded,
    VmTooLarge,
    solve,
)
from hypervisor.whatif import county_cost, whatif

SHIPPED = Path(__file__).resolve().parent.parent / "hypervisor" / "cluster.toml"


def make(hosts: list[int], roles: list[Role], current: Mapping[str, str] | None = None) -> Cluster:
    host_list = tuple(Host(f"h{i + 1}", gib * GIB, 16) for i, gib in enumerate(hosts))
    current = current or {}
    vms = tuple(
        Vm(f"{r.name}-{i + 1}", r.name, r.memory_bytes, r.vcpus, current.get(f"{r.name}-{i + 1}"))
        for r in roles
        for i in range(r.count)
    )
    return Cluster(host_list, tuple(roles), vms)


def role(name: str, count: int, gib: int, **kw: object) -> Role:
    return Role(name=name, count=count, memory_bytes=gib * GIB, vcpus=2, **kw)  # type: ignore[arg-type]


def _recourse_ok(cluster: Cluster, place: dict[str, str], failed: str) -> bool:
    """Exhaustive: can the "restart" VMs of `failed` be put on the others (memory, groups
    kept apart when degraded)?"""
    others = [h for h in cluster.hosts if h.name != failed]
    lost = [
        v
        for v in cluster.vms
        if place[v.name] == failed and cluster.role(v.role).restart == "restart"
    ]
    apart = {r.anti_affinity for r in cluster.roles if r.keep_apart_when_degraded}
    for targets in itertools.product(others, repeat=len(lost)):
        trial = {k: h for k, h in place.items() if h != failed}
        trial.update({v.name: h.name for v, h in zip(lost, targets, strict=True)})
        if _fits(cluster, trial, others, apart_only=apart):
            return True
    return False


def _fits(
    cluster: Cluster, place: Mapping[str, str], hosts: list[Host], apart_only: set[str | None]
) -> bool:
    for h in hosts:
        on = [v for v in cluster.vms if place.get(v.name) == h.name]
        if sum(v.memory_bytes for v in on) > cluster.capacity(h):
            return False
        for group in apart_only:
            if group and sum(1 for v in on if cluster.role(v.role).anti_affinity == group) > 1:
                return False
    return True


def oracle(cluster: Cluster) -> tuple[float, float] | None:
    """Lexicographic best (weighted moves, max utilisation) by trying every assignment."""
    hosts = list(cluster.hosts)
    groups: dict[str, int] = {}
    for v in cluster.vms:
        g = cluster.role(v.role).anti_affinity
        if g:
            groups[g] = groups.get(g, 0) + 1
    best: tuple[float, float] | None = None
    for targets in itertools.product(hosts, repeat=len(cluster.vms)):
        place = {v.name: h.name for v, h in zip(cluster.vms, targets, strict=True)}
        if not _fits(cluster, place, hosts, set()):
            continue
        ok = True
        for h in hosts:
            for g, size in groups.items():
                limit, _ = group_limit(size, len(hosts))
                on = [v for v in cluster.vms if place[v.name] == h.name]
                if sum(1 for v in on if cluster.role(v.role).anti_affinity == g) > limit:
                    ok = False
        if not ok or not all(_recourse_ok(cluster, place, h.name) for h in hosts):
            continue
        moves = sum(
            cluster.role(v.role).migration_cost
            for v in cluster.vms
            if v.host is not None and v.host != place[v.name]
        )
        util = max(
            sum(v.memory_bytes for v in cluster.vms if place[v.name] == h.name)
            / cluster.capacity(h)
            for h in hosts
        )
        key = (moves, round(util, 9))
        if best is None or key < best:
            best = key
    return best


def random_case(seed: int) -> Cluster:
    rng = random.Random(seed)
    n_hosts = rng.choice([2, 3, 4])
    hosts = [rng.choice([24, 32, 48]) for _ in range(n_hosts)]
    roles = [
        role("db", rng.choice([1, 2]), rng.choice([8, 16]), anti_affinity="db",
             keep_apart_when_degraded=n_hosts >= 3, migration_cost=10.0),
        role("web", rng.choice([1, 2, 3]), rng.choice([4, 8]), anti_affinity="web"),
        role("obj", rng.choice([0, 1, 2]), rng.choice([8, 12]), restart="none",
             migration_cost=5.0),
    ]  # fmt: skip
    names = [f"{r.name}-{i + 1}" for r in roles for i in range(r.count)]
    # crowd the start onto h1 and h2 so that moves are needed
    current = {n: f"h{rng.randrange(min(2, n_hosts)) + 1}" for n in names if rng.random() < 0.8}
    return make(hosts, roles, current)


@pytest.mark.parametrize("seed", range(16))
def test_solver_matches_exhaustive_search(seed: int) -> None:
    cluster = random_case(seed)
    best = oracle(cluster)
    if best is None:
        with pytest.raises(PlacementInfeasible):
            solve(cluster)
        return
    plan = solve(cluster)
    assert plan.status == "optimal"
    assert plan.objective == pytest.approx(best[0])
    assert plan.max_utilisation == pytest.approx(best[1], abs=1e-6)


def test_same_input_same_plan() -> None:
    cluster = load_cluster(SHIPPED).with_current({})
    first, second = solve(cluster), solve(cluster)
    assert first.assignment == second.assignment
    assert first.moves == second.moves


def test_feasible_current_placement_is_kept() -> None:
    plan = solve(load_cluster(SHIPPED))
    assert plan.moves == ()
    assert plan.objective == 0


def test_stateful_vms_move_last() -> None:
    cluster = load_cluster(SHIPPED)
    crowded = cluster.with_current({v.name: "blade-1" for v in cluster.vms})
    plan = solve(crowded)
    moved = {m.vm for m in plan.moves}
    assert "pg-primary-1" not in moved  # the pair must split: the cheaper replica moves
    assert "pg-replica-1" in moved
    assert sum(1 for m in plan.moves if m.vm.startswith("minio")) == 3  # one stays
    assert plan.status == "optimal"
    assert plan.objective == sum(m.cost for m in plan.moves)


def test_shipped_deployment_survives_every_blade_failure() -> None:
    cluster = load_cluster(SHIPPED)
    assert len(cluster.hosts) == 4 and len(cluster.vms) == 20
    plan = solve(cluster)
    assert plan.n_plus_one == "exact" and plan.n_plus_one_verified
    assert survives_every_failure(cluster, plan.assignment)
    for host in cluster.hosts:
        failover = repack(cluster, plan.assignment, host.name)
        placed = {**plan.assignment, **failover.restarts}
        pg = {placed[n] for n in ("pg-primary-1", "pg-replica-1")}
        assert len(pg) == 2 and host.name not in pg


def test_vm_larger_than_any_host() -> None:
    with pytest.raises(VmTooLarge, match="web-1"):
        solve(make([16, 16], [role("web", 1, 32)]))


def test_total_memory() -> None:
    with pytest.raises(TotalMemoryExceeded, match="add a host"):
        solve(make([16, 16], [role("web", 5, 8)]))


def test_keep_apart_group_larger_than_pool() -> None:
    roles = [role("db", 3, 4, anti_affinity="db", keep_apart_when_degraded=True)]
    with pytest.raises(AntiAffinityTooLarge, match="'db'"):
        solve(make([64, 64], roles))


def test_keep_apart_in_degraded_mode() -> None:
    roles = [role("db", 2, 4, anti_affinity="db", keep_apart_when_degraded=True)]
    with pytest.raises(DegradedApartInfeasible):
        solve(make([64, 64], roles))


def test_anti_affinity_against_memory() -> None:
    with pytest.raises(AntiAffinityMemory):
        solve(make([100, 10], [role("db", 2, 30, anti_affinity="db")]), n_plus_one="off")


def test_memory_packing() -> None:
    with pytest.raises(CapacityInfeasible):
        solve(make([100, 100], [role("big", 3, 60)]), n_plus_one="off")


def test_n_plus_one_names_the_host() -> None:
    with pytest.raises(NPlusOneInfeasible, match="N\\+1 memory for host h1") as caught:
        solve(make([100, 100, 100], [role("big", 3, 60)]))
    assert caught.value.host == "h1"


def test_infeasible_without_raising() -> None:
    plan = solve(make([100, 100, 100], [role("big", 3, 60)]), raise_on_infeasible=False)
    assert plan.status == "infeasible" and isinstance(plan.error, NPlusOneInfeasible)


def test_aggregate_mode_is_verified() -> None:
    cluster = make([64, 64, 64], [role("web", 6, 8, anti_affinity="web"), role("db", 2, 16)])
    plan = solve(cluster, n_plus_one="aggregate")
    assert plan.n_plus_one == "aggregate" and plan.n_plus_one_verified


def test_loader_names_the_wrong_key() -> None:
    doc = {"host": [{"name": "a", "memory_gib": "lots", "cpus": 4}], "role": []}
    with pytest.raises(ClusterConfigError, match=r"host\[0\]\.memory_gib"):
        cluster_from_dict(doc)
    bad_role = {
        "host": [{"name": "a", "memory_gib": 8, "cpus": 4}],
        "role": [{"name": "web", "count": 1, "memory_gib": 1, "vcpus": 1, "drain": "tape"}],
    }
    with pytest.raises(ClusterConfigError, match=r"role 'web'\.drain"):
        cluster_from_dict(bad_role)


def test_whatif_on_a_hand_computed_case() -> None:
    roles = [
        role("app", 1, 8, criticality=1.0, counties=("vestfold",), drain="web"),
        role("obj", 1, 8, criticality=0.5, counties=("vestfold",), restart="none"),
    ]
    cluster = Cluster(
        (Host("h1", 32 * GIB, 8), Host("h2", 32 * GIB, 8)),
        tuple(roles),
        (Vm("app-1", "app", 8 * GIB, 2, "h1"), Vm("obj-1", "obj", 8 * GIB, 2, "h1")),
        downtime_nok_per_hour={"vestfold": 60_000},
        restart_minutes={"app": 10},
        repair_hours=1,
    )
    h1, h2 = whatif(cluster, {"app-1": "h1", "obj-1": "h1"})
    assert h1.failover.restarts == {"app-1": "h2"}
    assert h1.failover.not_restarted == ("obj-1",)
    states = {s.role: s.state for s in h1.services}
    assert states == {"app": "restarting", "obj": "stopped"}
    # 10 min with both down (share capped at 1): 10 000; then 50 min of obj at 0.5: 25 000
    assert h1.cost_nok["vestfold"] == pytest.approx(35_000)
    assert h2.cost_nok["vestfold"] == 0
    assert county_cost(60_000, [(30, 0.2)]) == pytest.approx(6_000)
