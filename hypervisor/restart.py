"""The scheduled rolling restart that clears a service's accumulated state, one VM at a time.

For each VM of the roles asked for (the reference, §4.1):

1. check, before touching it: the VM runs; every other VM of its role runs and is ready (so
   two of one role are never down together); the pool still survives any single blade failure
   (N+1: XAPI HA's repack finds room for every protected VM, counting the rebooting VM's memory,
   which XAPI keeps reserved through a reboot); with this VM down, a blade failure stops no
   protected service; and the service itself agrees to lose it (MinIO's maintenance check, a
   PostgreSQL replica and not the primary);
2. drain it through the service (an arkiv node stops taking associations and requests and
   finishes open ones); a drain that does not finish in time is reported and the reboot goes on,
   since a node left draining serves nobody;
3. reboot it cleanly, hard if the guest cannot or does not acknowledge;
4. wait until its service is ready and passes its smoke check, then watch it for a soak time;
5. go on with the next VM. The first failure stops the run, with every VM not yet reached left
   as it was.

PostgreSQL: the replica restarts first. The primary never restarts as the primary: the
operator's switchover command (Patroni's, repmgr's) makes the freshly restarted replica the
primary, and the old primary, now a replica, is restarted. Without a switchover command the
primary is not restarted. MinIO nodes go one at a time, each only when the cluster says it keeps
its quorum without it.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hypervisor.failover import verify_n_plus_one
from hypervisor.guest_service import Check, GuestService, GuestServices, wait_for
from hypervisor.model import Cluster, DrainKind
from hypervisor.operation_report import OperationReport
from hypervisor.vm_power import reboot
from hypervisor.whatif import failure_impact
from hypervisor.xapi_pool import ObservedPool, ObservedVm, XapiError, cluster_on_pool, read_pool
from hypervisor.xapi_tasks import TaskTimeout, TaskWaiter

Progress = Callable[[str], None]

_ORDER: dict[DrainKind, int] = {"database-replica": 0, "database-primary": 1}
"""Roles restart in the order asked for, except that a database replica goes before the
primary (the primary's switchover needs a freshly restarted replica to hand over to)."""


class RestartRefused(RuntimeError):
    """A check before a VM's restart failed; nothing was done to that VM."""


@dataclass(frozen=True)
class RestartSettings:
    drain_seconds: float = 300.0
    """How long a drain may take before the reboot goes ahead anyway."""
    clean_seconds: float = 300.0
    """How long a clean reboot may take before the hard one (XAPI's own ack limit is 60 s)."""
    health_seconds: float = 600.0
    """How long the service may take to be ready again after the reboot."""
    soak_seconds: float = 30.0
    """How long a restarted service must stay ready before the next VM."""
    poll_seconds: float = 2.0
    switchover_command: str = ""
    """Makes the replica the primary; `{primary}` and `{replica}` are the VMs' names."""
    switchover_seconds: float = 300.0


RestartReport = OperationReport


class RollingRestart:
    def __init__(
        self,
        api: object,
        waiter: TaskWaiter,
        cluster: Cluster,
        services: GuestServices,
        settings: RestartSettings = RestartSettings(),
        progress: Progress = print,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api = api
        self._waiter = waiter
        self._cluster = cluster
        self._services = services
        self._settings = settings
        self._progress = progress
        self._sleep = sleep

    def run(self, roles: Sequence[str], dry_run: bool = True) -> RestartReport:
        """Restart every VM of `roles`, one at a time (a dry run only checks and plans)."""
        for name in roles:
            self._cluster.role(name)  # an unknown role is refused before anything
        ordered = sorted(roles, key=lambda r: _ORDER.get(self._cluster.role(r).drain, 2))
        pool = read_pool(self._api)
        targets = [
            vm.name
            for role in ordered
            for vm in sorted(pool.vms.values(), key=lambda v: v.name)
            if vm.role == role
        ]
        report = RestartReport(
            planned=[f"restart {name} on {pool.vms[name].host or 'nowhere'}" for name in targets]
        )
        if not targets:
            report.notes.append(f"no VM of {', '.join(roles)} in the pool")
            return report
        for name in targets:  # a VM whose service cannot be reached is found before any reboot
            self._services.for_vm(name, pool.vms[name].role)
        for number, name in enumerate(targets, 1):
            prefix = f"[{number}/{len(targets)}] {name}"
            try:
                pool = read_pool(self._api)
                service = self._check(pool, name, report, prefix, dry_run)
                if dry_run:
                    continue
                self._restart(pool.vms[name], service, report, prefix)
            except (RestartRefused, XapiError, TaskTimeout) as error:
                report.failed = f"{name}: {error}"
                self._progress(f"{prefix}: stopped: {error}")
                return report
            report.done.append(f"restarted {name}")
        return report

    def _check(
        self, pool: ObservedPool, name: str, report: RestartReport, prefix: str, dry_run: bool
    ) -> GuestService:
        vm = pool.vms[name]
        role = self._cluster.role(vm.role)
        if vm.power_state != "Running":
            raise RestartRefused(f"it is {vm.power_state}: start it (arkiv cluster apply) first")
        for peer in sorted(pool.vms.values(), key=lambda v: v.name):
            if peer.role != vm.role or peer.name == name:
                continue
            if peer.power_state != "Running":
                raise RestartRefused(f"{peer.name} of the same role is {peer.power_state}")
            check = self._services.for_vm(peer.name, peer.role).ready()
            if not check.ok:
                raise RestartRefused(f"{peer.name} of the same role is not ready ({check.detail})")
        model = cluster_on_pool(self._cluster, pool)
        assignment = {v.name: v.host for v in model.vms if v.host is not None}
        for host, failover in sorted(verify_n_plus_one(model, assignment).items()):
            if not failover.protected_ok:
                raise RestartRefused(
                    f"N+1 does not hold now: if {host} failed, "
                    f"{', '.join(failover.unplaced_protected)} would find no room; "
                    "run arkiv cluster apply first"
                )
        if role.drain not in ("database-primary", "database-replica"):
            self._check_service_without(model, assignment, name, report)
        service = self._services.for_vm(name, vm.role)
        agrees = service.may_go_down()
        if not agrees.ok and role.drain == "database-primary":
            if dry_run:
                report.notes.append(f"{name}: a switchover first ({agrees.detail})")
                return service
            self._switch_over(pool, vm, service, prefix)
        elif not agrees.ok:
            raise RestartRefused(agrees.detail)
        return service

    def _check_service_without(
        self, model: Cluster, assignment: dict[str, str], name: str, report: RestartReport
    ) -> None:
        """With `name` down: its role still has enough replicas, and no single blade failure
        stops a service XAPI would otherwise restart."""
        role = model.role(next(v.role for v in model.vms if v.name == name))
        left = sum(1 for v in model.vms if v.role == role.name and v.name in assignment) - 1
        need = min(role.min_replicas, role.count)
        if left < need:
            raise RestartRefused(f"{role.name} needs {need} running; {left} would be left")
        without = {vm: host for vm, host in assignment.items() if vm != name}
        for host in sorted(h.name for h in model.hosts):
            for service in failure_impact(model, without, host).services:
                if service.state != "stopped":
                    continue
                restart = model.role(service.role).restart
                message = (
                    f"if {host} failed while {name} is down, {service.role} would stop until "
                    "the blade is repaired"
                )
                if restart != "none":
                    raise RestartRefused(message)
                report.notes.append(f"{message} (its restart policy is none)")

    def _switch_over(
        self, pool: ObservedPool, primary: ObservedVm, service: GuestService, prefix: str
    ) -> None:
        command = self._settings.switchover_command
        replicas = [
            vm
            for vm in sorted(pool.vms.values(), key=lambda v: v.name)
            if self._cluster.role(vm.role).drain == "database-replica"
        ]
        if not command:
            raise RestartRefused(
                f"{primary.name} is the primary: restarting it stops every write. Give "
                '--switchover-command (e.g. "patronictl switchover --candidate {replica} '
                '--force") to hand over to the replica first'
            )
        ready = [vm for vm in replicas if self._services.for_vm(vm.name, vm.role).ready().ok]
        if not ready:
            raise RestartRefused(f"no ready replica to hand {primary.name}'s primary role to")
        line = command.replace("{primary}", primary.name).replace("{replica}", ready[0].name)
        self._progress(f"{prefix}: switchover: {line}")
        try:
            done = subprocess.run(
                shlex.split(line),
                capture_output=True,
                text=True,
                timeout=self._settings.switchover_seconds,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise RestartRefused(f"the switchover command failed: {error}") from error
        if done.returncode != 0:
            raise RestartRefused(
                f"the switchover command exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-300:]}"
            )
        handed = self._wait(service.may_go_down, self._settings.switchover_seconds)
        if not handed.ok:
            raise RestartRefused(f"after the switchover: {handed.detail}")

    def _restart(
        self, vm: ObservedVm, service: GuestService, report: RestartReport, prefix: str
    ) -> None:
        settings = self._settings
        self._progress(f"{prefix} on {vm.host}: drain")
        started = service.start_drain()
        if not started.ok:
            raise RestartRefused(f"the drain did not start: {started.detail}")
        drained = self._wait(service.drained, settings.drain_seconds)
        if not drained.ok:
            note = f"{vm.name}: not drained after {settings.drain_seconds:g} s ({drained.detail})"
            report.notes.append(note + "; rebooted anyway")
            self._progress(f"{prefix}: {note}")
        self._progress(f"{prefix}: reboot")
        how = reboot(self._waiter, vm.ref, settings.clean_seconds)
        if how == "hard":
            report.notes.append(f"{vm.name}: the clean reboot did not finish, so it was hard")
        self._progress(f"{prefix}: {how} reboot done, waiting for the service")
        ready = self._wait(service.ready, settings.health_seconds)
        if not ready.ok:
            raise RestartRefused(
                f"not ready {settings.health_seconds:g} s after its reboot ({ready.detail}); "
                "no further VM was restarted"
            )
        smoke = service.smoke()
        if not smoke.ok:
            raise RestartRefused(f"ready, but the smoke check failed: {smoke.detail}")
        if settings.soak_seconds > 0:
            self._sleep(settings.soak_seconds)
            still = service.ready()
            if not still.ok:
                raise RestartRefused(
                    f"not ready {settings.soak_seconds:g} s after coming back: {still.detail}"
                )
        self._progress(f"{prefix}: ready again")

    def _wait(self, check: Callable[[], Check], seconds: float) -> Check:
        return wait_for(check, seconds, poll=self._settings.poll_seconds, sleep=self._sleep)
