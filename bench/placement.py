"""Placement solver benchmark: the shipped 4-blade deployment and a generated large pool.

Run from the project root::

    .venv/bin/python -m bench.placement                  # 5 runs each, 60 s limit for the big one
    .venv/bin/python -m bench.placement --runs 1 --hosts 20 --vms 200

Prints, per case, the median solve time over ``--runs`` runs, the status and gap the solver
could prove (migrations stage and balance stage), which N+1 formulation it used and whether the
plan survived every single-host failure under XAPI's biggest-fit-decreasing repack. Aims (from
the issue): the 20-VM deployment well under a second; 200 hosts × 2,000 VMs within 1 % of the
bound in under a minute.

The generated pool is seeded: hosts of 256 or 512 GiB, VMs of ten roles drawn with fixed
sizes, restart policies and anti-affinity groups, and a current placement for 90 % of the VMs
taken from a first-fit pass (so the migration stage has work to do) — the same pool every run.
The third case places the same pool from scratch (no current hosts): there balance is all the
work, and HiGHS's bound on the maximum utilisation is weak, so the gap printed is the honest one.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hypervisor.model import GIB, Cluster, Host, Role, Vm, load_cluster
from hypervisor.placement import Placement, solve

console = Console(width=150)
SHIPPED = Path(__file__).resolve().parent.parent / "hypervisor" / "cluster.toml"
RESULTS = Path(__file__).resolve().parent / "results" / "placement.json"


def generated_pool(hosts: int, vms: int, seed: int = 11) -> Cluster:
    """A seeded pool of `hosts` hosts and `vms` VMs, about 60 % full."""
    rng = random.Random(seed)
    host_list = tuple(
        Host(f"host-{i:03d}", (512 if i % 4 == 0 else 256) * GIB, 64 if i % 4 == 0 else 32)
        for i in range(hosts)
    )
    kinds = [  # name, GiB, vCPUs, restart, anti-affinity, migration cost
        ("web", 8, 4, "restart", None, 1.0),
        ("dicom", 16, 4, "restart", None, 2.0),
        ("worker", 12, 8, "restart", None, 1.0),
        ("cache", 24, 4, "best-effort", None, 3.0),
        ("batch", 16, 8, "none", None, 1.0),
        ("pg", 64, 8, "restart", "pg", 50.0),
        ("minio", 32, 8, "none", "minio", 20.0),
        ("search", 32, 8, "restart", "search", 10.0),
        ("proxy", 4, 2, "restart", "proxy", 1.0),
        ("small", 2, 1, "restart", None, 1.0),
    ]
    weights = [30, 20, 15, 8, 8, 3, 4, 4, 2, 6]
    counts = dict.fromkeys([k[0] for k in kinds], 0)
    for _ in range(vms):
        counts[rng.choices(kinds, weights)[0][0]] += 1
    roles = tuple(
        Role(
            name=name,
            count=counts[name],
            memory_bytes=gib * GIB,
            vcpus=cpus,
            anti_affinity=group,
            restart=restart,  # type: ignore[arg-type]
            migration_cost=cost,
            drain="web",
        )
        for name, gib, cpus, restart, group, cost in kinds
    )
    vm_list = [
        Vm(f"{r.name}-{i + 1}", r.name, r.memory_bytes, r.vcpus)
        for r in roles
        for i in range(r.count)
    ]
    rng.shuffle(vm_list)
    free = {h.name: h.memory_bytes * 0.9 for h in host_list}
    placed: list[Vm] = []
    for n, vm in enumerate(vm_list):
        host = None
        if n % 10:
            start = rng.randrange(hosts)
            for k in range(hosts):
                name = host_list[(start + k) % hosts].name
                if free[name] >= vm.memory_bytes:
                    host = name
                    free[name] -= vm.memory_bytes
                    break
        placed.append(Vm(vm.name, vm.role, vm.memory_bytes, vm.vcpus, host))
    return Cluster(host_list, roles, tuple(sorted(placed, key=lambda v: v.name)), 4 * GIB)


def measure(case: str, cluster: Cluster, runs: int, time_limit: float) -> dict[str, Any]:
    """Solve `cluster` `runs` times; the median time and the last plan's figures."""
    times: list[float] = []
    plan: Placement | None = None
    plans: set[tuple[tuple[str, str], ...]] = set()
    for _ in range(runs):
        plan = solve(cluster, time_limit_seconds=time_limit)
        times.append(plan.solve_seconds)
        plans.add(tuple(sorted(plan.assignment.items())))
    assert plan is not None
    return {
        "case": case,
        "hosts": len(cluster.hosts),
        "vms": len(cluster.vms),
        "runs": runs,
        "median_s": statistics.median(times),
        "max_s": max(times),
        "status": plan.status,
        "gap_pct": plan.gap * 100,
        "weighted_moves": plan.objective,
        "moves_bound": plan.bound,
        "moves": len(plan.moves),
        "max_utilisation": plan.max_utilisation,
        "balance_bound": plan.balance_bound,
        "n_plus_one": plan.n_plus_one,
        "n_plus_one_verified": plan.n_plus_one_verified,
        "same_plan_every_run": len(plans) == 1,
        "variables": plan.stats.get("variables"),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="placement solve time (scipy MILP / HiGHS)")
    for column in ("case", "hosts × VMs", "median s", "status", "gap %", "moves (weighted)",
                   "max util (bound)", "N+1", "verified", "deterministic"):  # fmt: skip
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["case"],
            f"{r['hosts']} × {r['vms']}",
            f"{r['median_s']:.3f}",
            r["status"],
            f"{r['gap_pct']:.2f}",
            f"{r['moves']} ({r['weighted_moves']:.0f}, bound {r['moves_bound']:.0f})",
            f"{r['max_utilisation']:.3f} ({r['balance_bound']:.3f})",
            r["n_plus_one"],
            "yes" if r["n_plus_one_verified"] else "NO",
            "yes" if r["same_plan_every_run"] else "no",
        )
    console.print(table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.placement", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs of the shipped deployment")
    parser.add_argument("--big-runs", type=int, default=3, help="runs of the generated pool")
    parser.add_argument(
        "--fresh-runs",
        type=int,
        default=1,
        help="runs of the generated pool from scratch (0: skip)",
    )
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--vms", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds, big pool")
    parser.add_argument("--cluster", type=Path, default=SHIPPED)
    parser.add_argument("--json", type=Path, default=RESULTS, help="write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = [measure("shipped cluster.toml", load_cluster(args.cluster), args.runs, 10.0)]
    big = generated_pool(args.hosts, args.vms, args.seed)
    rows.append(measure(f"generated (seed {args.seed})", big, args.big_runs, args.time_limit))
    if args.fresh_runs:
        fresh = big.with_current({})
        fresh = Cluster(
            fresh.hosts,
            fresh.roles,
            tuple(Vm(v.name, v.role, v.memory_bytes, v.vcpus) for v in fresh.vms),
            fresh.headroom_bytes,
        )
        rows.append(measure("same, from scratch", fresh, args.fresh_runs, args.time_limit))
    print_table(rows)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"seed": args.seed, "time_limit_s": args.time_limit, "rows": rows}
        args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        console.print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
