"""Canary rollout of a new VM template, with rollback from snapshots (`arkiv cluster rollout`).

One VM of a role at a time, the first by name (the canary) watched longest:

1. snapshot the VM (`VM.snapshot`, disk-only and crash-consistent: fine while it runs);
2. drain its service, shut it down (clean, hard as the fallback) and remember its host;
3. take the archive's marks (`arkiv:name`, `arkiv:role`) off the old VM, so the pool has one VM
   per name, clone the new template, mark the clone (plus `arkiv:template`), provision it, give it
   the old VM's affinity, HA restart priority and VM group, and start it on the same host;
4. wait until its service is ready, run the smoke check, then watch that it stays ready;
5. on success destroy the old VM and its disks; on failure destroy the new VM, revert the old one
   from the snapshot (which brings its marks back), start it on its host and stop the rollout.

The snapshots this run took are destroyed at the end either way, except one whose revert failed:
that one is the only way back and is left for the operator.

A re-run continues where a failed or interrupted one stopped: VMs whose `arkiv:template` already
names the template are skipped, and the first VM still to do is this run's canary.

A dry run reads the pool and asks every VM's service whether it is ready (the same refusals as a
real run), and changes nothing. XAPI's `VM.destroy` leaves a VM's disks behind, so each
destroyed VM's and snapshot's disks that nothing else uses are destroyed after it.

Never for a database primary or an object-store node: reverting one of those from a snapshot
rolls back state its peers have moved past, and MinIO wants every node upgraded at once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypervisor import vm_power
from hypervisor.guest_service import (
    Check,
    GuestService,
    GuestServiceError,
    GuestServices,
    wait_for,
)
from hypervisor.model import Role
from hypervisor.operation_report import OperationReport
from hypervisor.xapi_pool import (
    NAME_KEY,
    NULL_REF,
    ROLE_KEY,
    TEMPLATE_KEY,
    ObservedHost,
    ObservedVm,
    XapiError,
    call,
    read_pool,
)
from hypervisor.xapi_tasks import TaskWaiter

Progress = Callable[[str], None]

SNAPSHOT_PREFIX = "arkiv-rollout"
"""Snapshots are named `arkiv-rollout <template> <vm name>`."""

NEVER_FROM_SNAPSHOT: dict[str, str] = {
    "database-primary": (
        "a database primary reverted from a snapshot loses what it committed since and no longer "
        "matches its replicas; upgrade it with PostgreSQL's own procedure (switch over to a "
        "replica, then rebuild or upgrade the old primary as a replica)"
    ),
    "object-store": (
        "an object-store node reverted from a snapshot holds objects its peers have moved past, "
        "and MinIO wants all nodes upgraded at once, not one by one; use MinIO's own procedure "
        "(`mc admin update`) instead"
    ),
}


class RolloutRefused(ValueError):
    """The rollout would be unsafe or cannot start; nothing was touched. The message says why
    and what to do instead."""


@dataclass
class RolloutReport(OperationReport):
    """`planned` is one line per VM, the canary first; `done` the VMs now on the new template
    (`web-1: arkiv-web-1.0 → arkiv-web-1.1 on blade1`); `notes` skipped VMs, slow drains, hard
    shutdowns, what was cleaned up and what was left."""

    reverted: list[str] = field(default_factory=list)
    """VMs put back from their snapshot."""


class _StepFailed(RuntimeError):
    """A check of the new VM failed (not ready, smoke test, watch)."""


@dataclass
class _Replacement:
    """How far one VM's replacement got, which is what a rollback has to undo."""

    vm: ObservedVm
    host: ObservedHost
    role: Role
    label: str
    snapshot: str | None = None
    new_ref: str | None = None


