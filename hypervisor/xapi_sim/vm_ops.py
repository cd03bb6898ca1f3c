"""VM lifecycle with XAPI's power-state rules, check order and error params.

Every operation first runs `check_operation` in xapi_vm_lifecycle's order (blocked, power state,
other operation in progress, template/snapshot, feature), then the host checks of
assert_can_boot_here where it places the VM, and returns a `Deferred` whose `finish` applies the
effect. Long operations take reservations up front (scheduled_to_be_resident_on), exactly the
window in which XAPI counts a VM on two hosts.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

from hypervisor.xapi_sim import memory
from hypervisor.xapi_sim.errors import ApiError
from hypervisor.xapi_sim.objects import Record, State, vbd_record, vdi_record
from hypervisor.xapi_sim.tasks import Deferred, duration_of
from hypervisor.xapi_sim.wire import NULL_REF, as_bool, as_int, as_list, as_map, as_str

ALLOWED_STATES: dict[str, tuple[str, ...]] = {
    "start": ("Halted",),
    "start_on": ("Halted",),
    "provision": ("Halted",),
    "clean_shutdown": ("Running",),
    "clean_reboot": ("Running",),
    "pool_migrate": ("Running",),
    "hard_reboot": ("Paused", "Running"),
    "hard_shutdown": ("Paused", "Suspended", "Running"),
    "shutdown": ("Paused", "Suspended", "Running"),
    "clone": ("Halted",),
    "copy": ("Halted",),
    "destroy": ("Halted", "Suspended"),
    "snapshot": ("Halted", "Paused", "Suspended", "Running"),
    "revert": ("Halted", "Paused", "Suspended", "Running"),
}
SNAPSHOT_OPS = {"clone", "copy", "destroy", "revert", "hard_shutdown", "export"}
TEMPLATE_OPS = {"clone", "copy", "provision", "destroy", "export"}
PARALLEL_OPS = {"clone", "copy", "snapshot", "checkpoint", "export"}
CLEAN_OPS = {"clean_shutdown", "clean_reboot"}
HA_PRIORITIES = ("restart", "best-effort", "")
_domids = itertools.count(1)


# ---- checks --------------------------------------------------------------------------------


def check_operation(state: State, vm_ref: str, op: str) -> Record:
    """xapi_vm_lifecycle.check_operation_error, in its order; returns the VM record."""
    vm = state.get("VM", vm_ref)
    if op in vm["blocked_operations"]:
        raise ApiError("OPERATION_BLOCKED", vm_ref, vm["blocked_operations"][op])
    allowed = ALLOWED_STATES.get(op)
    if vm["is_a_snapshot"] and op in ("clone", "copy"):
        allowed = ("Halted", "Suspended")
    if allowed is not None and vm["power_state"] not in allowed:
        raise ApiError(
            "VM_BAD_POWER_STATE",
            vm_ref,
            ", ".join(s.lower() for s in allowed),
            vm["power_state"].lower(),
        )
    running = dict(vm["current_operations"])
    if running and not (op in PARALLEL_OPS and set(running.values()) <= PARALLEL_OPS):
        task, other = next(iter(running.items()))
        raise ApiError("OTHER_OPERATION_IN_PROGRESS", "VM", vm_ref, other, task)
    if vm["is_a_snapshot"]:
        if op not in SNAPSHOT_OPS:
            raise ApiError("VM_IS_SNAPSHOT", vm_ref, op)
    elif vm["is_a_template"] and op not in TEMPLATE_OPS:
        raise ApiError("VM_IS_TEMPLATE", vm_ref, op)
    if vm["is_control_domain"]:
        raise ApiError("OPERATION_NOT_ALLOWED", f"{op} is not allowed on a control domain")
    if op in CLEAN_OPS and not vm["_has_pv_drivers"]:
        raise ApiError("VM_LACKS_FEATURE", vm_ref)
    return vm


def assert_can_boot_here(
    state: State, vm_ref: str, host_ref: str, memory_check: bool = True
) -> None:
    """xapi_vm_helpers.assert_can_boot_here, in its order: live, enabled, SRs, memory, pCPUs."""
    vm = state.get("VM", vm_ref)
    host = state.get("host", host_ref)
    if not state.host_live(host_ref):
        raise ApiError("HOST_NOT_LIVE")
    if not host["enabled"]:
        raise ApiError("HOST_DISABLED", host_ref)
    for sr_ref in vm_srs(state, vm_ref):
        sr = state.get("SR", sr_ref)
        if not sr["shared"] and sr["_host"] != host_ref:
            raise ApiError("VM_REQUIRES_SR", vm_ref, sr_ref)
    if memory_check:
        memory.check_memory(state, vm_ref, host_ref)
    memory.check_pcpus(state, vm_ref, host_ref)
    del vm


def vm_srs(state: State, vm_ref: str) -> list[str]:
    srs = []
    for vbd in state.all("VBD").values():
        if vbd["VM"] == vm_ref and vbd["VDI"] != NULL_REF and state.exists("VDI", vbd["VDI"]):
            sr = state.get("VDI", vbd["VDI"])["SR"]
            if sr not in srs:
                srs.append(sr)
    return srs


def vm_vdis(state: State, vm_ref: str) -> list[tuple[str, str]]:
    """(VDI ref, userdevice) of the VM's disks, in device order."""
    found = [
        (vbd["VDI"], vbd["userdevice"])
        for vbd in state.all("VBD").values()
        if vbd["VM"] == vm_ref and vbd["VDI"] != NULL_REF and state.exists("VDI", vbd["VDI"])
    ]
    return sorted(found, key=lambda item: item[1])


