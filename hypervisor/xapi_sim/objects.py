"""The object store: XAPI's tables (pool, host, host_metrics, VM, VM_group, task, SR, VDI, VBD,
session), keyed by `OpaqueRef:<uuid4>` refs that are never reused.

Records hold native Python values (ints, datetimes); `wire.marshal` stringifies them on the way
out. Fields that XAPI derives from other tables (host.resident_VMs, VM.snapshots, VM.VBDs,
VM_group.VMs, SR.VDIs, VDI.VBDs) are computed when read, so they cannot drift from the truth.
Everything here runs under the simulator's single lock.
"""

from __future__ import annotations

import copy
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypervisor.xapi_sim.errors import ApiError
from hypervisor.xapi_sim.wire import NULL_REF

Record = dict[str, Any]
CLASSES = (
    "session",
    "pool",
    "host",
    "host_metrics",
    "VM",
    "VM_group",
    "task",
    "SR",
    "VDI",
    "VBD",
)
GiB = 1024**3
MiB = 1024**2
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Faults:
    """Pending injected faults (see faults.py); plain data so the store stays the one state."""

    fail_migration: dict[str, str] = field(default_factory=dict)
    """VM ref → message for its next pool_migrate's VM_MIGRATE_FAILED."""
    hang_shutdown: dict[str, tuple[str, float]] = field(default_factory=dict)
    """VM ref → (mode "forever"|"timeout", timeout seconds) for its clean shutdown/reboot."""
    sr_full_snapshot: set[str] = field(default_factory=set)
    """VM refs whose next snapshot fails with SR_FULL ("*" = any VM)."""
    durations: dict[str, float] = field(default_factory=dict)
    """Operation → virtual seconds, overriding the defaults (slow migrations and the like)."""


