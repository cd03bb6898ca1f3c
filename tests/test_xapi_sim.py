"""The XAPI simulator, driven through the real XenAPI SDK over XML-RPC.

Each test builds a small pool so that the numbers are easy to check by hand: hosts of 64 GiB
with 1 GiB of host overhead and a 4 GiB dom0, and templates whose overheads follow XAPI's HVM
formula.
"""

from __future__ import annotations

import re
import xmlrpc.client
from collections.abc import Iterator
from typing import Any

import pytest
import XenAPI

from hypervisor.xapi_sim import HostSpec, TemplateSpec, XapiSimulator
from hypervisor.xapi_sim.memory import vm_overhead

GiB = 1024**3
NULL = "OpaqueRef:NULL"
HOST_MEMORY = 64 * GiB
HOST_OVERHEAD = 1 * GiB
DOM0 = 4 * GiB


def _hosts(count: int = 3, memory: int = HOST_MEMORY) -> list[HostSpec]:
    return [
        HostSpec(f"blade{i}", memory, 16, dom0_memory=DOM0, memory_overhead=HOST_OVERHEAD)
        for i in range(1, count + 1)
    ]


TEMPLATES = [
    TemplateSpec("small", 4 * GiB, 2, 10 * GiB),
    TemplateSpec("big", 40 * GiB, 8, 10 * GiB),
    TemplateSpec("wide", 4 * GiB, 64, 10 * GiB),
    TemplateSpec("nodrivers", 4 * GiB, 2, 10 * GiB, has_pv_drivers=False),
]


@pytest.fixture
def sim() -> Iterator[XapiSimulator]:
    with XapiSimulator(hosts=_hosts(), templates=TEMPLATES) as simulator:
        yield simulator


@pytest.fixture
def session(sim: XapiSimulator) -> Iterator[Any]:
    s = XenAPI.Session(sim.url)
    s.xenapi.login_with_password(sim.username, sim.password, "2.0", "test")
    yield s
    s.xenapi.session.logout()


def _new_vm(x: Any, sim: XapiSimulator, template: str, name: str) -> str:
    vm = str(x.VM.clone(sim.vm_ref(template), name))
    x.VM.provision(vm)
    x.VM.set_is_a_template(vm, False)
    return vm


def _details(excinfo: pytest.ExceptionInfo[XenAPI.Failure]) -> list[str]:
    return list(excinfo.value.details)


def _task_value(result: str) -> str:
    match = re.fullmatch(r"<value>(.*)</value>", result)
    assert match, result
    return match.group(1)


# ---- sessions and wire ---------------------------------------------------------------------


def test_login_bad_password_and_session_invalid(sim: XapiSimulator) -> None:
    s = XenAPI.Session(sim.url)
    with pytest.raises(XenAPI.Failure) as err:
        s.xenapi.login_with_password("root", "wrong", "2.0", "test")
    assert _details(err) == ["SESSION_AUTHENTICATION_FAILED", "root", "Authentication failure"]
    raw: Any = xmlrpc.client.ServerProxy(sim.url)
    answer: Any = raw.VM.get_all("OpaqueRef:nope")
    assert answer == {
        "Status": "Failure",
        "ErrorDescription": ["SESSION_INVALID", "OpaqueRef:nope"],
    }