# ---- placement -----------------------------------------------------------------------------


def _group_of(vm: Record, state: State) -> str | None:
    for group in vm["groups"]:
        if state.exists("VM_group", group) and state.get("VM_group", group)["placement"] == (
            "anti_affinity"
        ):
            return str(group)
    return None


def _group_count(state: State, group: str, host_ref: str, exclude: str) -> int:
    return sum(
        1
        for ref, vm in state.all("VM").items()
        if ref != exclude
        and group in vm["groups"]
        and host_ref in (vm["resident_on"], vm["scheduled_to_be_resident_on"])
    )


def choose_host(state: State, vm_ref: str) -> str:
    """VM.start without a host (vm_placement.ml): the affinity host if it can run the VM, then
    hosts ranked by the anti-affinity group's count, each rank tried through the definite
    (static_max), probable (dynamic_max) and possible (dynamic_min) categories. XAPI picks at
    random among equals; the simulator takes the first (most slack, then pool order) or, in
    "seeded" mode, a seeded random choice, so tests stay deterministic."""
    vm = state.get("VM", vm_ref)
    hosts = list(state.all("host"))
    usable = []
    for host in hosts:
        try:
            assert_can_boot_here(state, vm_ref, host)
        except ApiError:
            continue
        usable.append(host)
    affinity = vm["affinity"]
    if affinity in usable:
        return str(affinity)
    group = _group_of(vm, state)
    ranks: list[list[str]]
    if group is None:
        ranks = [usable]
    else:
        counts = sorted({_group_count(state, group, h, vm_ref) for h in usable})
        ranks = [[h for h in usable if _group_count(state, group, h, vm_ref) == c] for c in counts]
    overhead = int(vm["memory_overhead"])
    for rank in ranks:
        for field in ("memory_static_max", "memory_dynamic_max", "memory_dynamic_min"):
            need = int(vm[field]) + overhead
            slack = {h: memory.compute_free_memory(state, h, vm_ref) - need for h in rank}
            fits = [h for h in rank if slack[h] >= 0]
            if not fits:
                continue
            if state.placement_mode == "seeded":
                return state.rng.choice(fits)
            master = state.get("pool", state.pool_ref())["master"]
            # "bias away from pool master": its value counts as (v - 1) / 2
            value = {h: (slack[h] - 1) / 2 if h == master else slack[h] for h in fits}
            return max(fits, key=lambda h: (value[h], -hosts.index(h)))
    # no host passes with memory: like XAPI, retry without the memory check and let the start
    # itself fail with the memory error
    for host in hosts:
        try:
            assert_can_boot_here(state, vm_ref, host, memory_check=False)
        except ApiError:
            continue
        memory.check_memory(state, vm_ref, host)
        return host
    raise ApiError("NO_HOSTS_AVAILABLE")


