"""Applying a placement to the pool through XAPI, one step at a time.

The plan is computed from the pool as it is now (so running it again after a failure part-way
starts from wherever that left things and converges), and each step is checked by XAPI itself
(`VM.assert_can_boot_here`) just before it runs. VMs the placement adds are cloned from their
role's template and marked with `other_config["arkiv:role"/"arkiv:name"]` at once, so a clone
left behind by an interrupted run is recognised and reused, never duplicated. Hosts are always
chosen explicitly (`start_on`, `pool_migrate`): XAPI's own choice is random among equals.

After the moves the VMs get XenServer's own protections: the placed host as `affinity` (where an
HA or manual start goes first), the role's HA restart priority, and an anti-affinity VM group
per group of the model where the pool's licence allows it. Last, XAPI's own HA planner is asked
where each blade's protected VMs would restart, and any VM it finds no room for is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hypervisor.operation_report import OperationReport
from hypervisor.sequencing import Step, sequence
from hypervisor.xapi_pool import (
    NAME_KEY,
    ROLE_KEY,
    TEMPLATE_KEY,
    ObservedPool,
    XapiError,
    call,
    read_pool,
)
from hypervisor.xapi_tasks import TaskWaiter

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DesiredVm:
    """One VM as the placement wants it."""

    name: str
    role: str
    host: str
    memory: int
    """What it needs on a host (static_max + overhead), for ordering the steps."""
    template: str
    ha_restart_priority: str = "restart"
    """"restart", "best-effort" or "" (not protected by HA)."""
    anti_affinity_group: str | None = None


ApplyReport = OperationReport


def plan_steps(pool: ObservedPool, desired: list[DesiredVm]) -> list[Step]:
    """The ordered steps from the pool as observed to `desired` (VMs of the archive that the
    placement does not name are shut down)."""
    current: dict[str, str | None] = {
        name: vm.host if vm.power_state == "Running" else None for name, vm in pool.vms.items()
    }
    need = {name: vm.memory for name, vm in pool.vms.items()}
    target: dict[str, str | None] = {name: None for name in pool.vms}
    for vm in desired:
        current.setdefault(vm.name, None)
        need[vm.name] = pool.vms[vm.name].memory if vm.name in pool.vms else vm.memory
        target[vm.name] = vm.host
    capacity = {name: host.memory_for_archive for name, host in pool.hosts.items() if host.live}
    return sequence(current, target, need, capacity)


def cross_check_with_xapi(api: object, pool: ObservedPool) -> list[str]:
    """Ask XAPI's own HA planner (`pool.ha_compute_vm_failover_plan`, which needs no HA enabled)
    where each host's protected VMs would restart if that host failed. Our placement already
    passed the same biggest-fit-decreasing repack; a VM XAPI finds no room for means the pool
    differs from the model (other VMs, memory settings), which the operator must hear of."""
    notes: list[str] = []
    for host in sorted(pool.hosts.values(), key=lambda h: h.name):
        protected = [
            vm
            for vm in pool.vms.values()
            if vm.host == host.name
            and vm.power_state == "Running"
            and vm.ha_restart_priority == "restart"
        ]
        if not protected or not host.live:
            continue
        plan = call(
            api, "pool.ha_compute_vm_failover_plan", [host.ref], [vm.ref for vm in protected]
        )
        for vm in sorted(protected, key=lambda v: v.name):
            answer = plan.get(vm.ref, {})
            if "host" not in answer:
                notes.append(
                    f"XAPI's failover planner finds no host for {vm.name} if {host.name} fails "
                    f"({answer.get('error_code', 'no answer')}): N+1 does not hold on the pool"
                )
    return notes


class Applier:
    def __init__(self, api: object, waiter: TaskWaiter, progress: Progress = print) -> None:
        self._api = api
        self._wait = waiter
        self._progress = progress

    def apply(self, desired: list[DesiredVm], dry_run: bool = True) -> ApplyReport:
        """Plan from the pool as it is, then (unless `dry_run`) run the steps in order, stopping
        at the first failure with the pool in a state the next run starts from."""
        pool = read_pool(self._api)
        steps = plan_steps(pool, desired)
        report = ApplyReport(planned=[step.describe() for step in steps])
        if dry_run:
            return report
        wanted = {vm.name: vm for vm in desired}
        for number, step in enumerate(steps, 1):
            self._progress(f"[{number}/{len(steps)}] {step.describe()}")
            try:
                self._run(step, pool, wanted)
            except XapiError as error:
                report.failed = f"{step.describe()}: {error}"
                self._progress(f"stopped: {report.failed}; run again to continue from here")
                return report
            report.done.append(step.describe())
            pool = read_pool(self._api)
        report.notes.extend(self._protect(read_pool(self._api), desired))
        report.notes.extend(cross_check_with_xapi(self._api, read_pool(self._api)))
        return report

    def _run(self, step: Step, pool: ObservedPool, wanted: Mapping[str, DesiredVm]) -> None:
        host = pool.hosts[step.host]
        if step.kind == "shutdown":
            self._wait.run("VM.clean_shutdown", pool.vms[step.vm].ref)
            return
        observed = pool.vms.get(step.vm)
        if observed is None:
            ref = self._create(wanted[step.vm], pool)
        else:
            ref = observed.ref
            if observed.unfinished:
                self._finish(ref)
        call(self._api, "VM.assert_can_boot_here", ref, host.ref)
        if step.kind == "start":
            self._wait.run("VM.start_on", ref, host.ref, False, False)
        else:
            self._wait.run("VM.pool_migrate", ref, host.ref, {"live": "true"})

    def _create(self, vm: DesiredVm, pool: ObservedPool) -> str:
        """Clone the role's template and mark the clone as this VM before anything else."""
        template = pool.templates.get(vm.template)
        if template is None:
            raise XapiError("VM.clone", ["TEMPLATE_NOT_FOUND", vm.template])
        ref = str(self._wait.run("VM.clone", template, vm.name))
        call(self._api, "VM.add_to_other_config", ref, ROLE_KEY, vm.role)
        call(self._api, "VM.add_to_other_config", ref, NAME_KEY, vm.name)
        call(self._api, "VM.add_to_other_config", ref, TEMPLATE_KEY, vm.template)
        self._finish(ref)
        return ref

    def _finish(self, ref: str) -> None:
        """Give a marked clone its disks and make it a VM (a clone of a template is one)."""
        self._wait.run("VM.provision", ref)
        call(self._api, "VM.set_is_a_template", ref, False)

    def _protect(self, pool: ObservedPool, desired: list[DesiredVm]) -> list[str]:
        """Affinity, HA priority and anti-affinity groups; a feature the licence lacks is noted,
        not fatal (the placement itself already keeps groups apart)."""
        notes: list[str] = []
        groups: dict[str, str] = {}
        for vm in desired:
            observed = pool.vms.get(vm.name)
            if observed is None:
                continue
            call(self._api, "VM.set_affinity", observed.ref, pool.hosts[vm.host].ref)
            if observed.ha_restart_priority != vm.ha_restart_priority:
                call(self._api, "VM.set_ha_restart_priority", observed.ref, vm.ha_restart_priority)
            if vm.anti_affinity_group is None:
                continue
            try:
                group = groups.get(vm.anti_affinity_group) or self._group(vm.anti_affinity_group)
                groups[vm.anti_affinity_group] = group
                if group not in observed.groups:
                    call(self._api, "VM.set_groups", observed.ref, [group])
            except XapiError as error:
                if error.code != "LICENCE_RESTRICTION":
                    raise
                notes.append(
                    f"VM groups are not licensed on this pool: {vm.anti_affinity_group} is kept "
                    "apart by the placement alone"
                )
        return sorted(set(notes))

    def _group(self, name: str) -> str:
        label = f"arkiv {name}"
        for ref, record in call(self._api, "VM_group.get_all_records").items():
            if record["name_label"] == label:
                return str(ref)
        created = call(
            self._api,
            "VM_group.create",
            {"name_label": label, "name_description": "", "placement": "anti_affinity"},
        )
        return str(created)
