"""XapiSimulator: a pool built from HostSpecs and TemplateSpecs, served over XML-RPC.

Tests use it as a context manager and talk to `sim.url` with the real `XenAPI.Session`; they
move time with `sim.advance`, break things with `sim.faults`, and assert on read-only snapshots
of the state (`sim.vm_records()` and friends) rather than on the simulator's internals.
"""

from __future__ import annotations

import copy
import random
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from hypervisor.xapi_sim.api import Api
from hypervisor.xapi_sim.faults import Faults
from hypervisor.xapi_sim.memory import refresh_overhead
from hypervisor.xapi_sim.objects import GiB, MiB, Record, State, vbd_record, vdi_record, vm_record
from hypervisor.xapi_sim.server import XmlRpcServer
from hypervisor.xapi_sim.tasks import TaskQueue
from hypervisor.xapi_sim.wire import NULL_REF


def default_dom0_memory(host_memory: int) -> int:
    """XenServer's dom0 sizing: 1 GiB + 5 % of host memory, capped at 8 GiB, whole MiB."""
    return min(8 * GiB, (GiB + host_memory // 20) // MiB * MiB)


def default_host_overhead(host_memory: int) -> int:
    """Xen's own heap and page tables, about 1/128 of RAM (2 GiB on a 256 GiB blade)."""
    return host_memory // 128 // MiB * MiB


@dataclass(frozen=True)
class HostSpec:
    """One blade. Memory in bytes; None means the realistic default."""

    name: str
    memory: int = 256 * GiB
    cpus: int = 32
    dom0_memory: int | None = None
    memory_overhead: int | None = None
    enabled: bool = True
    live: bool = True


@dataclass(frozen=True)
class TemplateSpec:
    """A template with one system disk on the shared SR (so clones are agile)."""

    name: str
    memory: int = 4 * GiB
    vcpus: int = 2
    disk: int = 20 * GiB
    other_config: dict[str, str] = field(default_factory=dict)
    has_pv_drivers: bool = True


DEMO_TEMPLATES = (
    TemplateSpec("arkiv-dicom-1.0", 8 * GiB, 4, 40 * GiB),
    TemplateSpec("arkiv-dicom-1.1", 8 * GiB, 4, 40 * GiB),
    TemplateSpec("arkiv-web-1.0", 4 * GiB, 2, 20 * GiB),
    TemplateSpec("arkiv-postgres-1.0", 32 * GiB, 8, 200 * GiB),
    TemplateSpec("arkiv-minio-1.0", 16 * GiB, 4, 100 * GiB),
)


def demo_hosts(count: int = 4, memory: int = 256 * GiB, cpus: int = 32) -> list[HostSpec]:
    return [HostSpec(f"blade{i}", memory, cpus) for i in range(1, count + 1)]


class XapiSimulator:
    """A simulated XenServer pool on a free loopback port (or `port`)."""

    def __init__(
        self,
        hosts: list[HostSpec] | None = None,
        templates: list[TemplateSpec] | tuple[TemplateSpec, ...] | None = None,
        *,
        username: str = "root",
        password: str = "xenroot",
        port: int = 0,
        placement: str = "first",
        seed: int = 0,
        sr_size: int = 16 * 1024 * GiB,
    ) -> None:
        if placement not in ("first", "seeded"):
            raise ValueError("placement must be 'first' or 'seeded'")
        self.username = username
        self.password = password
        self._lock = threading.RLock()
        self._state = State()
        self._state.placement_mode = placement
        self._state.rng = random.Random(seed)
        self._tasks = TaskQueue()
        self.faults = Faults(self._state, self._tasks, self._lock)
        self._api = Api(self._state, self._tasks, self.faults, self._lock, {username: password})
        self._build(
            hosts if hosts is not None else demo_hosts(), templates or DEMO_TEMPLATES, sr_size
        )
        self._server = XmlRpcServer(self._api, port)
        self._started = False

    # ---- building ------------------------------------------------------------------------

    def _build(self, hosts: list[HostSpec], templates: Any, sr_size: int) -> None:
        st = self._state
        host_refs: list[str] = []
        for spec in hosts:
            metrics = st.add(
                "host_metrics",
                {
                    "memory_total": spec.memory,
                    "memory_free": 0,
                    "live": spec.live,
                    "last_updated": st.now(),
                    "other_config": {},
                },
            )
            host = st.add(
                "host",
                {
                    "name_label": spec.name,
                    "name_description": "",
                    "enabled": spec.enabled,
                    "address": f"10.0.0.{len(host_refs) + 11}",
                    "hostname": spec.name,
                    "metrics": metrics,
                    "memory_overhead": spec.memory_overhead
                    if spec.memory_overhead is not None
                    else default_host_overhead(spec.memory),
                    "cpu_info": {"cpu_count": str(spec.cpus), "socket_count": "2"},
                    "host_CPUs": [],
                    "control_domain": NULL_REF,
                    "software_version": {"product_version": "8.4.0", "xapi": "25.6"},
                    "API_version_major": 2,
                    "API_version_minor": 21,
                    "other_config": {},
                    "tags": [],
                    "current_operations": {},
                    "allowed_operations": [],
                    "ha_statefiles": [],
                    "PBDs": [],
                },
            )
            dom0_mem = spec.dom0_memory or default_dom0_memory(spec.memory)
            dom0 = st.add(
                "VM",
                vm_record(
                    name_label=f"Control domain on host: {spec.name}",
                    power_state="Running" if spec.live else "Halted",
                    resident_on=host,
                    is_control_domain=True,
                    domid=0,
                    domain_type="pv",
                    memory_static_min=dom0_mem,
                    memory_static_max=dom0_mem,
                    memory_dynamic_min=dom0_mem,
                    memory_dynamic_max=dom0_mem,
                    memory_target=dom0_mem,
                    VCPUs_max=min(16, spec.cpus),
                    VCPUs_at_startup=min(16, spec.cpus),
                ),
            )
            st.get("host", host)["control_domain"] = dom0
            host_refs.append(host)
        self._sr = st.add(
            "SR",
            {
                "name_label": "shared-nfs",
                "name_description": "shared storage: every VM is agile",
                "type": "nfs",
                "content_type": "user",
                "shared": True,
                "physical_size": sr_size,
                "other_config": {},
                "tags": [],
                "_host": NULL_REF,
            },
        )
        st.add(
            "pool",
            {
                "name_label": "arkiv-pool",
                "name_description": "",
                "master": host_refs[0] if host_refs else NULL_REF,
                "default_SR": self._sr,
                "ha_enabled": False,
                "ha_configuration": {},
                "ha_statefiles": [],
                "ha_host_failures_to_tolerate": 0,
                "ha_plan_exists_for": 0,
                "ha_allow_overcommit": False,
                "ha_overcommitted": False,
                "wlb_enabled": False,
                "other_config": {},
                "tags": [],
            },
        )
        for spec in templates:
            self.add_template(spec)

    def add_template(self, spec: TemplateSpec) -> str:
        """A template with one disk on the shared SR; returns its ref."""
        with self._lock:
            st = self._state
            rec = vm_record(
                name_label=spec.name,
                is_a_template=True,
                memory_static_min=min(spec.memory, 512 * MiB),
                memory_static_max=spec.memory,
                memory_dynamic_min=spec.memory,
                memory_dynamic_max=spec.memory,
                VCPUs_max=spec.vcpus,
                VCPUs_at_startup=spec.vcpus,
                other_config=dict(spec.other_config),
                _has_pv_drivers=spec.has_pv_drivers,
            )
            refresh_overhead(rec)
            ref = st.add("VM", rec)
            vdi = st.add("VDI", vdi_record(self._sr, f"{spec.name} disk", spec.disk))
            st.add("VBD", vbd_record(ref, vdi, "0"))
            return ref

    def add_local_sr(self, host: str, name: str = "local") -> str:
        """A non-shared SR on one host (VMs with disks there are not agile)."""
        with self._lock:
            return self._state.add(
                "SR",
                {
                    "name_label": name,
                    "name_description": "",
                    "type": "ext",
                    "content_type": "user",
                    "shared": False,
                    "physical_size": 1024 * GiB,
                    "other_config": {},
                    "tags": [],
                    "_host": host,
                },
            )

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    def start(self) -> XapiSimulator:
        if not self._started:
            self._server.start()
            self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._server.stop()
            self._started = False

    def serve_forever(self) -> None:
        """Serve in the calling thread (the command-line entry point)."""
        self._server.serve_forever()

    def __enter__(self) -> XapiSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- time and in-process calls -------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the virtual clock; tasks due by then complete, in due order."""
        self._api.advance(seconds)

    @property
    def clock(self) -> float:
        with self._lock:
            return self._state.clock

    def call(self, method: str, *params: Any) -> dict[str, Any]:
        """One call straight through the dispatcher (the envelope, as the wire would carry it,
        before XML encoding); for tests of the wire format without a client."""
        return self._api.dispatch(method, params)

    # ---- read-only views -----------------------------------------------------------------

    def _records(self, cls: str) -> dict[str, Record]:
        with self._lock:
            return {ref: self._state.view(cls, ref) for ref in self._state.all(cls)}

    def vm_records(self) -> dict[str, Record]:
        """Every VM (templates, snapshots and dom0s included), derived fields filled, as
        Python values (ints stay ints here)."""
        return self._records("VM")

    def host_records(self) -> dict[str, Record]:
        return self._records("host")

    def host_metrics_records(self) -> dict[str, Record]:
        return self._records("host_metrics")

    def task_records(self) -> dict[str, Record]:
        return self._records("task")

    def vdi_records(self) -> dict[str, Record]:
        return self._records("VDI")

    def pool_record(self) -> Record:
        with self._lock:
            return self._state.view("pool", self._state.pool_ref())

    def host_ref(self, name: str) -> str:
        with self._lock:
            for ref, host in self._state.all("host").items():
                if host["name_label"] == name:
                    return ref
        raise KeyError(name)

    def vm_ref(self, name: str) -> str:
        """The first VM, template or snapshot with that name_label."""
        with self._lock:
            for ref, vm in self._state.all("VM").items():
                if vm["name_label"] == name:
                    return ref
        raise KeyError(name)

    def alerts(self) -> list[tuple[str, str]]:
        with self._lock:
            return copy.deepcopy(self._state.alerts)