def note_group_breach(state: State, vm_ref: str) -> None:
    """ALL_RUNNING_VMS_IN_ANTI_AFFINITY_GRP_ON_SINGLE_HOST when a group's running VMs (2+) all
    sit on one host: the rules are soft, XAPI only raises this alert."""
    vm = state.get("VM", vm_ref)
    group = _group_of(vm, state)
    if group is None:
        return
    hosts = {
        other["resident_on"]
        for other in state.all("VM").values()
        if group in other["groups"] and other["power_state"] == "Running"
    }
    members = sum(
        1
        for other in state.all("VM").values()
        if group in other["groups"] and other["power_state"] == "Running"
    )
    if members > 1 and len(hosts) == 1:
        state.alerts.append(("ALL_RUNNING_VMS_IN_ANTI_AFFINITY_GRP_ON_SINGLE_HOST", group))


# ---- lifecycle -----------------------------------------------------------------------------


def _halt(vm: Record) -> None:
    vm["power_state"] = "Halted"
    vm["resident_on"] = NULL_REF
    vm["scheduled_to_be_resident_on"] = NULL_REF
    vm["domid"] = -1


def _boot(state: State, vm_ref: str, host_ref: str, op: str, paused: bool) -> Deferred:
    vm = state.get("VM", vm_ref)
    assert_can_boot_here(state, vm_ref, host_ref)
    vm["scheduled_to_be_resident_on"] = host_ref

    def finish() -> str:
        if not state.host_live(host_ref):
            vm["scheduled_to_be_resident_on"] = NULL_REF
            raise ApiError("HOST_OFFLINE", host_ref)
        vm["scheduled_to_be_resident_on"] = NULL_REF
        vm["resident_on"] = host_ref
        vm["power_state"] = "Paused" if paused else "Running"
        vm["domid"] = next(_domids)
        vm["memory_target"] = vm["memory_dynamic_max"]
        if vm["ha_restart_priority"] == "restart":
            vm["ha_always_run"] = True
        note_group_breach(state, vm_ref)
        return ""

    def abort() -> None:
        vm["scheduled_to_be_resident_on"] = NULL_REF

    return Deferred(op, finish, duration_of(state, op), vm_ref, (host_ref,), abort)


def start(state: State, vm_ref: str, paused: Any, force: Any) -> Deferred:
    check_operation(state, vm_ref, "start")
    as_bool(force, "force")
    return _boot(state, vm_ref, choose_host(state, vm_ref), "start", as_bool(paused, "paused"))


def start_on(state: State, vm_ref: str, host: Any, paused: Any, force: Any) -> Deferred:
    check_operation(state, vm_ref, "start_on")
    host_ref = as_str(host, "host")
    state.get("host", host_ref)
    as_bool(force, "force")
    return _boot(state, vm_ref, host_ref, "start_on", as_bool(paused, "paused"))


def _guest_op(state: State, vm_ref: str, op: str, effect: Callable[[], None]) -> Deferred:
    """A clean operation needs the guest to acknowledge; an injected hang means it never does
    (the task stays pending) or XAPI gives up after a timeout (VM_SHUTDOWN_TIMEOUT)."""
    hang = state.faults.hang_shutdown.get(vm_ref)
    host = state.get("VM", vm_ref)["resident_on"]
    if hang is None:

        def finish() -> str:
            effect()
            return ""

        return Deferred(op, finish, duration_of(state, op), vm_ref, (host,))
    mode, timeout = hang
    error = ApiError("VM_SHUTDOWN_TIMEOUT", vm_ref, f"{timeout:g}")
    if mode == "forever":
        return Deferred(op, lambda: None, None, vm_ref, (host,), sync_error=error)

    def time_out() -> None:
        raise error

    return Deferred(op, time_out, timeout, vm_ref, (host,))