def test_sdk_logs_in_again_after_expiry_and_logout(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    first = session._session
    assert first.startswith("OpaqueRef:")
    assert sim.faults.expire_sessions() == 1
    assert len(x.host.get_all()) == 3  # SESSION_INVALID, re-login, retry
    assert session._session != first
    raw: Any = xmlrpc.client.ServerProxy(sim.url)
    assert raw.session.logout(session._session) == {"Status": "Success", "Value": ""}
    assert len(x.VM.get_all()) > 0  # logged out: the SDK logs in again


def test_envelopes_ints_as_strings_and_refs(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    raw: Any = xmlrpc.client.ServerProxy(sim.url)
    answer: Any = raw.host.get_all_records(session._session)
    assert answer["Status"] == "Success"
    for ref, host in answer["Value"].items():
        assert re.fullmatch(r"OpaqueRef:[0-9a-f-]{36}", ref)
        assert host["memory_overhead"] == str(HOST_OVERHEAD)
        assert host["cpu_info"]["cpu_count"] == "16"
    template = x.VM.get_record(sim.vm_ref("small"))
    assert template["memory_static_max"] == str(4 * GiB)
    assert template["VCPUs_max"] == "2"
    assert template["is_a_template"] is True
    assert isinstance(template["snapshot_time"], xmlrpc.client.DateTime)
    assert raw.VM.no_such_call(session._session) == {
        "Status": "Failure",
        "ErrorDescription": ["MESSAGE_METHOD_UNKNOWN", "VM.no_such_call"],
    }
    assert raw.VM.clone(session._session, sim.vm_ref("small"))["ErrorDescription"] == [
        "MESSAGE_PARAMETER_COUNT_MISMATCH",
        "VM.clone",
        "3",
        "2",
    ]
    assert x.VM.set_affinity(sim.vm_ref("small"), NULL) == ""


def test_handle_invalid_after_destroy(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    vm = _new_vm(x, sim, "small", "gone")
    x.VM.destroy(vm)
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.get_record(vm)
    assert _details(err) == ["HANDLE_INVALID", "VM", vm]
    again = _new_vm(x, sim, "small", "gone")
    assert again != vm  # refs are never reused


# ---- power states and memory ---------------------------------------------------------------


def test_power_state_errors_and_check_order(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    vm = _new_vm(x, sim, "small", "vm")
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.clean_shutdown(vm)
    assert _details(err) == ["VM_BAD_POWER_STATE", vm, "running", "halted"]
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.hard_reboot(vm)
    assert _details(err) == ["VM_BAD_POWER_STATE", vm, "paused, running", "halted"]
    template = sim.vm_ref("small")
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.start(template, False, False)
    assert _details(err) == ["VM_IS_TEMPLATE", template, "start"]
    x.VM.start_on(vm, sim.host_ref("blade1"), False, False)
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.destroy(vm)
    assert _details(err) == ["VM_BAD_POWER_STATE", vm, "halted, suspended", "running"]
    lacking = _new_vm(x, sim, "nodrivers", "old")
    x.VM.start_on(lacking, sim.host_ref("blade1"), False, False)
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.clean_shutdown(lacking)
    assert _details(err) == ["VM_LACKS_FEATURE", lacking]
    x.VM.hard_shutdown(lacking)
    assert x.VM.get_power_state(lacking) == "Halted"


def test_compute_free_memory_counts_dom0_overheads(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    host = sim.host_ref("blade1")
    empty = HOST_MEMORY - HOST_OVERHEAD - DOM0
    assert x.host.compute_free_memory(host) == str(empty)
    vm = _new_vm(x, sim, "small", "vm")
    overhead = vm_overhead(4 * GiB, 2)
    assert x.VM.get_memory_overhead(vm) == str(overhead)
    x.VM.start_on(vm, host, False, False)
    assert x.host.compute_free_memory(host) == str(empty - 4 * GiB - overhead)
    assert vm in x.host.get_resident_VMs(host)


def test_start_on_refused_with_needed_and_available(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    host = sim.host_ref("blade1")
    first = _new_vm(x, sim, "big", "big1")
    x.VM.start_on(first, host, False, False)
    second = _new_vm(x, sim, "big", "big2")
    available = int(x.host.compute_free_memory(host))
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.start_on(second, host, False, False)
    needed = 40 * GiB + vm_overhead(40 * GiB, 8)
    assert _details(err) == ["HOST_NOT_ENOUGH_FREE_MEMORY", str(needed), str(available)]
    wide = _new_vm(x, sim, "wide", "wide")
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.start_on(wide, sim.host_ref("blade2"), False, False)
    assert _details(err) == ["HOST_NOT_ENOUGH_PCPUS", "64", "16"]
    x.VM.start(second, False, False)  # xapi's chooser: blade2 has the most slack
    assert x.VM.get_resident_on(second) == sim.host_ref("blade2")


def test_async_start_and_migrate_on_the_virtual_clock(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    b1, b2 = sim.host_ref("blade1"), sim.host_ref("blade2")
    vm = _new_vm(x, sim, "small", "vm")
    task = x.Async.VM.start_on(vm, b1, False, False)
    assert x.task.get_status(task) == "pending"
    assert x.VM.get_scheduled_to_be_resident_on(vm) == b1
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.hard_shutdown(vm)
    assert _details(err) == ["VM_BAD_POWER_STATE", vm, "paused, suspended, running", "halted"]
    sim.advance(19)
    assert x.task.get_status(task) == "pending"
    sim.advance(1)
    record = x.task.get_record(task)
    assert (record["status"], record["result"], record["progress"]) == ("success", "", 1.0)
    assert x.VM.get_power_state(vm) == "Running"
    before = int(x.host.compute_free_memory(b2))
    footprint = 4 * GiB + vm_overhead(4 * GiB, 2)
    task = x.Async.VM.pool_migrate(vm, b2, {"live": "true"})
    # in flight: counted on both hosts
    assert int(x.host.compute_free_memory(b2)) == before - footprint
    assert x.VM.get_resident_on(vm) == b1
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.clean_shutdown(vm)
    assert _details(err) == ["OTHER_OPERATION_IN_PROGRESS", "VM", vm, "pool_migrate", task]
    sim.advance(30)
    assert x.task.get_status(task) == "success"
    assert x.VM.get_resident_on(vm) == b2
    assert int(x.host.compute_free_memory(b2)) == before - footprint
    x.task.destroy(task)
    with pytest.raises(XenAPI.Failure) as err:
        x.task.get_status(task)
    assert _details(err) == ["HANDLE_INVALID", "task", task]


def test_async_clone_result_and_failed_task(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    task = x.Async.VM.clone(sim.vm_ref("small"), "c1")
    sim.advance(5)
    record = x.task.get_record(task)
    assert record["status"] == "success"
    clone = _task_value(record["result"])
    assert x.VM.get_name_label(clone) == "c1"
    assert isinstance(record["created"], xmlrpc.client.DateTime)
    bad = x.Async.VM.clean_shutdown(clone)
    assert x.task.get_status(bad) == "failure"
    assert x.task.get_error_info(bad) == ["VM_BAD_POWER_STATE", clone, "running", "halted"]


# ---- clone, snapshot, revert, destroy ------------------------------------------------------


def test_snapshot_revert_and_clone_from_snapshot(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    vm = _new_vm(x, sim, "small", "vm")
    host = sim.host_ref("blade1")
    x.VM.start_on(vm, host, False, False)
    snap = x.VM.snapshot(vm, "before-upgrade")
    rec = x.VM.get_record(snap)
    assert rec["is_a_snapshot"] is True and rec["is_a_template"] is True
    assert (rec["power_state"], rec["resident_on"], rec["snapshot_of"]) == ("Halted", NULL, vm)
    assert rec["snapshot_info"]["power-state-at-snapshot"] == "Running"
    assert x.VM.get_snapshots(vm) == [snap]
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.start(snap, False, False)
    assert _details(err) == ["VM_IS_SNAPSHOT", snap, "start"]
    x.VM.add_to_other_config(vm, "arkiv:version", "1.1")
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.add_to_other_config(vm, "arkiv:version", "1.2")
    assert _details(err) == [
        "MAP_DUPLICATE_KEY",
        "VM",
        "other_config",
        x.VM.get_uuid(vm),
        "arkiv:version",
    ]
    x.VM.revert(snap)  # hard-shuts the running VM first
    after = x.VM.get_record(vm)
    assert (after["power_state"], after["resident_on"]) == ("Halted", NULL)
    assert "arkiv:version" not in after["other_config"]
    copy = x.VM.clone(snap, "from-snapshot")
    assert x.VM.get_is_a_template(copy) is False
    assert x.VM.get_is_a_snapshot(copy) is False
    x.VM.start_on(copy, host, False, False)


def test_destroy_leaves_vdis(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    vm = _new_vm(x, sim, "small", "vm")
    vbds = x.VM.get_VBDs(vm)
    vdi = x.VBD.get_VDI(vbds[0])
    x.VM.destroy(vm)
    assert x.VDI.get_record(vdi)["VBDs"] == []
    with pytest.raises(XenAPI.Failure) as err:
        x.VBD.get_record(vbds[0])
    assert _details(err) == ["HANDLE_INVALID", "VBD", vbds[0]]


def test_groups_and_ha_priority(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    group = x.VM_group.create(
        {"name_label": "dicom", "name_description": "", "placement": "anti_affinity"}
    )
    vms = [_new_vm(x, sim, "small", f"d{i}") for i in range(3)]
    for vm in vms:
        x.VM.set_groups(vm, [group])
        x.VM.start(vm, False, False)
    assert len({x.VM.get_resident_on(vm) for vm in vms}) == 3  # spread by the group
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.set_groups(vms[0], [group, group])
    assert _details(err) == ["TOO_MANY_GROUPS"]
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.set_ha_restart_priority(vms[0], "always")
    assert _details(err) == ["INVALID_VALUE", "ha_restart_priority", "always"]
    x.VM.set_ha_restart_priority(vms[0], "restart")
    assert x.VM.get_ha_always_run(vms[0]) is True
    x.VM_group.destroy(group)
    assert x.VM.get_groups(vms[0]) == []


# ---- HA planning ---------------------------------------------------------------------------


def test_failover_plan_and_max_failures() -> None:
    with XapiSimulator(hosts=_hosts(3), templates=TEMPLATES) as sim:
        s = XenAPI.Session(sim.url)
        s.xenapi.login_with_password(sim.username, sim.password, "2.0", "t")
        x = s.xenapi
        b = [sim.host_ref(f"blade{i}") for i in (1, 2, 3)]
        bigs = [_new_vm(x, sim, "big", f"big{i}") for i in range(3)]
        for vm, host in zip(bigs, b, strict=True):
            x.VM.start_on(vm, host, False, False)
        plan = x.pool.ha_compute_vm_failover_plan([b[0]], [bigs[0]])
        # 59 GiB free at static_max less 40 GiB + overhead each: a 40 GiB VM cannot move
        assert plan == {bigs[0]: {"error_code": "HOST_NOT_ENOUGH_FREE_MEMORY"}}
        config = {vm: "restart" for vm in bigs}
        assert x.pool.ha_compute_hypothetical_max_host_failures_to_tolerate(config) == "0"
        x.VM.hard_shutdown(bigs[2])
        small = _new_vm(x, sim, "small", "s")
        x.VM.start_on(small, b[0], False, False)
        plan = x.pool.ha_compute_vm_failover_plan([b[0]], [bigs[0], small])
        assert plan[bigs[0]] == {"host": b[2]}  # biggest first, to the emptiest host
        assert plan[small] == {"host": b[1]}
        config = {bigs[0]: "restart", bigs[1]: "restart", small: "restart"}
        assert x.pool.ha_compute_hypothetical_max_host_failures_to_tolerate(config) == "1"
        assert x.pool.ha_failover_plan_exists("1") is True  # nothing is protected yet
        for vm in (bigs[0], bigs[1], small):
            x.VM.set_ha_restart_priority(vm, "restart")
        assert x.pool.ha_failover_plan_exists("1") is True
        assert x.pool.ha_failover_plan_exists("2") is False
        assert x.pool.ha_compute_max_host_failures_to_tolerate() == "1"
        s.xenapi.session.logout()


# ---- faults --------------------------------------------------------------------------------


def test_host_crash_with_ha_restarts_protected_vms(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    b1, b2 = sim.host_ref("blade1"), sim.host_ref("blade2")
    protected = _new_vm(x, sim, "small", "protected")
    plain = _new_vm(x, sim, "small", "plain")
    x.VM.set_ha_restart_priority(protected, "restart")
    x.VM.start_on(protected, b1, False, False)
    x.VM.start_on(plain, b1, False, False)
    x.pool.enable_ha([], {})
    restarted = sim.faults.crash_host(b1)
    metrics = x.host.get_metrics(b1)
    assert x.host_metrics.get_live(metrics) is False
    assert restarted == {protected: x.VM.get_resident_on(protected)}
    assert x.VM.get_resident_on(protected) in (b2, sim.host_ref("blade3"))
    assert (x.VM.get_power_state(plain), x.VM.get_resident_on(plain)) == ("Halted", NULL)
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.start_on(plain, b1, False, False)
    assert _details(err) == ["HOST_NOT_LIVE"]
    sim.faults.recover_host(b1)
    x.VM.start_on(plain, b1, False, False)


def test_failed_migration_leaves_vm_on_source(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    b1, b2 = sim.host_ref("blade1"), sim.host_ref("blade2")
    vm = _new_vm(x, sim, "small", "vm")
    x.VM.start_on(vm, b1, False, False)
    free = x.host.compute_free_memory(b2)
    sim.faults.fail_next_migration(vm, "connection reset")
    task = x.Async.VM.pool_migrate(vm, b2, {"live": "true"})
    sim.advance(30)
    assert x.task.get_status(task) == "failure"
    assert x.task.get_error_info(task) == ["VM_MIGRATE_FAILED", vm, b1, b2, "connection reset"]
    assert x.VM.get_resident_on(vm) == b1
    assert x.host.compute_free_memory(b2) == free  # reservation released
    x.VM.pool_migrate(vm, b2, {"live": "true"})  # only the next one failed
    assert x.VM.get_resident_on(vm) == b2


def test_hung_shutdown(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    vm = _new_vm(x, sim, "small", "vm")
    x.VM.start_on(vm, sim.host_ref("blade1"), False, False)
    sim.faults.hang_shutdown(vm)
    task = x.Async.VM.clean_shutdown(vm)
    sim.advance(3600)
    assert x.task.get_status(task) == "pending"
    x.task.cancel(task)
    assert x.task.get_status(task) == "cancelled"
    assert x.task.get_error_info(task) == ["TASK_CANCELLED", task]
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.clean_shutdown(vm)
    assert _details(err) == ["VM_SHUTDOWN_TIMEOUT", vm, "1200"]
    sim.faults.hang_shutdown(vm, mode="timeout", timeout=60)
    task = x.Async.VM.clean_shutdown(vm)
    sim.advance(60)
    assert x.task.get_error_info(task) == ["VM_SHUTDOWN_TIMEOUT", vm, "60"]
    assert x.VM.get_power_state(vm) == "Running"
    x.VM.hard_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"


def test_sr_full_on_next_snapshot_and_sim_namespace(sim: XapiSimulator, session: Any) -> None:
    x = session.xenapi
    vm = _new_vm(x, sim, "small", "vm")
    raw: Any = xmlrpc.client.ServerProxy(sim.url)
    assert raw.sim.sr_full_on_next_snapshot(vm) == {"Status": "Success", "Value": ""}
    with pytest.raises(XenAPI.Failure) as err:
        x.VM.snapshot(vm, "s")
    details = _details(err)
    assert details[:2] == ["SR_FULL", str(10 * GiB)]
    assert int(details[2]) > 0
    assert x.VM.get_snapshots(vm) == []
    x.VM.snapshot(vm, "s")  # only the next one
    assert raw.sim.advance(5) == {"Status": "Success", "Value": ""}
    assert sim.clock == 5


def test_revert_recreates_a_destroyed_vm_and_affinity_wins(
    sim: XapiSimulator, session: Any
) -> None:
    x = session.xenapi
    vm = _new_vm(x, sim, "small", "vm")
    uuid = x.VM.get_uuid(vm)
    snap = x.VM.snapshot(vm, "s")
    x.VM.destroy(vm)
    assert x.VM.get_snapshot_of(snap) == vm
    x.VM.revert(snap)
    assert (x.VM.get_uuid(vm), x.VM.get_power_state(vm)) == (uuid, "Halted")
    assert len(x.VM.get_VBDs(vm)) == 1
    b3 = sim.host_ref("blade3")
    x.VM.set_affinity(vm, b3)
    x.VM.start(vm, False, False)
    assert x.VM.get_resident_on(vm) == b3


def test_seeded_placement_is_deterministic() -> None:
    chosen = []
    for _ in range(2):
        with XapiSimulator(hosts=_hosts(), templates=TEMPLATES, placement="seeded", seed=7) as sim:
            names = {ref: h["name_label"] for ref, h in sim.host_records().items()}
            runs = []
            for i in range(4):
                envelope = sim.call("session.login_with_password", "root", "xenroot")
                handle = envelope["Value"]
                vm = sim.call("VM.clone", handle, sim.vm_ref("small"), f"v{i}")["Value"]
                sim.call("VM.set_is_a_template", handle, vm, False)
                assert sim.call("VM.start", handle, vm, False, False) == {
                    "Status": "Success",
                    "Value": "",
                }
                runs.append(names[sim.vm_records()[vm]["resident_on"]])
            chosen.append(runs)
    assert chosen[0] == chosen[1]
