"""Applying a placement to a pool through the real XenAPI client, against the XAPI simulator:
VMs cloned from their role's template and started on the chosen host, moved by live migration,
marked so that a re-run recognises them; a re-run after success does nothing, and a run stopped
by a failed migration or a crashed host ends in a reported state from which the next run
converges."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hypervisor.apply import Applier, DesiredVm
from hypervisor.xapi_pool import ROLE_KEY, connect, read_pool
from hypervisor.xapi_sim import HostSpec, TemplateSpec, XapiSimulator
from hypervisor.xapi_tasks import TaskWaiter

GIB = 1 << 30


@pytest.fixture
def sim() -> Iterator[XapiSimulator]:
    hosts = [HostSpec(f"blade{n}", memory=64 * GIB, cpus=16) for n in (1, 2, 3)]
    templates = [
        TemplateSpec("arkiv-web-1.0", memory=8 * GIB, vcpus=2),
        TemplateSpec("arkiv-postgres-1.0", memory=24 * GIB, vcpus=4),
    ]
    with XapiSimulator(hosts=hosts, templates=templates) as simulator:
        yield simulator


@pytest.fixture
def api(sim: XapiSimulator) -> Iterator[Any]:
    with connect(sim.url, sim.username, sim.password) as session:
        yield session


def applier(api: Any, sim: XapiSimulator) -> Applier:
    return Applier(api, TaskWaiter(api, sleep=sim.advance, poll_seconds=5), progress=lambda _: None)


def web(name: str, host: str) -> DesiredVm:
    return DesiredVm(name, "web", host, 8 * GIB, "arkiv-web-1.0", "restart", "web")


def db(name: str, host: str) -> DesiredVm:
    return DesiredVm(name, "database", host, 24 * GIB, "arkiv-postgres-1.0", "restart", "db")


def placed(api: Any) -> dict[str, str | None]:
    pool = read_pool(api)
    return {name: vm.host for name, vm in pool.vms.items() if vm.power_state == "Running"}


def test_a_dry_run_plans_and_changes_nothing(api: Any, sim: XapiSimulator) -> None:
    report = applier(api, sim).apply([web("web-1", "blade1")], dry_run=True)
    assert report.planned == ["start web-1 on blade1"] and report.done == []
    assert read_pool(api).vms == {}


def test_vms_are_created_started_and_moved_where_the_placement_says(
    api: Any, sim: XapiSimulator
) -> None:
    first = [web("web-1", "blade1"), web("web-2", "blade2"), db("db-1", "blade3")]
    report = applier(api, sim).apply(first, dry_run=False)
    assert report.ok, report.failed
    assert not [n for n in report.notes if "failover planner" in n], "XAPI agrees N+1 holds"
    assert placed(api) == {"web-1": "blade1", "web-2": "blade2", "db-1": "blade3"}
    records = sim.vm_records()
    ours = [r for r in records.values() if ROLE_KEY in r["other_config"]]
    assert sorted(r["other_config"][ROLE_KEY] for r in ours) == ["database", "web", "web"]
    assert all(not r["is_a_template"] for r in ours)
    assert all(r["ha_restart_priority"] == "restart" for r in ours)
    assert {sim.host_ref("blade1")} == {r["affinity"] for r in ours if r["name_label"] == "web-1"}

    moved = [web("web-1", "blade2"), web("web-2", "blade2"), db("db-1", "blade3")]
    report = applier(api, sim).apply(moved, dry_run=False)
    assert report.done == ["migrate web-1: blade1 → blade2"]
    assert placed(api)["web-1"] == "blade2"
    again = applier(api, sim).apply(moved, dry_run=False)
    assert again.planned == [] and again.ok, "a placement already in force is left as it is"


def test_a_failed_migration_stops_the_run_and_the_next_run_converges(
    api: Any, sim: XapiSimulator
) -> None:
    start = [web("web-1", "blade1"), web("web-2", "blade1")]
    assert applier(api, sim).apply(start, dry_run=False).ok
    sim.faults.fail_next_migration(read_pool(api).vms["web-1"].ref)
    target = [web("web-1", "blade2"), web("web-2", "blade3")]
    report = applier(api, sim).apply(target, dry_run=False)
    assert not report.ok and "VM_MIGRATE_FAILED" in (report.failed or "")
    assert placed(api)["web-1"] == "blade1", "a failed migration leaves the VM where it was"
    retry = applier(api, sim).apply(target, dry_run=False)
    assert retry.ok and placed(api) == {"web-1": "blade2", "web-2": "blade3"}


def test_after_a_host_crash_the_next_run_restarts_what_it_lost(
    api: Any, sim: XapiSimulator
) -> None:
    target = [web("web-1", "blade1"), web("web-2", "blade2")]
    assert applier(api, sim).apply(target, dry_run=False).ok
    sim.faults.crash_host(sim.host_ref("blade2"))
    report = applier(api, sim).apply(
        [web("web-1", "blade1"), web("web-2", "blade3")], dry_run=False
    )
    assert report.ok, report.failed
    assert report.done == ["start web-2 on blade3"]
    assert placed(api) == {"web-1": "blade1", "web-2": "blade3"}


def test_xapi_s_own_failover_planner_reports_a_pool_without_n_plus_one(
    api: Any, sim: XapiSimulator
) -> None:
    # two 24 GiB databases on each 64 GiB blade: no survivor has room for a failed blade's two
    full = [db(f"db-{n}", f"blade{(n + 1) // 2}") for n in range(1, 7)]
    report = applier(api, sim).apply(full, dry_run=False)
    assert report.ok, report.failed
    lost = [n for n in report.notes if n.startswith("XAPI's failover planner finds no host")]
    assert len(lost) == 6, report.notes
    assert "for db-1 if blade1 fails (HOST_NOT_ENOUGH_FREE_MEMORY)" in lost[0]