def clean_shutdown(state: State, vm_ref: str) -> Deferred:
    vm = check_operation(state, vm_ref, "clean_shutdown")

    def effect() -> None:
        _halt(vm)
        vm["ha_always_run"] = False

    return _guest_op(state, vm_ref, "clean_shutdown", effect)


def hard_shutdown(state: State, vm_ref: str) -> Deferred:
    vm = check_operation(state, vm_ref, "hard_shutdown")

    def finish() -> str:
        _halt(vm)
        vm["ha_always_run"] = False
        return ""

    return Deferred("hard_shutdown", finish, duration_of(state, "hard_shutdown"), vm_ref)


def shutdown(state: State, vm_ref: str) -> Deferred:
    """VM.shutdown: clean if the guest can, else hard (so a hung or driverless guest still
    halts, after the clean attempt's acknowledgement timeout)."""
    vm = check_operation(state, vm_ref, "shutdown")

    def finish() -> str:
        _halt(vm)
        vm["ha_always_run"] = False
        return ""

    duration = duration_of(state, "shutdown")
    if vm_ref in state.faults.hang_shutdown or not vm["_has_pv_drivers"]:
        duration += 60.0
    return Deferred("shutdown", finish, duration, vm_ref)


def clean_reboot(state: State, vm_ref: str) -> Deferred:
    vm = check_operation(state, vm_ref, "clean_reboot")

    def effect() -> None:
        vm["domid"] = next(_domids)

    return _guest_op(state, vm_ref, "clean_reboot", effect)


def hard_reboot(state: State, vm_ref: str) -> Deferred:
    vm = check_operation(state, vm_ref, "hard_reboot")

    def finish() -> str:
        vm["domid"] = next(_domids)
        vm["power_state"] = "Running"
        return ""

    return Deferred("hard_reboot", finish, duration_of(state, "hard_reboot"), vm_ref)


def pool_migrate(state: State, vm_ref: str, host: Any, options: Any) -> Deferred:
    """Memory is reserved on the destination while the source keeps the VM, for the whole
    (virtual) duration; an injected failure leaves the VM where it was."""
    vm = check_operation(state, vm_ref, "pool_migrate")
    dest = as_str(host, "host")
    state.get("host", dest)
    as_map(options, "options")
    source = str(vm["resident_on"])
    assert_can_boot_here(state, vm_ref, dest)
    vm["scheduled_to_be_resident_on"] = dest
    message = state.faults.fail_migration.pop(vm_ref, None)

    def abort() -> None:
        vm["scheduled_to_be_resident_on"] = NULL_REF

    def finish() -> str:
        vm["scheduled_to_be_resident_on"] = NULL_REF
        if message is not None:
            raise ApiError("VM_MIGRATE_FAILED", vm_ref, source, dest, message)
        if not state.host_live(dest):
            raise ApiError("VM_MIGRATE_FAILED", vm_ref, source, dest, "destination host died")
        vm["resident_on"] = dest
        vm["domid"] = next(_domids)
        note_group_breach(state, vm_ref)
        return ""

    return Deferred(
        "pool_migrate", finish, duration_of(state, "pool_migrate"), vm_ref, (source, dest), abort
    )


# ---- disks, clone, snapshot, revert, destroy -----------------------------------------------


def _copy_disks(
    state: State, source: str, target: str, *, snapshot: bool, skip: list[str] | None = None
) -> None:
    for vdi_ref, device in vm_vdis(state, source):
        if skip and vdi_ref in skip:
            continue
        vdi = state.get("VDI", vdi_ref)
        fields: dict[str, Any] = {}
        if snapshot:
            fields = {
                "is_a_snapshot": True,
                "snapshot_of": vdi_ref,
                "snapshot_time": state.now(),
            }
        new_vdi = state.add(
            "VDI",
            vdi_record(vdi["SR"], vdi["name_label"], vdi["virtual_size"], **fields),
        )
        state.add("VBD", vbd_record(target, new_vdi, device))


