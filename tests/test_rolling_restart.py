"""The nightly rolling restart, against the XAPI simulator through the real XenAPI client, with a
real `arkiv serve` inside every simulated VM (tests/guests.py): each web VM is drained, rebooted
and waited for, one at a time, so that at most one is ever out of service; a guest that ignores
the clean reboot is rebooted hard; one that does not come back stops the run; and the restart
refuses to start when another VM of the role is down or when N+1 would not hold."""

from __future__ import annotations

import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hypervisor.apply import Applier, DesiredVm
from hypervisor.guest_service import GuestServices
from hypervisor.model import Cluster, cluster_from_dict
from hypervisor.restart import RestartSettings, RollingRestart
from hypervisor.xapi_pool import connect, read_pool
from hypervisor.xapi_sim import HostSpec, TemplateSpec, XapiSimulator
from hypervisor.xapi_tasks import TaskWaiter
from tests.guests import Guests

GIB = 1 << 30
TOKEN = "drain-token-of-the-rolling-restart-test"
WEB = ("web-1", "web-2", "web-3")

CLUSTER = """
headroom_gib = {headroom}
[downtime_nok_per_hour]
vestfold = 50000
[[host]]
name = "blade1"
memory_gib = 60
cpus = 16
[[host]]
name = "blade2"
memory_gib = 60
cpus = 16
[[host]]
name = "blade3"
memory_gib = 60
cpus = 16
[[role]]
name = "web"
template = "arkiv-web-1.0"
count = 3
memory_gib = 8
vcpus = 2
anti_affinity = "web"
restart_minutes = 2
counties = ["vestfold"]
drain = "web"
[[role]]
name = "pg-primary"
template = "arkiv-postgres-1.0"
count = 1
memory_gib = 16
vcpus = 4
anti_affinity = "postgres"
restart_minutes = 5
counties = ["vestfold"]
drain = "database-primary"
[[role]]
name = "pg-replica"
template = "arkiv-postgres-1.0"
count = 1
memory_gib = 16
vcpus = 4
anti_affinity = "postgres"
restart_minutes = 5
counties = ["vestfold"]
drain = "database-replica"
"""


