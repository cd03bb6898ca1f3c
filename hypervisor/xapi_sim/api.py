"""The XAPI surface: which names exist, how many params each takes, which have an Async twin,
and the one dispatch that turns every outcome into a Success/Failure envelope.

Dispatch order follows XAPI's server: unknown name (MESSAGE_METHOD_UNKNOWN [method]), then the
param count (MESSAGE_PARAMETER_COUNT_MISMATCH [method, expected, received], counting the
session), then the session (SESSION_INVALID [handle]), then the handler.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypervisor.xapi_sim import memory, pool_ops, sessions, vm_ops
from hypervisor.xapi_sim.errors import ApiError
from hypervisor.xapi_sim.faults import Faults, call_fault
from hypervisor.xapi_sim.objects import State
from hypervisor.xapi_sim.tasks import Deferred, TaskQueue, raising, run_sync
from hypervisor.xapi_sim.wire import (
    NULL_REF,
    as_int,
    as_list,
    as_map,
    as_str,
    failure,
    success,
)

Handler = Callable[..., Any]
PUBLIC_CLASSES = ("pool", "host", "host_metrics", "VM", "VM_group", "task", "SR", "VDI", "VBD")
NAMED_CLASSES = ("pool", "host", "VM", "VM_group", "task", "SR", "VDI")
TAGGED_CLASSES = ("pool", "host", "VM", "SR", "VDI")
CONFIGURED_CLASSES = ("pool", "host", "host_metrics", "VM", "task", "SR", "VDI", "VBD")


@dataclass(frozen=True)
class Spec:
    fn: Handler
    min_args: int
    max_args: int
    async_ok: bool


class Api:
    """The method table bound to one simulator's state, task queue, faults and lock."""

    def __init__(
        self,
        state: State,
        tasks: TaskQueue,
        faults: Faults,
        lock: threading.RLock,
        users: dict[str, str],
    ) -> None:
        self.state = state
        self.tasks = tasks
        self.faults = faults
        self.lock = lock
        self.users = users
        self.methods: dict[str, Spec] = {}
        self._register()

    # ---- registration --------------------------------------------------------------------

    def _add(
        self, name: str, fn: Handler, nargs: int, *, optional: int = 0, a: bool = True
    ) -> None:
        self.methods[name] = Spec(fn, nargs, nargs + optional, a)

    def _register(self) -> None:
        s = self.state
        add = self._add
        for cls in PUBLIC_CLASSES:
            add(f"{cls}.get_record", self._getter(cls), 1, a=False)
            add(f"{cls}.get_all", lambda _s, c=cls: list(s.all(c)), 0, a=False)
            add(f"{cls}.get_all_records", self._all_records(cls), 0, a=False)
            add(
                f"{cls}.get_by_uuid",
                lambda _s, u, c=cls: s.by_uuid(c, as_str(u, "uuid")),
                1,
                a=False,
            )
        for cls in NAMED_CLASSES:
            add(f"{cls}.get_by_name_label", self._by_name(cls), 1, a=False)
            for fld in ("name_label", "name_description"):
                add(f"{cls}.set_{fld}", self._setter(cls, fld, as_str), 2, a=False)
        for cls in CONFIGURED_CLASSES:
            add(f"{cls}.add_to_other_config", self._map_add(cls, "other_config"), 3, a=False)
            add(
                f"{cls}.remove_from_other_config", self._map_remove(cls, "other_config"), 2, a=False
            )
            add(f"{cls}.set_other_config", self._setter(cls, "other_config", as_map), 2, a=False)
        for cls in TAGGED_CLASSES:
            add(f"{cls}.add_tags", self._tag(cls, add=True), 2, a=False)
            add(f"{cls}.remove_tags", self._tag(cls, add=False), 2, a=False)
            add(f"{cls}.set_tags", self._setter(cls, "tags", as_list), 2, a=False)
        add("VM.add_to_blocked_operations", self._map_add("VM", "blocked_operations"), 3, a=False)
        add(
            "VM.remove_from_blocked_operations",
            self._map_remove("VM", "blocked_operations"),
            2,
            a=False,
        )
        add("VM.set_order", self._setter("VM", "order", as_int), 2)
        add("VM.set_start_delay", self._setter("VM", "start_delay", as_int), 2)
        add("VM.set_shutdown_delay", self._setter("VM", "shutdown_delay", as_int), 2)
        add("VM.set_affinity", vm_ops.set_affinity, 2, a=False)
        add("VM.set_is_a_template", vm_ops.set_is_a_template, 2, a=False)
        add("VM.set_groups", vm_ops.set_groups, 2, a=False)
        add("VM.set_ha_restart_priority", vm_ops.set_ha_restart_priority, 2)
        add("VM.set_memory_limits", vm_ops.set_memory_limits, 5)
        add("VM.set_memory_dynamic_range", vm_ops.set_memory_dynamic_range, 3)
        add("VM.set_memory", vm_ops.set_memory, 2)
        add("VM.set_VCPUs_max", lambda st, v, n: vm_ops.set_vcpus(st, v, n, "VCPUs_max"), 2)
        add(
            "VM.set_VCPUs_at_startup",
            lambda st, v, n: vm_ops.set_vcpus(st, v, n, "VCPUs_at_startup"),
            2,
        )
        add("VM.start", vm_ops.start, 3)
        add("VM.start_on", vm_ops.start_on, 4)
        add("VM.clean_shutdown", vm_ops.clean_shutdown, 1)
        add("VM.hard_shutdown", vm_ops.hard_shutdown, 1)
        add("VM.shutdown", vm_ops.shutdown, 1)
        add("VM.clean_reboot", vm_ops.clean_reboot, 1)
        add("VM.hard_reboot", vm_ops.hard_reboot, 1)
        add("VM.pool_migrate", vm_ops.pool_migrate, 3)
        add("VM.clone", vm_ops.clone, 2)
        add("VM.copy", vm_ops.copy_vm, 3)
        add("VM.provision", vm_ops.provision, 1)
        add("VM.snapshot", vm_ops.snapshot, 2, optional=1)
        add("VM.revert", vm_ops.revert, 1)
        add("VM.destroy", vm_ops.destroy, 1)
        add("VDI.destroy", vm_ops.vdi_destroy, 1)
        add(
            "VM.assert_can_boot_here",
            self._assert_can_boot_here,
            2,
        )
        add("VM.get_possible_hosts", vm_ops.get_possible_hosts, 1)
        add("VM_group.create", vm_ops.group_create, 1)
        add("VM_group.destroy", vm_ops.group_destroy, 1)
        add("VM_group.set_placement", self._setter("VM_group", "placement", as_str), 2, a=False)
        add(
            "host.compute_free_memory",
            lambda st, h: memory.compute_free_memory(st, self._host(h)),
            1,
        )
        add(
            "host.compute_memory_overhead",
            lambda st, h: int(st.get("host", self._host(h))["memory_overhead"]),
            1,
        )
        add("host.disable", lambda st, h: self._enable(h, False), 1)
        add("host.enable", lambda st, h: self._enable(h, True), 1)
        add("pool.ha_compute_vm_failover_plan", pool_ops.ha_compute_vm_failover_plan, 2, a=False)
        add(
            "pool.ha_compute_max_host_failures_to_tolerate",
            pool_ops.ha_compute_max_host_failures_to_tolerate,
            0,
            a=False,
        )
        add(
            "pool.ha_compute_hypothetical_max_host_failures_to_tolerate",
            pool_ops.ha_compute_hypothetical_max_host_failures_to_tolerate,
            1,
            a=False,
        )
        add("pool.ha_failover_plan_exists", pool_ops.ha_failover_plan_exists, 1, a=False)
        add("pool.set_ha_host_failures_to_tolerate", pool_ops.set_ha_host_failures_to_tolerate, 2)
        add("pool.set_ha_allow_overcommit", pool_ops.set_ha_allow_overcommit, 2, a=False)
        add("pool.enable_ha", pool_ops.enable_ha, 2)
        add("pool.disable_ha", pool_ops.disable_ha, 0)
        add("task.get_status", lambda st, t: st.get("task", t)["status"], 1, a=False)
        add("task.get_result", lambda st, t: st.get("task", t)["result"], 1, a=False)
        add("task.get_error_info", lambda st, t: st.get("task", t)["error_info"], 1, a=False)
        add("task.get_progress", lambda st, t: st.view("task", t)["progress"], 1, a=False)
        add("task.destroy", lambda st, t: st.remove("task", t) or "", 1, a=False)
        add("task.cancel", self._cancel, 1, a=False)
        add("session.logout", lambda st: "", 0, a=False)
        add("session.get_this_host", lambda st: NULL_REF, 0, a=False)

    # ---- generic handlers ----------------------------------------------------------------

    def _host(self, host: Any) -> str:
        ref = as_str(host, "host")
        self.state.get("host", ref)
        return ref

    def _assert_can_boot_here(self, st: State, vm: Any, host: Any) -> str:
        vm_ops.assert_can_boot_here(st, as_str(vm, "self"), self._host(host))
        return ""

    def _cancel(self, st: State, task: Any) -> str:
        self.tasks.cancel(st, as_str(task, "task"))
        return ""

    def _enable(self, host: Any, enabled: bool) -> str:
        self.state.get("host", self._host(host))["enabled"] = enabled
        return ""

    def _getter(self, cls: str) -> Handler:
        return lambda st, ref: st.view(cls, as_str(ref, "self"))

    def _all_records(self, cls: str) -> Handler:
        return lambda st: {ref: st.view(cls, ref) for ref in st.all(cls)}

    def _by_name(self, cls: str) -> Handler:
        return lambda st, label: [
            r for r, rec in st.all(cls).items() if rec.get("name_label") == label
        ]

    def _setter(self, cls: str, fld: str, conv: Callable[[Any, str], Any]) -> Handler:
        def handler(st: State, ref: Any, value: Any) -> str:
            st.get(cls, as_str(ref, "self"))[fld] = conv(value, "value")
            return ""

        return handler

    def _map_add(self, cls: str, fld: str) -> Handler:
        def handler(st: State, ref: Any, key: Any, value: Any) -> str:
            rec = st.get(cls, as_str(ref, "self"))
            k = as_str(key, "key")
            if k in rec[fld]:
                raise ApiError("MAP_DUPLICATE_KEY", cls, fld, rec["uuid"], k)
            rec[fld][k] = as_str(value, "value")
            return ""

        return handler

    def _map_remove(self, cls: str, fld: str) -> Handler:
        def handler(st: State, ref: Any, key: Any) -> str:
            st.get(cls, as_str(ref, "self"))[fld].pop(as_str(key, "key"), None)
            return ""

        return handler

    def _tag(self, cls: str, *, add: bool) -> Handler:
        def handler(st: State, ref: Any, tag: Any) -> str:
            rec = st.get(cls, as_str(ref, "self"))
            t = as_str(tag, "value")
            if add and t not in rec["tags"]:
                rec["tags"].append(t)
            if not add and t in rec["tags"]:
                rec["tags"].remove(t)
            return ""

        return handler

    def _field_getter(self, method: str) -> Spec | None:
        """`<cls>.get_<field>` for any field of the class's records (derived ones included)."""
        cls, _, name = method.partition(".")
        if cls not in PUBLIC_CLASSES or not name.startswith("get_"):
            return None
        fld = name[4:]

        def handler(st: State, ref: Any) -> Any:
            view = st.view(cls, as_str(ref, "self"))
            if fld not in view:
                raise ApiError("MESSAGE_METHOD_UNKNOWN", method)
            return view[fld]

        return Spec(handler, 1, 1, False)

    # ---- dispatch ------------------------------------------------------------------------

    def dispatch(self, method: str, params: tuple[Any, ...]) -> dict[str, Any]:
        """One XML-RPC call → one envelope; API errors never become XML-RPC faults."""
        with self.lock:
            try:
                return success(self._call(method, params))
            except ApiError as err:
                return failure(err)
            except Exception as err:  # a simulator bug must still be an envelope, as in XAPI
                return failure(ApiError("INTERNAL_ERROR", f"{type(err).__name__}: {err}"))

    def _call(self, method: str, params: tuple[Any, ...]) -> Any:
        st = self.state
        if method.startswith("sim."):
            return self._sim(method[4:], params)
        if method == "session.login_with_password":
            if not 2 <= len(params) <= 4:
                raise ApiError("MESSAGE_PARAMETER_COUNT_MISMATCH", method, 4, len(params))
            return sessions.login(st, self.users, *params)
        is_async = method.startswith("Async.")
        name = method[len("Async.") :] if is_async else method
        spec = self.methods.get(name) or self._field_getter(name)
        if spec is None or (is_async and not spec.async_ok):
            raise ApiError("MESSAGE_METHOD_UNKNOWN", method)
        if not spec.min_args + 1 <= len(params) <= spec.max_args + 1:
            raise ApiError(
                "MESSAGE_PARAMETER_COUNT_MISMATCH", method, spec.max_args + 1, len(params)
            )
        handle = sessions.validate(st, params[0])
        if name == "session.logout":
            return sessions.logout(st, handle)
        if is_async:
            try:
                outcome = spec.fn(st, *params[1:])
            except ApiError as err:
                failed = Deferred(name, raising(err), 0.0)
                return self.tasks.schedule(st, method, failed, None)
            deferred = outcome if isinstance(outcome, Deferred) else None
            task = self.tasks.schedule(st, method, deferred, outcome)
            pool_ops.refresh_ha(st)
            return task
        outcome = spec.fn(st, *params[1:])
        if isinstance(outcome, Deferred):
            outcome = run_sync(outcome)
        if not name.split(".", 1)[1].startswith("get_"):
            pool_ops.refresh_ha(st)
        return outcome

    def advance(self, seconds: float) -> None:
        with self.lock:
            if seconds < 0:
                raise ValueError("the virtual clock only moves forward")
            self.tasks.advance(self.state, seconds)
            pool_ops.refresh_ha(self.state)

    def _sim(self, name: str, params: tuple[Any, ...]) -> Any:
        if name == "advance":
            if len(params) != 1:
                raise ApiError("MESSAGE_PARAMETER_COUNT_MISMATCH", "sim.advance", 1, len(params))
            self.advance(float(params[0]))
            return ""
        if name == "clock":
            return float(self.state.clock)
        result = call_fault(self.faults, name, params)
        return "" if result is None else result