def _sr_free(state: State, sr_ref: str) -> int:
    view = state.view("SR", sr_ref)
    return max(0, int(view["physical_size"]) - int(view["physical_utilisation"]))


def _new_vm_from(state: State, source: Record, name: str, **fields: Any) -> tuple[str, Record]:
    rec = copy.deepcopy(source)
    rec.pop("uuid", None)
    rec.update(
        name_label=name,
        power_state="Halted",
        resident_on=NULL_REF,
        scheduled_to_be_resident_on=NULL_REF,
        current_operations={},
        domid=-1,
        is_default_template=False,
        ha_always_run=False,
        children=[],
    )
    rec.update(fields)
    ref = state.add("VM", rec)
    return ref, rec


def clone(state: State, vm_ref: str, new_name: Any) -> Deferred:
    return _clone_or_copy(state, vm_ref, as_str(new_name, "new_name"), "clone", NULL_REF)


def copy_vm(state: State, vm_ref: str, new_name: Any, sr: Any) -> Deferred:
    sr_ref = as_str(sr, "sr")
    if sr_ref != NULL_REF:
        state.get("SR", sr_ref)
    return _clone_or_copy(state, vm_ref, as_str(new_name, "new_name"), "copy", sr_ref)


def _clone_or_copy(state: State, vm_ref: str, name: str, op: str, sr_ref: str) -> Deferred:
    """Clone (CoW disks) or copy (full disks, optionally to another SR). The clone of a template
    is a template (provision, then set_is_a_template false); the clone of a snapshot is a VM."""
    vm = check_operation(state, vm_ref, op)
    if op == "copy":
        for sr in {sr_ref} if sr_ref != NULL_REF else set(vm_srs(state, vm_ref)):
            need = sum(state.get("VDI", v)["virtual_size"] for v, _ in vm_vdis(state, vm_ref))
            if need > _sr_free(state, sr):
                raise ApiError("SR_FULL", need, _sr_free(state, sr))

    def finish() -> str:
        is_template = bool(vm["is_a_template"]) and not vm["is_a_snapshot"]
        new_ref, _ = _new_vm_from(
            state,
            state.get("VM", vm_ref),
            name,
            is_a_template=is_template,
            is_a_snapshot=False,
            snapshot_of=NULL_REF,
            snapshot_info={},
            parent=vm_ref,
            groups=[],
        )
        _copy_disks(state, vm_ref, new_ref, snapshot=False)
        if sr_ref != NULL_REF:
            for vbd in state.all("VBD").values():
                if vbd["VM"] == new_ref:
                    state.get("VDI", vbd["VDI"])["SR"] = sr_ref
        return new_ref

    return Deferred(op, finish, duration_of(state, op), vm_ref)


def provision(state: State, vm_ref: str) -> Deferred:
    """VM.provision on a template clone: builds disks from other_config["disks"] when it
    describes any (the simulator reads `size=` attributes); a clone that already has disks
    keeps them."""
    vm = check_operation(state, vm_ref, "provision")

    def finish() -> str:
        spec = str(vm["other_config"].get("disks", ""))
        if spec and not vm_vdis(state, vm_ref):
            sr = next(r for r, s in state.all("SR").items() if s["shared"])
            for i, part in enumerate(spec.split('size="')[1:]):
                size = int(part.split('"', 1)[0])
                vdi = state.add("VDI", vdi_record(sr, f"{vm['name_label']} {i}", size))
                state.add("VBD", vbd_record(vm_ref, vdi, str(i)))
        return ""

    return Deferred("provision", finish, duration_of(state, "provision"), vm_ref)


