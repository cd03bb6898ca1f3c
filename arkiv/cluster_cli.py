"""`arkiv cluster plan | apply | whatif`: the operator's view of the XenServer pool.

The commands read `cluster.toml` (the services: roles, counts, sizes, groups, costs) and, with
`--pool`, the pool itself through XAPI: its hosts' memory and CPUs replace the file's, and the
VMs' current hosts are the starting point, so the plan moves as little as it can. `apply` is a
dry run unless `--yes`; run again after a failure, it continues from wherever the pool is.
The placement, the pool and the apply are the `hypervisor` package's; this module only wires
them to the command line and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hypervisor.apply import Applier, DesiredVm
from hypervisor.model import Cluster, load_cluster
from hypervisor.placement import Placement, PlacementInfeasible, solve
from hypervisor.whatif import render, whatif
from hypervisor.xapi_pool import ObservedPool, XapiError, cluster_on_pool, connect, read_pool
from hypervisor.xapi_tasks import TaskWaiter

_HA_PRIORITY = {"restart": "restart", "best-effort": "best-effort", "none": ""}
"""The model's restart policy as XAPI's ha_restart_priority."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster = commands.add_parser("cluster", help="place and operate the VMs on the XenServer pool")
    sub = cluster.add_subparsers(dest="cluster_command", required=True)
    for name, text in (
        ("plan", "the placement: where each VM goes, the moves, N+1 checked"),
        ("apply", "carry the placement out through XAPI (a dry run unless --yes)"),
        ("whatif", "for each blade failure: restarts, degraded services, cost per county"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument(
            "--cluster",
            type=Path,
            default=Path("cluster.toml"),
            help="the services and hosts (default ./cluster.toml; hypervisor/cluster.toml is "
            "the shipped example)",
        )
        command.add_argument("--pool", help="XAPI URL of the pool master, e.g. https://xen1")
        command.add_argument("--user", default="root")
        command.add_argument(
            "--password-file", type=Path, help="a file holding the pool password (not argv)"
        )
        command.add_argument("--time-limit", type=float, default=10.0, help="solver seconds")
        if name == "apply":
            command.add_argument("--yes", action="store_true", help="act, not only plan")


def run(args: argparse.Namespace, console: Console | None = None) -> int:
    out = console or Console()
    cluster = load_cluster(args.cluster)
    if not args.pool:
        if args.cluster_command == "apply":
            out.print("arkiv cluster apply needs --pool (the XAPI URL of the pool master)")
            return 2
        return _report(out, args, cluster, None, None)
    password = _password(args)
    try:
        with connect(args.pool, args.user, password) as api:
            pool = read_pool(api)
            return _report(out, args, cluster_on_pool(cluster, pool), pool, api)
    except XapiError as error:
        out.print(f"[red]XAPI: {error}")
        return 1


def _password(args: argparse.Namespace) -> str:
    if args.password_file is None:
        return sys.stdin.readline().rstrip("\r\n")
    return Path(args.password_file).read_text(encoding="utf-8").strip()


def _report(
    out: Console, args: argparse.Namespace, cluster: Cluster, pool: ObservedPool | None, api: Any
) -> int:
    try:
        placement = solve(cluster, time_limit_seconds=args.time_limit)
    except PlacementInfeasible as error:
        out.print(f"[red]no placement fits: {error}")
        return 1
    if args.cluster_command == "whatif":
        render(whatif(cluster, placement.assignment), out)
        return 0
    _print_placement(out, cluster, placement)
    if args.cluster_command == "plan":
        return 0
    desired = [
        DesiredVm(
            name=vm.name,
            role=vm.role,
            host=placement.assignment[vm.name],
            memory=vm.memory_bytes,
            template=cluster.role(vm.role).template,
            ha_restart_priority=_HA_PRIORITY[cluster.role(vm.role).restart],
            anti_affinity_group=cluster.role(vm.role).anti_affinity,
        )
        for vm in cluster.vms
    ]
    applier = Applier(api, TaskWaiter(api), progress=out.print)
    report = applier.apply(desired, dry_run=not args.yes)
    if not args.yes:
        out.print("dry run; these steps would be taken (add --yes to act):")
        for step in report.planned or ["nothing to do: the pool already matches the plan"]:
            out.print(f"  {step}")
        return 0
    for note in report.notes:
        out.print(f"note: {note}")
    if report.failed:
        out.print(f"[red]stopped: {report.failed}")
        return 1
    out.print(f"done: {len(report.done)} step(s)")
    return 0


def _print_placement(out: Console, cluster: Cluster, placement: Placement) -> None:
    out.print(
        f"placement {placement.status} in {placement.solve_seconds:.2f} s; N+1 "
        f"{'verified' if placement.n_plus_one_verified else 'NOT verified'} "
        f"({placement.n_plus_one}); {len(placement.moves)} move(s)"
    )
    table = Table(title="where each VM goes")
    for column in ("host", "VMs", "memory used"):
        table.add_column(column)
    for host in cluster.hosts:
        names = sorted(vm for vm, at in placement.assignment.items() if at == host.name)
        used = sum(v.memory_bytes for v in cluster.vms if v.name in names)
        table.add_row(
            host.name, ", ".join(names), f"{used / 2**30:.0f} / {host.memory_bytes / 2**30:.0f} GiB"
        )
    out.print(table)
    for move in placement.moves:
        out.print(f"  move {move.vm}: {move.source or 'not running'} → {move.target}")
    for failure in placement.unverified_failures:
        out.print(f"[red]  N+1 does not hold if {failure} fails")
