"""Rolling a role onto a new template through the real XenAPI client, against the XAPI
simulator, with a real arkiv web node in every running web VM: canary first, each VM replaced on
the host it was on; a canary whose health check fails is reverted from its snapshot and the
others are not touched; no snapshot is left behind; roles that must never be reverted from a
snapshot are refused before anything is touched; a re-run continues where the last one stopped."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from hypervisor.apply import Applier, DesiredVm
from hypervisor.guest_service import GuestServices, wait_for
from hypervisor.model import Cluster, Host, Role, Vm
from hypervisor.rollout import Rollout, RolloutRefused
from hypervisor.xapi_pool import NAME_KEY, ROLE_KEY, TEMPLATE_KEY, connect, read_pool
from hypervisor.xapi_sim import HostSpec, TemplateSpec, XapiSimulator
from hypervisor.xapi_tasks import TaskWaiter
from tests.guests import Guests

pytestmark = pytest.mark.slow

GIB = 1 << 30
TOKEN = "rollout-test-drain-token"
PLACED = {"web-1": "blade1", "web-2": "blade2", "web-3": "blade3"}
WEB = Role("web", 3, 4 * GIB, 2, anti_affinity="web", drain="web", template="arkiv-web-1.0")
GOOD, BROKEN = "arkiv-web-1.1", "arkiv-web-1.2-broken"


@pytest.fixture
def sim() -> Iterator[XapiSimulator]:
    hosts = [HostSpec(f"blade{n}", memory=64 * GIB, cpus=16) for n in (1, 2, 3)]
    templates = [
        TemplateSpec("arkiv-web-1.0", memory=4 * GIB, vcpus=2),
        TemplateSpec(GOOD, memory=4 * GIB, vcpus=2),
        TemplateSpec(BROKEN, memory=4 * GIB, vcpus=2, other_config={"test:guest": "broken"}),
    ]
    with XapiSimulator(hosts=hosts, templates=templates) as simulator:
        yield simulator


@pytest.fixture
def api(sim: XapiSimulator) -> Iterator[Any]:
    with connect(sim.url, sim.username, sim.password) as session:
        yield session


@pytest.fixture
def web(api: Any, sim: XapiSimulator) -> None:
    """web-1..3 from arkiv-web-1.0, one per blade."""
    desired = [
        DesiredVm(name, "web", host, 4 * GIB, "arkiv-web-1.0", "restart", "web")
        for name, host in PLACED.items()
    ]
    report = Applier(api, waiter(api, sim), progress=lambda _: None).apply(desired, dry_run=False)
    assert report.ok, report.failed


@pytest.fixture
def guests(sim: XapiSimulator, tmp_path: Path, web: None) -> Iterator[Guests]:
    with Guests(sim, tmp_path, set(PLACED), TOKEN) as running:
        services = guest_services(running.endpoints)
        for name in PLACED:
            check = wait_for(services.for_vm(name, "web").ready, 60)
            assert check.ok, f"{name}: {check.detail}"
        yield running


def waiter(api: Any, sim: XapiSimulator) -> TaskWaiter:
    return TaskWaiter(api, sleep=sim.advance, poll_seconds=5)


def guest_services(endpoints: Mapping[str, str]) -> GuestServices:
    hosts = tuple(Host(f"blade{n}", 64 * GIB, 16) for n in (1, 2, 3))
    vms = tuple(Vm(name, "web", 4 * GIB, 2, host) for name, host in PLACED.items())
    cluster = Cluster(hosts=hosts, roles=(WEB,), vms=vms, endpoints=endpoints)
    return GuestServices(cluster, TOKEN, 5.0)


def rollout(
    api: Any, sim: XapiSimulator, guests: Guests | None, lines: list[str], health: float = 60.0
) -> Rollout:
    return Rollout(
        api,
        waiter(api, sim),
        guest_services(guests.endpoints if guests is not None else {}),
        progress=lines.append,
        watch_seconds=2.0,
        health_seconds=health,
        drain_seconds=10.0,
        clean_seconds=60.0,
    )


def archive_vms(api: Any) -> dict[str, tuple[str, str | None, str, str | None]]:
    """name → (ref, host, power state, template mark)."""
    return {
        name: (vm.ref, vm.host, vm.power_state, vm.other_config.get(TEMPLATE_KEY))
        for name, vm in read_pool(api).vms.items()
    }


def snapshots(sim: XapiSimulator) -> list[str]:
    return [r["name_label"] for r in sim.vm_records().values() if r["is_a_snapshot"]]


def guest_vms(sim: XapiSimulator) -> list[dict[str, Any]]:
    """Every VM that is not a template, snapshot or control domain."""
    return [
        r
        for r in sim.vm_records().values()
        if not (r["is_a_template"] or r["is_a_snapshot"] or r["is_control_domain"])
    ]


def orphaned_disks(sim: XapiSimulator) -> list[str]:
    """Disks no VM, template or snapshot uses."""
    used = {vbd for r in sim.vm_records().values() for vbd in r["VBDs"]}
    return [ref for ref, vdi in sim.vdi_records().items() if not set(vdi["VBDs"]) & used]


def assert_ready(guests: Guests, *names: str) -> None:
    services = guest_services(guests.endpoints)
    for name in names:
        check = services.for_vm(name, "web").ready()
        assert check.ok, f"{name}: {check.detail}"


def test_a_dry_run_lists_the_canary_first_and_changes_nothing(
    api: Any, sim: XapiSimulator, guests: Guests
) -> None:
    before = sim.vm_records()
    lines: list[str] = []
    report = rollout(api, sim, guests, lines).run(WEB, GOOD, dry_run=True)
    assert report.ok and report.done == [] and report.reverted == []
    assert len(report.planned) == 3
    assert report.planned[0].startswith("[canary] web-1 on blade1 (")
    assert "clone arkiv-web-1.1, start on blade1" in report.planned[0]
    assert report.planned[1].startswith("[2/3] web-2") and report.planned[2].startswith(
        "[3/3] web-3"
    )
    assert sim.vm_records() == before and lines == []


def test_a_good_template_replaces_every_vm_on_its_own_host(
    api: Any, sim: XapiSimulator, guests: Guests
) -> None:
    old = archive_vms(api)
    lines: list[str] = []
    report = rollout(api, sim, guests, lines).run(WEB, GOOD, dry_run=False)
    assert report.ok, (report.failed, report.notes)
    assert [line.split(":")[0] for line in report.done] == ["web-1", "web-2", "web-3"]
    assert report.reverted == []
    assert lines[0] == "[canary] web-1: snapshot", "the canary goes first"
    assert lines.index("[canary] web-1: watch 2 s") < lines.index("[2/3] web-2: snapshot")
    assert "[2/3] web-2: watch 0.5 s" in lines, "the rest are watched for a shorter time"
    for name in PLACED:
        stop = guests.drain_at_stop[name][0]
        assert stop is not None and stop["drained"], f"{name} drained before it went down"
    assert not [note for note in report.notes if "drain" in note or "cleanly" in note]
    now = archive_vms(api)
    for name, host in PLACED.items():
        ref, where, power, template = now[name]
        assert (where, power, template) == (host, "Running", GOOD), name
        assert ref != old[name][0], f"{name} is a new VM"
    records = sim.vm_records()
    assert not {ref for ref, *_ in old.values()} & set(records), "the old VMs are destroyed"
    assert len(guest_vms(sim)) == 3
    assert snapshots(sim) == [], "no snapshot is left behind"
    assert any(note.startswith("removed the snapshot of web-1") for note in report.notes)
    assert orphaned_disks(sim) == [], "the old VMs' and the snapshots' disks are gone too"
    for name, host in PLACED.items():
        record = records[now[name][0]]
        assert record["ha_restart_priority"] == "restart" and record["ha_always_run"]
        assert record["affinity"] == sim.host_ref(host)
    assert_ready(guests, *PLACED)


def test_a_canary_that_fails_its_health_check_is_reverted_and_a_re_run_finishes(
    api: Any, sim: XapiSimulator, guests: Guests
) -> None:
    old = archive_vms(api)
    domids = {ref: r["domid"] for ref, r in sim.vm_records().items()}
    lines: list[str] = []
    report = rollout(api, sim, guests, lines, health=10.0).run(WEB, BROKEN, dry_run=False)
    assert not report.ok and (report.failed or "").startswith("web-1: not ready within 10 s")
    assert report.reverted == ["web-1"] and report.done == []
    now = archive_vms(api)
    assert now["web-1"][:3] == (old["web-1"][0], "blade1", "Running"), "the old VM runs again"
    record = sim.vm_records()[old["web-1"][0]]
    assert record["other_config"][ROLE_KEY] == "web" and record["other_config"][NAME_KEY] == "web-1"
    for name in ("web-2", "web-3"):
        assert (
            now[name] == old[name]
            and domids[old[name][0]] == sim.vm_records()[now[name][0]]["domid"]
        )
    assert not any(line.startswith(("[2/3]", "[3/3]")) for line in lines), "the rest untouched"
    assert snapshots(sim) == []
    assert [r["name_label"] for r in guest_vms(sim)].count(record["name_label"]) == 1
    assert not any("test:guest" in r["other_config"] for r in guest_vms(sim)), "broken VM gone"
    assert_ready(guests, "web-1")

    again = rollout(api, sim, guests, []).run(WEB, GOOD, dry_run=False)
    assert again.ok, (again.failed, again.notes)
    assert {name: vm[1:] for name, vm in archive_vms(api).items()} == {
        name: (host, "Running", GOOD) for name, host in PLACED.items()
    }
    assert snapshots(sim) == []
    assert_ready(guests, *PLACED)


def test_a_re_run_after_an_interrupted_rollout_continues_where_it_stopped(
    api: Any, sim: XapiSimulator, guests: Guests
) -> None:
    old = archive_vms(api)
    sim.faults.sr_full_on_next_snapshot(old["web-2"][0])
    first = rollout(api, sim, guests, []).run(WEB, GOOD, dry_run=False)
    assert "SR_FULL" in (first.failed or "") and (first.failed or "").startswith("web-2")
    assert [line.split(":")[0] for line in first.done] == ["web-1"]
    assert first.reverted == [], "a failed snapshot touched nothing, so nothing is reverted"
    assert archive_vms(api)["web-2"] == old["web-2"] and snapshots(sim) == []

    lines: list[str] = []
    second = rollout(api, sim, guests, lines).run(WEB, GOOD, dry_run=False)
    assert second.ok, (second.failed, second.notes)
    assert "web-1 already runs arkiv-web-1.1: skipped" in second.notes
    assert [line.split(":")[0] for line in second.done] == ["web-2", "web-3"]
    assert lines[0] == "[canary] web-2: snapshot", "the first VM still to do is the canary"
    assert {vm[3] for vm in archive_vms(api).values()} == {GOOD}
    assert snapshots(sim) == []
    assert_ready(guests, *PLACED)


@pytest.mark.parametrize(
    ("drain", "says"), [("database-primary", "PostgreSQL"), ("object-store", "MinIO")]
)
def test_a_role_never_reverted_from_a_snapshot_is_refused_before_anything(
    api: Any, sim: XapiSimulator, web: None, drain: str, says: str
) -> None:
    before = sim.vm_records()
    role = Role("store", 1, 4 * GIB, 2, drain=drain)  # type: ignore[arg-type]
    with pytest.raises(RolloutRefused, match=says):
        rollout(api, sim, None, []).run(role, GOOD, dry_run=False)
    assert sim.vm_records() == before and sim.task_records() == {}


def test_a_missing_template_or_a_halted_vm_is_refused_before_anything(
    api: Any, sim: XapiSimulator, web: None
) -> None:
    with pytest.raises(RolloutRefused, match="not in the pool"):
        rollout(api, sim, None, []).run(WEB, "arkiv-web-9.9", dry_run=False)
    waiter(api, sim).run("VM.clean_shutdown", read_pool(api).vms["web-2"].ref)
    before = sim.vm_records()
    with pytest.raises(RolloutRefused, match="web-2 is Halted"):
        rollout(api, sim, None, []).run(WEB, GOOD, dry_run=False)
    assert sim.vm_records() == before


def test_a_vm_left_unmarked_by_an_interrupted_rollout_is_refused(
    api: Any, sim: XapiSimulator, web: None
) -> None:
    """The run stopped after taking web-3's marks off, before its replacement was marked: the
    pool no longer shows a web-3, only the snapshot does."""
    ref = read_pool(api).vms["web-3"].ref
    waiter(api, sim).run("VM.snapshot", ref, f"arkiv-rollout {GOOD} web-3")
    for key in (ROLE_KEY, NAME_KEY):
        api.VM.remove_from_other_config(ref, key)
    before = sim.vm_records()
    with pytest.raises(RolloutRefused, match=r"web-3 has the snapshot .* interrupted rollout"):
        rollout(api, sim, None, []).run(WEB, GOOD, dry_run=False)
    assert sim.vm_records() == before