def snapshot(state: State, vm_ref: str, new_name: Any, ignore_vdis: Any = None) -> Deferred:
    """A disk-only, crash-consistent snapshot: is_a_snapshot and is_a_template, Halted, linked
    by snapshot_of; SR_FULL [requested, maximum] when the fault is armed."""
    vm = check_operation(state, vm_ref, "snapshot")
    name = as_str(new_name, "new_name")
    skip = [as_str(v, "ignore_vdis") for v in as_list(ignore_vdis or [], "ignore_vdis")]
    sr_full = vm_ref in state.faults.sr_full_snapshot or "*" in state.faults.sr_full_snapshot
    state.faults.sr_full_snapshot.discard(vm_ref)
    state.faults.sr_full_snapshot.discard("*")

    def finish() -> str:
        if sr_full:
            vdis = vm_vdis(state, vm_ref)
            requested = sum(state.get("VDI", v)["virtual_size"] for v, _ in vdis)
            sr = state.get("VDI", vdis[0][0])["SR"] if vdis else next(iter(state.all("SR")))
            raise ApiError("SR_FULL", requested, _sr_free(state, sr))
        snap_ref, _ = _new_vm_from(
            state,
            vm,
            name,
            is_a_snapshot=True,
            is_a_template=True,
            snapshot_of=vm_ref,
            snapshot_time=state.now(),
            snapshot_info={
                "disk-snapshot-type": "crash_consistent",
                "power-state-at-snapshot": vm["power_state"],
            },
            groups=[],
            affinity=vm["affinity"],
            ha_restart_priority=vm["ha_restart_priority"],
            _vm_name=vm["name_label"],
            _vm_uuid=vm["uuid"],
        )
        _copy_disks(state, vm_ref, snap_ref, snapshot=True, skip=skip)
        return snap_ref

    return Deferred("snapshot", finish, duration_of(state, "snapshot"), vm_ref)


REVERT_FIELDS = (
    "memory_static_min",
    "memory_static_max",
    "memory_dynamic_min",
    "memory_dynamic_max",
    "memory_overhead",
    "VCPUs_max",
    "VCPUs_at_startup",
    "VCPUs_params",
    "other_config",
    "platform",
    "affinity",
    "HVM_shadow_multiplier",
    "_has_pv_drivers",
)


def revert(state: State, snap_ref: str) -> Deferred:
    """VM.revert: re-create the VM if it was destroyed, hard-shut it if it is not Halted, swap
    its disks for clones of the snapshot's, copy the snapshot's fields and take the snapshot's
    power state (Halted for a disk snapshot). The caller starts it again."""
    snap = check_operation(state, snap_ref, "revert")
    if not snap["is_a_snapshot"]:
        raise ApiError("VM_REVERT_FAILED", snap_ref, snap["snapshot_of"])
    vm_ref = str(snap["snapshot_of"])
    lock = vm_ref if state.exists("VM", vm_ref) else None
    if lock is not None and state.get("VM", vm_ref)["current_operations"]:
        task, other = next(iter(state.get("VM", vm_ref)["current_operations"].items()))
        raise ApiError("OTHER_OPERATION_IN_PROGRESS", "VM", vm_ref, other, task)

    def finish() -> str:
        if state.exists("VM", vm_ref):
            vm = state.get("VM", vm_ref)
        else:
            # re-created from the snapshot's metadata under the ref the snapshot points at
            vm = copy.deepcopy(snap)
            vm.update(groups=[], name_label=snap["_vm_name"], uuid=snap["_vm_uuid"])
            state.tables["VM"][vm_ref] = vm
        if vm["power_state"] != "Halted":
            _halt(vm)  # VM.hard_shutdown first
            vm["ha_always_run"] = False
        for vbd_ref, vbd in list(state.all("VBD").items()):
            if vbd["VM"] == vm_ref:
                if state.exists("VDI", vbd["VDI"]):
                    state.remove("VDI", vbd["VDI"])
                state.remove("VBD", vbd_ref)
        _copy_disks(state, snap_ref, vm_ref, snapshot=False)
        for key in REVERT_FIELDS:
            vm[key] = copy.deepcopy(snap[key])
        vm.update(
            is_a_snapshot=False,
            is_a_template=False,
            snapshot_of=NULL_REF,
            snapshot_info={},
            power_state="Halted",
            parent=snap_ref,
        )
        return ""

    return Deferred("revert", finish, duration_of(state, "revert"), lock)