@dataclass
class Pool:
    sim: XapiSimulator
    api: Any
    guests: Guests

    def cluster(self, headroom: int = 2, endpoints: dict[str, str] | None = None) -> Cluster:
        doc = tomllib.loads(CLUSTER.format(headroom=headroom))
        doc["endpoints"] = {**self.guests.endpoints, **(endpoints or {})}
        return cluster_from_dict(doc)

    def restart(self, cluster: Cluster, **settings: Any) -> RollingRestart:
        return RollingRestart(
            self.api,
            TaskWaiter(self.api, sleep=self.sim.advance, poll_seconds=5),
            cluster,
            GuestServices(cluster, TOKEN),
            RestartSettings(**{"health_seconds": 60, "soak_seconds": 0.5, **settings}),
            progress=lambda _: None,
        )

    def ready(self, name: str) -> bool:
        try:
            return httpx.get(f"{self.guests.endpoints[name]}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, names: tuple[str, ...]) -> None:
        deadline = time.monotonic() + 60
        while not all(self.ready(name) for name in names):
            assert time.monotonic() < deadline, "the guests did not start"
            time.sleep(0.2)


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    hosts = [HostSpec(f"blade{n}", memory=64 * GIB, cpus=16) for n in (1, 2, 3)]
    templates = [
        TemplateSpec("arkiv-web-1.0", memory=8 * GIB, vcpus=2),
        TemplateSpec("arkiv-postgres-1.0", memory=16 * GIB, vcpus=4),
    ]
    with (
        XapiSimulator(hosts=hosts, templates=templates) as sim,
        connect(sim.url, sim.username, sim.password) as api,
        Guests(sim, tmp_path, WEB, TOKEN) as guests,
    ):
        desired = [
            DesiredVm(name, "web", f"blade{n}", 8 * GIB, "arkiv-web-1.0", "restart", "web")
            for n, name in enumerate(WEB, 1)
        ]
        waiter = TaskWaiter(api, sleep=sim.advance, poll_seconds=5)
        assert Applier(api, waiter, progress=lambda _: None).apply(desired, dry_run=False).ok
        test_pool = Pool(sim, api, guests)
        test_pool.wait_ready(WEB)
        yield test_pool


class Watch:
    """Samples every web node's /readyz while the restart runs."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.most_down = 0
        self.states: dict[str, list[str]] = {name: [] for name in WEB}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _state(self, name: str) -> str:
        try:
            answer = httpx.get(f"{self.pool.guests.endpoints[name]}/readyz", timeout=2)
        except httpx.HTTPError:
            return "down"
        return str(answer.json().get("status"))

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            now = {name: self._state(name) for name in WEB}
            self.most_down = max(self.most_down, sum(s != "ready" for s in now.values()))
            for name, state in now.items():
                if not self.states[name] or self.states[name][-1] != state:
                    self.states[name].append(state)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_each_web_vm_is_drained_rebooted_and_back_before_the_next(pool: Pool) -> None:
    dry = pool.restart(pool.cluster()).run(["web"], dry_run=True)
    assert dry.planned == [f"restart {name} on blade{n}" for n, name in enumerate(WEB, 1)]
    assert dry.done == [] and all(pool.guests.boots[name] == 1 for name in WEB)

    with Watch(pool) as watch:
        report = pool.restart(pool.cluster()).run(["web"], dry_run=False)
    assert report.ok, report.failed
    assert report.done == [f"restarted {name}" for name in WEB]
    assert pool.guests.boots == {name: 2 for name in WEB}, "each rebooted exactly once"
    assert watch.most_down == 1, "never two web nodes out of service at once"
    for name in WEB:
        states = watch.states[name]
        assert states[0] == "ready" and states[-1] == "ready", states
        assert "down" in states, states
        [at_reboot] = pool.guests.drain_at_stop[name]
        assert at_reboot is not None and at_reboot["drained"] is True, at_reboot
    placed = {n: vm.host for n, vm in read_pool(pool.api).vms.items()}
    assert placed == {"web-1": "blade1", "web-2": "blade2", "web-3": "blade3"}


def test_a_guest_that_ignores_the_clean_reboot_is_rebooted_hard(pool: Pool) -> None:
    vm = read_pool(pool.api).vms["web-2"].ref
    pool.sim.faults.hang_shutdown(vm, "forever")
    report = pool.restart(pool.cluster(), clean_seconds=120).run(["web"], dry_run=False)
    assert report.ok, report.failed
    assert report.notes == ["web-2: the clean reboot did not finish, so it was hard"]
    assert pool.guests.boots == {name: 2 for name in WEB}
    assert all(pool.ready(name) for name in WEB)


def test_a_vm_that_does_not_come_back_stops_the_run(pool: Pool) -> None:
    vm = read_pool(pool.api).vms["web-1"].ref
    pool.api.VM.add_to_other_config(vm, "test:guest", "broken")  # its next boot has no service
    report = pool.restart(pool.cluster(), health_seconds=8).run(["web"], dry_run=False)
    assert not report.ok and report.failed is not None
    assert report.failed.startswith("web-1: not ready 8 s after its reboot")
    assert report.done == []
    assert pool.guests.boots == {"web-1": 2, "web-2": 1, "web-3": 1}, "nobody else touched"
    assert pool.ready("web-2") and pool.ready("web-3")


def test_nothing_is_restarted_while_another_of_the_role_is_down(pool: Pool) -> None:
    waiter = TaskWaiter(pool.api, sleep=pool.sim.advance, poll_seconds=5)
    waiter.run("VM.hard_shutdown", read_pool(pool.api).vms["web-3"].ref)
    report = pool.restart(pool.cluster()).run(["web"], dry_run=False)
    assert report.failed == "web-1: web-3 of the same role is Halted"
    assert pool.guests.boots["web-1"] == 1 and pool.ready("web-1") and pool.ready("web-2")


def test_nothing_is_restarted_when_n_plus_one_does_not_hold(pool: Pool) -> None:
    # 44 GiB kept free on each host leaves too little room to restart a failed blade's VM
    report = pool.restart(pool.cluster(headroom=44)).run(["web"], dry_run=False)
    assert report.failed is not None and "N+1 does not hold now" in report.failed
    assert pool.guests.boots == {name: 1 for name in WEB}
    assert all(pool.ready(name) for name in WEB)


def test_the_database_primary_is_not_restarted_without_a_switchover(
    pool: Pool, postgres_server: Any
) -> None:
    waiter = TaskWaiter(pool.api, sleep=pool.sim.advance, poll_seconds=5)
    desired = [
        DesiredVm("pg-primary-1", "pg-primary", "blade1", 16 * GIB, "arkiv-postgres-1.0"),
        DesiredVm("pg-replica-1", "pg-replica", "blade2", 16 * GIB, "arkiv-postgres-1.0"),
    ]
    assert Applier(pool.api, waiter, progress=lambda _: None).apply(desired, dry_run=False).ok
    database = postgres_server.dsn("postgres")
    cluster = pool.cluster(endpoints={"pg-primary-1": database, "pg-replica-1": database})

    dry = pool.restart(cluster).run(["pg-primary", "pg-replica"], dry_run=True)
    assert dry.planned == ["restart pg-replica-1 on blade2", "restart pg-primary-1 on blade1"]

    report = pool.restart(cluster).run(["pg-primary"], dry_run=False)
    assert report.failed is not None
    assert report.failed.startswith("pg-primary-1: pg-primary-1 is the primary")
    assert "--switchover-command" in report.failed
    states = {n: vm.power_state for n, vm in read_pool(pool.api).vms.items()}
    assert states["pg-primary-1"] == "Running"
