"""`arkiv cluster whatif`: what each single blade failure would do, and what it would cost.

For every host f, the failover repack (`hypervisor.failover.repack`, XAPI's own rule) says
which VMs restart where. Per role, with ``survivors`` its VMs on other hosts and ``restarted``
its VMs of f that found a place:

* ``ok``: none of its VMs were on f;
* ``degraded``: survivors ≥ min_replicas, so it keeps serving with fewer replicas — no
  downtime, but it runs short until the restarted VMs are up (or until repair for VMs that are
  not restarted);
* ``restarting``: survivors < min_replicas ≤ survivors + restarted: down for the role's
  ``restart_minutes``;
* ``stopped``: even after restarts fewer than min_replicas: down until the blade is repaired,
  ``repair_hours × 60`` minutes.

Cost per county: every outage starts at the failure, so at minute t the services still down are
those whose downtime exceeds t. The county loses ``rate/60 × min(1, Σ criticality of the
services down at t)`` NOK per minute (criticality is the share of the county's hourly cost a
service's outage represents; capped at 1 because a county cannot lose more than a full outage).
Integrated over t that is::

    cost(county) = rate/60 × Σ_k (d_k − d_{k−1}) × min(1, Σ_{s: d_s ≥ d_k} crit_s)

with the distinct downtimes d_1 < d_2 < … of the services that serve the county (d_0 = 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from rich.console import Console
from rich.table import Table

from hypervisor.failover import Failover, repack
from hypervisor.model import Cluster

ServiceState = Literal["ok", "degraded", "restarting", "stopped"]


@dataclass(frozen=True)
class ServiceImpact:
    role: str
    state: ServiceState
    running: int  # VMs running once restarts are done
    count: int
    down_minutes: float


@dataclass(frozen=True)
class FailureImpact:
    host: str
    failover: Failover
    services: tuple[ServiceImpact, ...]
    cost_nok: Mapping[str, float]  # county → expected NOK for this failure

    @property
    def total_nok(self) -> float:
        return sum(self.cost_nok.values())


def county_cost(rate_per_hour: float, outages: list[tuple[float, float]]) -> float:
    """NOK for one county given (down_minutes, criticality) of its services (formula above)."""
    cost = 0.0
    previous = 0.0
    for d in sorted({m for m, _ in outages if m > 0}):
        share = min(1.0, sum(c for m, c in outages if m >= d))
        cost += rate_per_hour / 60.0 * (d - previous) * share
        previous = d
    return cost


def failure_impact(cluster: Cluster, assignment: Mapping[str, str], host: str) -> FailureImpact:
    """The impact of `host` failing under `assignment` (VM → host)."""
    failover = repack(cluster, assignment, host)
    services: list[ServiceImpact] = []
    for role in cluster.roles:
        vms = [v for v in cluster.vms if v.role == role.name and v.name in assignment]
        lost = [v for v in vms if assignment[v.name] == host]
        survivors = len(vms) - len(lost)
        restarted = sum(1 for v in lost if v.name in failover.restarts)
        need = min(role.min_replicas, role.count)
        state: ServiceState
        if not lost:
            state, minutes = "ok", 0.0
        elif survivors >= need:
            state, minutes = "degraded", 0.0
        elif survivors + restarted >= need and restarted:
            state, minutes = "restarting", cluster.restart_minutes.get(role.name, 5.0)
        else:
            state, minutes = "stopped", cluster.repair_hours * 60.0
        services.append(ServiceImpact(role.name, state, survivors + restarted, role.count, minutes))
    costs: dict[str, float] = {}
    for county, rate in sorted(cluster.downtime_nok_per_hour.items()):
        outages = [
            (s.down_minutes, cluster.role(s.role).criticality)
            for s in services
            if county in cluster.role(s.role).counties
        ]
        costs[county] = county_cost(rate, outages)
    return FailureImpact(host, failover, tuple(services), costs)


def whatif(cluster: Cluster, assignment: Mapping[str, str]) -> list[FailureImpact]:
    """One FailureImpact per host, in host-name order."""
    return [failure_impact(cluster, assignment, h.name) for h in sorted(cluster.hosts, key=_name)]


def _name(host: object) -> str:
    return str(getattr(host, "name", ""))


def render(impacts: list[FailureImpact], console: Console | None = None) -> None:
    """Print the what-if report as rich tables (one per failure, and a cost summary)."""
    console = console or Console()
    for impact in impacts:
        table = Table(title=f"{impact.host} fails")
        table.add_column("service")
        table.add_column("state")
        table.add_column("running", justify="right")
        table.add_column("down (min)", justify="right")
        for s in impact.services:
            if s.state != "ok":
                table.add_row(s.role, s.state, f"{s.running}/{s.count}", f"{s.down_minutes:.0f}")
        console.print(table)
        for vm, target in sorted(impact.failover.restarts.items()):
            console.print(f"  restart {vm} on {target}")
        for vm in impact.failover.unplaced:
            console.print(f"  [red]no room to restart {vm}")
        for vm in impact.failover.not_restarted:
            console.print(f"  {vm} stays down (restart policy none)")
    summary = Table(title="expected cost per failure (NOK)")
    summary.add_column("failed host")
    counties = sorted({c for i in impacts for c in i.cost_nok})
    for county in counties:
        summary.add_column(county, justify="right")
    summary.add_column("total", justify="right")
    for impact in impacts:
        summary.add_row(
            impact.host,
            *(f"{impact.cost_nok.get(c, 0.0):,.0f}" for c in counties),
            f"{impact.total_nok:,.0f}",
        )
    console.print(summary)