def destroy(state: State, vm_ref: str) -> Deferred:
    """VM.destroy: Halted or Suspended; removes the VM and its VBDs but not its VDIs."""
    check_operation(state, vm_ref, "destroy")

    def finish() -> str:
        for vbd_ref, vbd in list(state.all("VBD").items()):
            if vbd["VM"] == vm_ref:
                state.remove("VBD", vbd_ref)
        state.remove("VM", vm_ref)
        return ""

    return Deferred("destroy", finish, duration_of(state, "destroy"), vm_ref)


# ---- settings ------------------------------------------------------------------------------


def set_memory_limits(state: State, vm_ref: str, smin: Any, smax: Any, dmin: Any, dmax: Any) -> str:
    vm = state.get("VM", vm_ref)
    named = (
        (smin, "static_min"),
        (smax, "static_max"),
        (dmin, "dynamic_min"),
        (dmax, "dynamic_max"),
    )
    values = [as_int(v, n) for v, n in named]
    if vm["power_state"] != "Halted":
        raise ApiError("VM_BAD_POWER_STATE", vm_ref, "halted", vm["power_state"].lower())
    memory.check_memory_order(*values)
    for key, value in zip(
        ("memory_static_min", "memory_static_max", "memory_dynamic_min", "memory_dynamic_max"),
        values,
        strict=True,
    ):
        vm[key] = value
    memory.refresh_overhead(vm)
    return ""


def set_memory_dynamic_range(state: State, vm_ref: str, dmin: Any, dmax: Any) -> str:
    vm = state.get("VM", vm_ref)
    if vm["power_state"] not in ("Halted", "Running"):
        raise ApiError("VM_BAD_POWER_STATE", vm_ref, "halted, running", vm["power_state"].lower())
    lo, hi = as_int(dmin, "dynamic_min"), as_int(dmax, "dynamic_max")
    memory.check_memory_order(vm["memory_static_min"], vm["memory_static_max"], lo, hi)
    vm["memory_dynamic_min"], vm["memory_dynamic_max"] = lo, hi
    return ""


def set_memory(state: State, vm_ref: str, value: Any) -> str:
    vm = state.get("VM", vm_ref)
    size = as_int(value, "value")
    return set_memory_limits(state, vm_ref, min(vm["memory_static_min"], size), size, size, size)


def set_vcpus(state: State, vm_ref: str, value: Any, field: str) -> str:
    vm = state.get("VM", vm_ref)
    if vm["power_state"] != "Halted":
        raise ApiError("VM_BAD_POWER_STATE", vm_ref, "halted", vm["power_state"].lower())
    count = as_int(value, "value")
    if count < 1:
        raise ApiError("INVALID_VALUE", field, value)
    vm[field] = count
    if field == "VCPUs_max":
        vm["VCPUs_at_startup"] = min(vm["VCPUs_at_startup"], count)
    memory.refresh_overhead(vm)
    return ""


def set_ha_restart_priority(state: State, vm_ref: str, value: Any) -> str:
    """INVALID_VALUE for anything but "restart", "best-effort", ""; a running VM gets
    ha_always_run with "restart"; with HA on and overcommit not allowed, a change that would
    break the failover plan is refused."""
    vm = state.get("VM", vm_ref)
    priority = as_str(value, "value")
    if priority not in HA_PRIORITIES:
        raise ApiError("INVALID_VALUE", "ha_restart_priority", priority)
    pool = state.get("pool", state.pool_ref())
    if pool["ha_enabled"] and not pool["ha_allow_overcommit"] and priority == "restart":
        from hypervisor.xapi_sim.pool_ops import max_failures

        priorities = {r: v["ha_restart_priority"] for r, v in state.all("VM").items()}
        priorities[vm_ref] = priority
        if max_failures(state, priorities) < int(pool["ha_host_failures_to_tolerate"]):
            raise ApiError("HA_OPERATION_WOULD_BREAK_FAILOVER_PLAN")
    vm["ha_restart_priority"] = priority
    if vm["power_state"] == "Running":
        vm["ha_always_run"] = priority == "restart"
    return ""