class Rollout:
    def __init__(
        self,
        api: Any,
        waiter: TaskWaiter,
        services: GuestServices,
        progress: Progress = print,
        watch_seconds: float = 60.0,
        health_seconds: float = 600.0,
        drain_seconds: float = 300.0,
        clean_seconds: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api = api
        self._wait = waiter
        self._services = services
        self._progress = progress
        self._watch_seconds = watch_seconds
        self._health_seconds = health_seconds
        self._drain_seconds = drain_seconds
        self._clean_seconds = clean_seconds
        self._sleep = sleep

    # ---- the run ---------------------------------------------------------------------------

    def run(self, role: Role, template: str, dry_run: bool = True) -> RolloutReport:
        """Check, plan and (unless `dry_run`) roll `role`'s VMs onto `template`, canary first,
        stopping at the first VM that fails (reverted). RolloutRefused before anything is
        touched when the rollout would be unsafe."""
        if role.drain in NEVER_FROM_SNAPSHOT:
            raise RolloutRefused(
                f"role {role.name!r} (drain {role.drain!r}) is never rolled out with snapshots: "
                f"{NEVER_FROM_SNAPSHOT[role.drain]}"
            )
        pool = read_pool(self._api)
        if template not in pool.templates:
            known = ", ".join(sorted(t for t in pool.templates if t.startswith("arkiv-"))) or "none"
            raise RolloutRefused(
                f"template {template!r} is not in the pool (arkiv templates there: {known}); "
                "import it first or check the name"
            )
        vms = sorted((vm for vm in pool.vms.values() if vm.role == role.name), key=_by_name)
        if not vms:
            raise RolloutRefused(
                f"role {role.name!r} has no VMs in the pool; create them with "
                "`arkiv cluster apply` (which clones the template) instead"
            )
        leftovers = self._refuse_after_interruption(role, vms)
        self._refuse_unless_serving(role, vms)
        report = RolloutReport(notes=leftovers)
        todo: list[ObservedVm] = []
        for vm in vms:
            if vm.other_config.get(TEMPLATE_KEY) == template:
                report.notes.append(f"{vm.name} already runs {template}: skipped")
            else:
                todo.append(vm)
        labels = [_label(n, len(todo)) for n in range(len(todo))]
        for label, vm in zip(labels, todo, strict=True):
            report.planned.append(self._plan_line(label, vm, template))
        if dry_run or not todo:
            return report

        taken: list[tuple[str, str]] = []  # (vm name, snapshot ref) to clean up at the end
        kept: set[str] = set()
        for label, vm in zip(labels, todo, strict=True):
            current = read_pool(self._api)
            observed = current.vms.get(vm.name)
            if observed is None or observed.power_state != "Running" or observed.host is None:
                report.failed = f"{vm.name}: no longer running, stopped before touching it"
                break
            job = _Replacement(observed, current.hosts[observed.host], role, label)
            try:
                self._replace(job, template, current.templates[template], report)
            except Exception as error:  # any failure of the new VM is rolled back
                if job.snapshot is not None:
                    taken.append((vm.name, job.snapshot))
                reason = _describe(error)
                report.failed = f"{vm.name}: {reason}"
                self._progress(f"{label} {vm.name}: failed: {reason}")
                if job.snapshot is not None and not self._roll_back(job, report):
                    kept.add(job.snapshot)
                break
            taken.append((vm.name, str(job.snapshot)))
            self._progress(f"{label} {vm.name}: destroy the old VM")
            try:
                report.notes.extend(self._destroy(observed.ref, f"the old VM of {vm.name}"))
            except Exception as error:  # the new VM serves: a leftover is only untidy
                report.notes.append(
                    f"{vm.name}: the old VM (halted, unmarked, {observed.uuid}) could not be "
                    f"destroyed: {_describe(error)}; destroy it by hand"
                )
        report.notes.extend(self._clean_up(taken, kept))
        if report.failed:
            self._progress(f"stopped: {report.failed}; run again to continue from there")
        return report

    # ---- checks before anything ------------------------------------------------------------

    def _refuse_unless_serving(self, role: Role, vms: list[ObservedVm]) -> None:
        """Every VM of the role must run and be ready: the others carry the load while one is
        replaced, and a VM that is already broken would be "rolled back" to broken."""
        for vm in vms:
            if vm.power_state != "Running":
                raise RolloutRefused(
                    f"{vm.name} is {vm.power_state}, not Running: start it (`arkiv cluster "
                    "apply`) and let it become ready before a rollout"
                )
        for vm in vms:
            try:
                check = self._service(vm.name, role).ready()
            except GuestServiceError as error:
                raise RolloutRefused(str(error)) from error
            if not check.ok:
                raise RolloutRefused(
                    f"{vm.name} is not ready ({check.detail}): fix it, or wait until it is, "
                    "before a rollout"
                )

    def _refuse_after_interruption(self, role: Role, vms: list[ObservedVm]) -> list[str]:
        """A rollout snapshot of a VM the pool no longer shows under its name means an earlier
        run stopped between taking the old VM's marks off and marking its replacement; other
        snapshots an interrupted run left are noted (not removed: they are not this run's)."""
        names = {vm.name for vm in vms}
        notes: list[str] = []
        records = call(self._api, "VM.get_all_records")
        for record in records.values():
            other = record["other_config"]
            if not (
                record["is_a_snapshot"]
                and str(record["name_label"]).startswith(f"{SNAPSHOT_PREFIX} ")
                and other.get(ROLE_KEY) == role.name
            ):
                continue
            name = other.get(NAME_KEY, "?")
            if name not in names:
                raise RolloutRefused(
                    f"{name} has the snapshot {record['name_label']!r} from an interrupted "
                    "rollout but no VM marked as it: revert it from that snapshot "
                    "(`xe snapshot-revert`) and start it, or remove the half-made replacement, "
                    "then run the rollout again"
                )
            notes.append(
                f"the snapshot {record['name_label']!r} of {name} is left from an earlier "
                "rollout: destroy it (with its disks) once it is no longer needed"
            )
        return notes

    # ---- one VM ----------------------------------------------------------------------------

    def _plan_line(self, label: str, vm: ObservedVm, template: str) -> str:
        watch = self._watch_for(label)
        now = vm.other_config.get(TEMPLATE_KEY, "template not recorded")
        return (
            f"{label} {vm.name} on {vm.host} ({now}): snapshot, drain, shut down, clone "
            f"{template}, start on {vm.host}, ready and smoke checks, watch {watch:g} s, "
            "destroy the old VM"
        )

    def _watch_for(self, label: str) -> float:
        return self._watch_seconds if label == "[canary]" else self._watch_seconds / 4

    def _replace(
        self, job: _Replacement, template: str, template_ref: str, report: RolloutReport
    ) -> None:
        old, host, role, label = job.vm, job.host, job.role, job.label
        say = self._say(label, old.name)
        service = self._service(old.name, role)
        say("snapshot")
        job.snapshot = str(
            self._wait.run("VM.snapshot", old.ref, f"{SNAPSHOT_PREFIX} {template} {old.name}")
        )
        say("drain")
        started = service.start_drain()
        if not started.ok:
            report.notes.append(f"{old.name}: the drain did not start ({started.detail})")
        else:
            drained = wait_for(service.drained, self._drain_seconds, sleep=self._sleep)
            if not drained.ok:
                report.notes.append(
                    f"{old.name}: not drained within {self._drain_seconds:g} s "
                    f"({drained.detail}); shut down all the same"
                )
        say(f"shut down on {host.name}")
        how = vm_power.shutdown(self._wait, old.ref, self._clean_seconds)
        if how != "clean":
            report.notes.append(f"{old.name}: the old VM did not shut down cleanly; forced off")
        affinity = str(call(self._api, "VM.get_affinity", old.ref))
        call(self._api, "VM.remove_from_other_config", old.ref, ROLE_KEY)
        call(self._api, "VM.remove_from_other_config", old.ref, NAME_KEY)
        say(f"clone {template}")
        job.new_ref = new = str(self._wait.run("VM.clone", template_ref, old.name_label))
        for key, value in ((ROLE_KEY, role.name), (NAME_KEY, old.name), (TEMPLATE_KEY, template)):
            call(self._api, "VM.remove_from_other_config", new, key)  # a template may carry it
            call(self._api, "VM.add_to_other_config", new, key, value)
        self._wait.run("VM.provision", new)
        call(self._api, "VM.set_is_a_template", new, False)
        report.notes.extend(self._carry_over(old, new, affinity))
        say(f"start on {host.name}")
        call(self._api, "VM.assert_can_boot_here", new, host.ref)
        self._wait.run("VM.start_on", new, host.ref, False, False)
        say("ready and smoke checks")
        ready = self._wait_ready(old.name, role)
        if not ready.ok:
            raise _StepFailed(f"not ready within {self._health_seconds:g} s: {ready.detail}")
        smoke = self._service(old.name, role).smoke()
        if not smoke.ok:
            raise _StepFailed(f"smoke test failed: {smoke.detail}")
        watch = self._watch_for(label)
        say(f"watch {watch:g} s")
        watched = self._watch(old.name, role, watch)
        if not watched.ok:
            raise _StepFailed(watched.detail)
        was = old.other_config.get(TEMPLATE_KEY, "template not recorded")
        report.done.append(f"{old.name}: {was} → {template} on {host.name}")

    def _carry_over(self, old: ObservedVm, new: str, affinity: str) -> list[str]:
        """The old VM's affinity, HA restart priority and VM group; a pool that refuses one
        (HA plan, licence) is noted, not fatal."""
        notes: list[str] = []
        if affinity not in ("", NULL_REF):
            call(self._api, "VM.set_affinity", new, affinity)
        settings: list[tuple[str, Any]] = []
        if old.ha_restart_priority:
            settings.append(("VM.set_ha_restart_priority", old.ha_restart_priority))
        if old.groups:
            settings.append(("VM.set_groups", list(old.groups)))
        for method, value in settings:
            try:
                call(self._api, method, new, value)
            except XapiError as error:
                notes.append(f"{old.name}: the new VM could not take over {method}: {error}")
        return notes

    def _wait_ready(self, name: str, role: Role) -> Check:
        """Ready within health_seconds (the service is looked up on every poll: a replaced VM's
        endpoint may have moved)."""
        return wait_for(
            lambda: self._service(name, role).ready(), self._health_seconds, sleep=self._sleep
        )

    def _watch(self, name: str, role: Role, seconds: float) -> Check:
        """Ready all through `seconds` (checked every few seconds)."""
        poll = min(5.0, max(seconds / 4, 0.05))
        waited = 0.0
        while waited < seconds:
            step = min(poll, seconds - waited)
            self._sleep(step)
            waited += step
            check = self._service(name, role).ready()
            if not check.ok:
                return Check(
                    False, f"stopped being ready {waited:g} s into the watch: {check.detail}"
                )
        return Check(True, f"ready for {seconds:g} s")

    # ---- rollback and cleanup --------------------------------------------------------------

    def _roll_back(self, job: _Replacement, report: RolloutReport) -> bool:
        """Destroy the new VM, revert the old one from the snapshot, start it on its host and
        wait for it; False when the revert itself failed (the snapshot must then be kept)."""
        old, host = job.vm, job.host
        say = self._say(job.label, old.name)
        try:
            if job.new_ref is not None:
                say("destroy the new VM")
                if call(self._api, "VM.get_power_state", job.new_ref) != "Halted":
                    self._wait.run("VM.hard_shutdown", job.new_ref)
                report.notes.extend(self._destroy(job.new_ref, f"the new VM of {old.name}"))
            say("revert from the snapshot")
            self._wait.run("VM.revert", str(job.snapshot))
        except Exception as error:
            report.failed = f"{report.failed}; the revert failed too: {_describe(error)}"
            report.notes.append(
                f"{old.name}: its snapshot is kept; revert it by hand (`xe snapshot-revert`)"
            )
            return False
        report.reverted.append(old.name)
        try:
            say(f"start on {host.name}")
            self._wait.run("VM.start_on", old.ref, host.ref, False, False)
            ready = self._wait_ready(old.name, job.role)
            if ready.ok:
                say("ready again")
            else:
                report.notes.append(f"{old.name}: reverted but not ready again: {ready.detail}")
        except Exception as error:
            report.notes.append(f"{old.name}: reverted but not started again: {_describe(error)}")
        return True

    def _clean_up(self, taken: list[tuple[str, str]], kept: set[str]) -> list[str]:
        notes: list[str] = []
        for name, snap in taken:
            if snap in kept:
                continue
            try:
                notes.extend(self._destroy(snap, f"the snapshot of {name}"))
            except Exception as error:
                notes.append(f"the snapshot of {name} could not be removed: {_describe(error)}")
        return notes

    def _destroy(self, ref: str, what: str) -> list[str]:
        """`VM.destroy` (a halted VM or a snapshot), then the disks no VBD uses any more
        (XAPI's destroy leaves VDIs behind)."""
        vdis: list[str] = []
        for vbd in call(self._api, "VM.get_VBDs", ref):
            record = call(self._api, "VBD.get_record", vbd)
            if record["type"] == "Disk" and not record["empty"]:
                vdis.append(str(record["VDI"]))
        self._wait.run("VM.destroy", ref)
        removed = 0
        for vdi in vdis:
            if call(self._api, "VDI.get_VBDs", vdi):
                continue  # still someone's disk
            self._wait.run("VDI.destroy", vdi)
            removed += 1
        line = f"removed {what} and its {removed} disk(s)"
        self._progress(line)
        return [line]

    # ---- helpers ---------------------------------------------------------------------------

    def _service(self, name: str, role: Role) -> GuestService:
        return self._services.for_vm(name, role.name)

    def _say(self, label: str, name: str) -> Progress:
        return lambda what: self._progress(f"{label} {name}: {what}")


def _label(index: int, count: int) -> str:
    return "[canary]" if index == 0 else f"[{index + 1}/{count}]"


def _by_name(vm: ObservedVm) -> list[Any]:
    """web-2 before web-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", vm.name)]


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