class State:
    """All tables, the virtual clock and pending faults."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Record]] = {cls: {} for cls in CLASSES}
        self.clock = 0.0
        """Virtual seconds since EPOCH; only `advance` moves it."""
        self.faults = Faults()
        self.placement_mode = "first"
        self.rng = random.Random(0)
        """Drives "seeded" placement: the same seed and calls give the same hosts."""
        self.alerts: list[tuple[str, str]] = []
        """(alert name, object ref), e.g. the anti-affinity breach alert."""

    def now(self) -> datetime:
        """The virtual wall-clock time (whole seconds, as XAPI's datetimes are)."""
        return EPOCH + timedelta(seconds=int(self.clock))

    @staticmethod
    def new_ref() -> str:
        """A fresh ref; uuid4 makes reuse of a destroyed ref practically impossible."""
        return f"OpaqueRef:{uuid.uuid4()}"

    def add(self, cls: str, record: Record) -> str:
        """Insert a record (with a fresh uuid unless given) and return its new ref."""
        ref = self.new_ref()
        record.setdefault("uuid", str(uuid.uuid4()))
        self.tables[cls][ref] = record
        return ref

    def get(self, cls: str, ref: str) -> Record:
        """The stored record; HANDLE_INVALID [class, ref] for a ref that is not (or no longer)
        in that table, which is what XAPI says for destroyed objects."""
        record = self.tables[cls].get(ref)
        if record is None:
            raise ApiError("HANDLE_INVALID", cls, ref)
        return record

    def exists(self, cls: str, ref: str) -> bool:
        return ref in self.tables[cls]

    def remove(self, cls: str, ref: str) -> None:
        self.get(cls, ref)
        del self.tables[cls][ref]

    def all(self, cls: str) -> dict[str, Record]:
        return self.tables[cls]

    def by_uuid(self, cls: str, value: str) -> str:
        for ref, rec in self.tables[cls].items():
            if rec["uuid"] == value:
                return ref
        raise ApiError("UUID_INVALID", cls, value)

    # ---- derived views -------------------------------------------------------------------

    def view(self, cls: str, ref: str) -> Record:
        """A copy of the record with XAPI's derived fields filled in (never the stored dict)."""
        rec = copy.deepcopy(self.get(cls, ref))
        if cls == "host":
            rec["resident_VMs"] = [
                r for r, vm in self.tables["VM"].items() if vm["resident_on"] == ref
            ]
        elif cls == "VM":
            rec["snapshots"] = [
                r
                for r, vm in self.tables["VM"].items()
                if vm["is_a_snapshot"] and vm["snapshot_of"] == ref
            ]
            rec["VBDs"] = [r for r, vbd in self.tables["VBD"].items() if vbd["VM"] == ref]
        elif cls == "VM_group":
            rec["VMs"] = [r for r, vm in self.tables["VM"].items() if ref in vm["groups"]]
        elif cls == "SR":
            vdis = [r for r, vdi in self.tables["VDI"].items() if vdi["SR"] == ref]
            rec["VDIs"] = vdis
            rec["physical_utilisation"] = sum(
                self.tables["VDI"][v]["physical_utilisation"] for v in vdis
            )
            rec["virtual_allocation"] = sum(self.tables["VDI"][v]["virtual_size"] for v in vdis)
        elif cls == "VDI":
            rec["VBDs"] = [r for r, vbd in self.tables["VBD"].items() if vbd["VDI"] == ref]
        elif cls == "host_metrics":
            from hypervisor.xapi_sim.memory import metrics_memory_free

            rec["memory_free"] = metrics_memory_free(self, ref)
        elif cls == "task":
            from hypervisor.xapi_sim.tasks import task_progress

            rec["progress"] = task_progress(self, rec)
        return {k: v for k, v in rec.items() if not k.startswith("_")}

    def host_of_metrics(self, metrics_ref: str) -> str:
        for ref, host in self.tables["host"].items():
            if host["metrics"] == metrics_ref:
                return ref
        return NULL_REF

    def host_live(self, host_ref: str) -> bool:
        return bool(self.get("host_metrics", self.get("host", host_ref)["metrics"])["live"])

    def pool_ref(self) -> str:
        return next(iter(self.tables["pool"]))


def vm_record(**fields: Any) -> Record:
    """A VM record with XAPI's defaults (Halted, no host, no snapshot links, empty maps)."""
    rec: Record = {
        "name_label": "",
        "name_description": "",
        "power_state": "Halted",
        "resident_on": NULL_REF,
        "scheduled_to_be_resident_on": NULL_REF,
        "affinity": NULL_REF,
        "memory_static_min": 512 * MiB,
        "memory_static_max": 1 * GiB,
        "memory_dynamic_min": 1 * GiB,
        "memory_dynamic_max": 1 * GiB,
        "memory_target": 0,
        "memory_overhead": 0,
        "VCPUs_max": 1,
        "VCPUs_at_startup": 1,
        "VCPUs_params": {},
        "is_a_template": False,
        "is_default_template": False,
        "is_a_snapshot": False,
        "is_control_domain": False,
        "snapshot_of": NULL_REF,
        "snapshot_time": datetime(1970, 1, 1, tzinfo=UTC),
        "snapshot_info": {},
        "parent": NULL_REF,
        "children": [],
        "other_config": {},
        "tags": [],
        "blocked_operations": {},
        "allowed_operations": [],
        "current_operations": {},
        "ha_always_run": False,
        "ha_restart_priority": "",
        "order": 0,
        "start_delay": 0,
        "shutdown_delay": 0,
        "groups": [],
        "domid": -1,
        "domain_type": "hvm",
        "HVM_shadow_multiplier": 1.0,
        "platform": {},
        "xenstore_data": {},
        "VIFs": [],
        "metrics": NULL_REF,
        "guest_metrics": NULL_REF,
        "requires_reboot": False,
        "_has_pv_drivers": True,
    }
    rec.update(fields)
    return rec


def vdi_record(sr: str, name: str, size: int, **fields: Any) -> Record:
    """A minimal VDI: enough for SR accounting, snapshot links and "destroy leaves VDIs"."""
    rec: Record = {
        "name_label": name,
        "name_description": "",
        "SR": sr,
        "virtual_size": size,
        "physical_utilisation": size // 8,
        "type": "user",
        "sharable": False,
        "read_only": False,
        "is_a_snapshot": False,
        "snapshot_of": NULL_REF,
        "snapshot_time": datetime(1970, 1, 1, tzinfo=UTC),
        "other_config": {},
        "sm_config": {},
    }
    rec.update(fields)
    return rec


def vbd_record(vm: str, vdi: str, device: str) -> Record:
    return {
        "VM": vm,
        "VDI": vdi,
        "userdevice": device,
        "device": f"xvd{chr(ord('a') + int(device))}" if device.isdigit() else device,
        "bootable": device == "0",
        "mode": "RW",
        "type": "Disk",
        "empty": False,
        "currently_attached": False,
        "other_config": {},
    }