def set_affinity(state: State, vm_ref: str, host: Any) -> str:
    host_ref = as_str(host, "host")
    if host_ref != NULL_REF:
        state.get("host", host_ref)
    state.get("VM", vm_ref)["affinity"] = host_ref
    return ""


def set_groups(state: State, vm_ref: str, groups: Any) -> str:
    """At most one group; not for control domains, templates or snapshots."""
    vm = state.get("VM", vm_ref)
    refs = [as_str(g, "value") for g in as_list(groups, "value")]
    if vm["is_control_domain"] or vm["is_a_template"] or vm["is_a_snapshot"]:
        raise ApiError("OPERATION_NOT_ALLOWED", "groups cannot be set on this VM")
    if len(refs) > 1:
        raise ApiError("TOO_MANY_GROUPS")
    for ref in refs:
        state.get("VM_group", ref)
    vm["groups"] = refs
    return ""


def set_is_a_template(state: State, vm_ref: str, value: Any) -> str:
    vm = state.get("VM", vm_ref)
    flag = as_bool(value, "value")
    if vm["is_a_snapshot"] and not flag:
        raise ApiError("OPERATION_NOT_ALLOWED", "a snapshot is always a template")
    if flag and vm["power_state"] != "Halted":
        raise ApiError("VM_BAD_POWER_STATE", vm_ref, "halted", vm["power_state"].lower())
    vm["is_a_template"] = flag
    return ""


def group_create(state: State, record: Any) -> str:
    rec = as_map(record, "args")
    placement = str(rec.get("placement", "normal"))
    if placement not in ("normal", "anti_affinity"):
        raise ApiError("INVALID_VALUE", "placement", placement)
    return state.add(
        "VM_group",
        {
            "name_label": str(rec.get("name_label", "")),
            "name_description": str(rec.get("name_description", "")),
            "placement": placement,
        },
    )


def group_destroy(state: State, group_ref: str) -> str:
    state.get("VM_group", group_ref)
    for vm in state.all("VM").values():
        if group_ref in vm["groups"]:
            vm["groups"] = [g for g in vm["groups"] if g != group_ref]
    state.remove("VM_group", group_ref)
    return ""


def get_possible_hosts(state: State, vm_ref: str) -> list[str]:
    vm = state.get("VM", vm_ref)
    if vm["scheduled_to_be_resident_on"] != NULL_REF:
        return [str(vm["scheduled_to_be_resident_on"])]
    result = []
    for host in state.all("host"):
        try:
            assert_can_boot_here(state, vm_ref, host)
        except ApiError:
            continue
        result.append(host)
    return result


def vdi_destroy(state: State, vdi_ref: Any) -> Deferred:
    """VDI.destroy: a disk no running VM has attached goes, with the VBDs of halted VMs or
    snapshots that still name it; VDI_IN_USE [vdi, "destroy"] while a running VM uses it."""
    ref = as_str(vdi_ref, "self")
    state.get("VDI", ref)
    users = [(r, vbd) for r, vbd in state.all("VBD").items() if vbd["VDI"] == ref]
    for _, vbd in users:
        if state.exists("VM", vbd["VM"]) and state.get("VM", vbd["VM"])["power_state"] != "Halted":
            raise ApiError("VDI_IN_USE", ref, "destroy")

    def finish() -> str:
        for vbd_ref, _ in users:
            if state.exists("VBD", vbd_ref):
                state.remove("VBD", vbd_ref)
        state.remove("VDI", ref)
        return ""

    return Deferred("vdi_destroy", finish, duration_of(state, "vdi_destroy"))
