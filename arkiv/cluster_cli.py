"""`arkiv cluster plan | apply | whatif | restart | rollout | schedule`: the operator's view of
the XenServer pool.

The commands read `cluster.toml` (the services: roles, counts, sizes, groups, costs) and, with
`--pool`, the pool itself through XAPI: its hosts' memory and CPUs replace the file's, and the
VMs' current hosts are the starting point, so the plan moves as little as it can. `apply` is a
dry run unless `--yes`; run again after a failure, it continues from wherever the pool is.
`restart` and `rollout` also reach the service inside each VM (the endpoints in cluster.toml,
the arkiv nodes' drain token); `schedule` writes systemd timers that run `restart` nightly.
The placement, the pool, the apply, the restart and the rollout are the `hypervisor` package's;
this module only wires them to the command line and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hypervisor.apply import Applier, DesiredVm
from hypervisor.guest_service import GuestServiceError, GuestServices
from hypervisor.model import Cluster, load_cluster
from hypervisor.placement import Placement, PlacementInfeasible, solve
from hypervisor.restart import RestartSettings, RollingRestart
from hypervisor.rollout import Rollout, RolloutRefused
from hypervisor.schedule import systemd_units
from hypervisor.whatif import render, whatif
from hypervisor.xapi_pool import ObservedPool, XapiError, cluster_on_pool, connect, read_pool
from hypervisor.xapi_tasks import TaskWaiter

_HA_PRIORITY = {"restart": "restart", "best-effort": "best-effort", "none": ""}
"""The model's restart policy as XAPI's ha_restart_priority."""


_NEEDS_POOL = ("apply", "restart", "rollout")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cluster = commands.add_parser("cluster", help="place and operate the VMs on the XenServer pool")
    sub = cluster.add_subparsers(dest="cluster_command", required=True)
    for name, text in (
        ("plan", "the placement: where each VM goes, the moves, N+1 checked"),
        ("apply", "carry the placement out through XAPI (a dry run unless --yes)"),
        ("whatif", "for each blade failure: restarts, degraded services, cost per county"),
        ("restart", "rolling restart of roles, one VM at a time (a dry run unless --yes)"),
        ("rollout", "replace a role's VMs with a new template, canary first, reverted on failure"),
        ("schedule", "write the systemd timers of the nightly restarts in cluster.toml"),
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
        if name in ("apply", "restart", "rollout"):
            command.add_argument("--yes", action="store_true", help="act, not only plan")
        if name in ("restart", "rollout", "schedule"):
            command.add_argument(
                "--drain-token-file",
                type=Path,
                help="the arkiv nodes' drain token (their drain_token_file)",
            )
            command.add_argument("--drain-timeout", type=float, default=300.0, help="seconds")
            command.add_argument("--health-timeout", type=float, default=600.0, help="seconds")
        if name in ("restart", "schedule"):
            command.add_argument(
                "--switchover-command",
                default="",
                help="makes the replica the PostgreSQL primary; {primary} and {replica} are "
                "replaced by the VMs' names",
            )
            command.add_argument(
                "--soak", type=float, default=30.0, help="seconds a VM must stay ready"
            )
        if name == "restart":
            command.add_argument("--role", action="append", required=True, help="repeatable")
        if name == "rollout":
            command.add_argument("--role", required=True)
            command.add_argument("--template", required=True, help="the new template's name")
            command.add_argument(
                "--watch", type=float, default=120.0, help="seconds the canary is watched"
            )
        if name == "schedule":
            command.add_argument("--write", type=Path, required=True, help="directory for units")


def run(args: argparse.Namespace, console: Console | None = None) -> int:
    out = console or Console()
    cluster = load_cluster(args.cluster)  # a mistake in it: arkiv.cli says which key, exit 2
    if args.cluster_command == "schedule":
        return _schedule(out, args, cluster)
    if not args.pool:
        if args.cluster_command in _NEEDS_POOL:
            out.print(f"arkiv cluster {args.cluster_command} needs --pool (the pool master's URL)")
            return 2
        return _report(out, args, cluster, None, None)
    password = _password(args)
    try:
        with connect(args.pool, args.user, password) as api:
            if args.cluster_command == "restart":
                return _restart(out, args, cluster, api)
            if args.cluster_command == "rollout":
                return _rollout(out, args, cluster, api)
            pool = read_pool(api)
            return _report(out, args, cluster_on_pool(cluster, pool), pool, api)
    except XapiError as error:
        out.print(f"[red]XAPI: {error}")
        return 1
    except GuestServiceError as error:
        out.print(f"[red]{error}")
        return 2


def _services(args: argparse.Namespace, cluster: Cluster) -> GuestServices:
    token = None
    if args.drain_token_file is not None:
        token = Path(args.drain_token_file).read_text(encoding="utf-8").strip()
    return GuestServices(cluster, token)


def _restart(out: Console, args: argparse.Namespace, cluster: Cluster, api: Any) -> int:
    settings = RestartSettings(
        drain_seconds=args.drain_timeout,
        health_seconds=args.health_timeout,
        soak_seconds=args.soak,
        switchover_command=args.switchover_command,
    )
    restart = RollingRestart(
        api, TaskWaiter(api), cluster, _services(args, cluster), settings, progress=out.print
    )
    report = restart.run(args.role, dry_run=not args.yes)
    return _outcome(out, args, report.planned, report.notes, report.failed, len(report.done))


def _rollout(out: Console, args: argparse.Namespace, cluster: Cluster, api: Any) -> int:
    rollout = Rollout(
        api,
        TaskWaiter(api),
        _services(args, cluster),
        progress=out.print,
        watch_seconds=args.watch,
        health_seconds=args.health_timeout,
        drain_seconds=args.drain_timeout,
    )
    try:
        report = rollout.run(cluster.role(args.role), args.template, dry_run=not args.yes)
    except RolloutRefused as error:
        out.print(f"[red]refused: {error}")
        return 1
    notes = [*report.notes, *(f"reverted {vm}" for vm in report.reverted)]
    return _outcome(out, args, report.planned, notes, report.failed, len(report.done))


def _outcome(
    out: Console,
    args: argparse.Namespace,
    planned: list[str],
    notes: list[str],
    failed: str | None,
    done: int,
) -> int:
    if not args.yes:
        out.print("dry run; these steps would be taken (add --yes to act):")
        for step in planned or ["nothing to do"]:
            out.print(f"  {step}")
    for note in notes:
        out.print(f"note: {note}")
    if failed:
        out.print(f"[red]stopped: {failed}")
        return 1
    if args.yes:
        out.print(f"done: {done} step(s)")
    return 0


def _schedule(out: Console, args: argparse.Namespace, cluster: Cluster) -> int:
    if not cluster.restart_schedules:
        out.print(f"{args.cluster} has no [[restart_schedule]]: nothing to write")
        return 2
    missing = [
        flag
        for flag, value in (
            ("--pool", args.pool),
            ("--password-file", args.password_file),
            ("--drain-token-file", args.drain_token_file),
        )
        if not value
    ]
    if missing:
        out.print(f"the timers run unattended and need {', '.join(missing)}")
        return 2
    command = [
        *("arkiv", "cluster", "restart", "--cluster", str(Path(args.cluster).resolve())),
        *("--pool", args.pool, "--user", args.user),
        *("--password-file", str(Path(args.password_file).resolve())),
        *("--drain-token-file", str(Path(args.drain_token_file).resolve())),
        *("--drain-timeout", f"{args.drain_timeout:g}", "--health-timeout"),
        *(f"{args.health_timeout:g}", "--soak", f"{args.soak:g}"),
        *(("--switchover-command", args.switchover_command) if args.switchover_command else ()),
    ]
    args.write.mkdir(parents=True, exist_ok=True)
    for schedule in cluster.restart_schedules:
        for file_name, text in systemd_units(schedule, command).items():
            (args.write / file_name).write_text(text, encoding="utf-8")
            out.print(f"wrote {args.write / file_name}")
    out.print("then: systemctl daemon-reload && systemctl enable --now arkiv-restart-*.timer")
    return 0


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
