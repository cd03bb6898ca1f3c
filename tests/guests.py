"""What runs inside the simulated VMs: a real arkiv web node per archive VM, tied to the VM's life.

The XAPI simulator has no guests, so a rolling restart or a rollout against it alone would test
only XAPI calls. `Guests` watches the simulator and gives every running archive VM (one marked
with `arkiv:name`) a real `arkiv web` node on loopback (what a web VM runs): started when the VM
boots, started again when it reboots (its domid changes) or is replaced by another VM of the
same name, stopped when it halts. Each VM name keeps its data directory across reboots, like a
VM's disk. A VM whose template said `other_config["test:guest"] = "broken"` boots without a
working service (the broken upgrade a rollout must undo).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from hypervisor.xapi_pool import NAME_KEY
from hypervisor.xapi_sim import XapiSimulator
from tests.conftest import free_port
from tests.serve_process import ARKIV, children

BROKEN = {"test:guest": "broken"}
"""A template's other_config that makes its VMs' service never come up."""


@dataclass
class _Guest:
    boot: tuple[str, int]
    """The VM's ref and domid: a different pair is a different boot, unless the host changed
    too (a live migration gives the VM a new domid on its new host, not a new boot)."""
    host: str
    process: subprocess.Popen[bytes] | None


class Guests:
    """Real arkiv nodes for the simulator's archive VMs named in `names`."""

    def __init__(self, sim: XapiSimulator, root: Path, names: Iterable[str], token: str) -> None:
        self._sim = sim
        self._root = root
        self._token_file = root / "drain-token"
        self._token_file.write_text(token + "\n")
        self._ports = {name: free_port() for name in names}
        self._guests: dict[str, _Guest] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="guests", daemon=True)
        self.boots: dict[str, int] = {name: 0 for name in self._ports}
        """How many times each VM's service was started (a reboot adds one)."""
        self.drain_at_stop: dict[str, list[dict[str, object] | None]] = {
            name: [] for name in self._ports
        }
        """What each service said of its drain when its VM went down (None: no answer)."""
        self._token = token

    @property
    def endpoints(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{http}" for name, http in self._ports.items()}

    def __enter__(self) -> Guests:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for guest in self._guests.values():
            _stop(guest.process)

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            running: dict[str, tuple[tuple[str, int], str, bool]] = {}
            for ref, vm in self._sim.vm_records().items():
                name = vm["other_config"].get(NAME_KEY)
                if name not in self._ports or vm["is_a_template"] or vm["is_a_snapshot"]:
                    continue
                if vm["power_state"] == "Running":
                    broken = vm["other_config"].get("test:guest") == "broken"
                    boot = (ref, int(vm["domid"]))
                    running[name] = (boot, str(vm["resident_on"]), broken)
            for name, guest in list(self._guests.items()):
                boot, host, _ = running.get(name, (("", -1), "", False))
                if boot[0] == guest.boot[0] and host != guest.host:
                    guest.boot, guest.host = boot, host  # migrated, still the same boot
                elif boot != guest.boot:
                    self.drain_at_stop[name].append(self._drain_status(name))
                    _stop(guest.process)
                    del self._guests[name]
            for name, (boot, host, broken) in running.items():
                if name not in self._guests:
                    process = None if broken else self._start(name)
                    self._guests[name] = _Guest(boot, host, process)
                    self.boots[name] += 1

    def _drain_status(self, name: str) -> dict[str, object] | None:
        try:
            answer = httpx.get(
                f"{self.endpoints[name]}/node/drain",
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=2,
            )
            return dict(answer.json()) if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def _start(self, name: str) -> subprocess.Popen[bytes]:
        http = self._ports[name]
        data = self._root / name
        return subprocess.Popen(
            [
                *ARKIV,
                *("web", "--data", str(data), "--host", "127.0.0.1"),
                *("--http-port", str(http)),
            ],
            env={**os.environ, "ARKIV_DRAIN_TOKEN_FILE": str(self._token_file)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a guest's service and its DICOM workers, as a VM's halt would (by pid)."""
    if process is None or process.poll() is not None:
        return
    workers = children(process.pid)
    process.kill()
    process.wait(timeout=30)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
