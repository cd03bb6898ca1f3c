"""The load generator: DCMTK ``storescu`` processes, one per association.

storescu proposes exactly one presentation context per SOP class in the data set, with Explicit
VR Little Endian only (an association profile written by :func:`write_storescu_profile`), so
nothing is converted on the way and both servers get the identical byte stream.  ``TCP_NODELAY=1``
is set in storescu's environment (DCMTK reads it to disable Nagle's algorithm).
"""

from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.peers import LOCALHOST, ManagedProcess, tail

PROFILE = "ArkivBench"
CALLING_AET = "ARKIVBENCH"


def write_storescu_profile(path: Path, sop_classes: Sequence[str]) -> tuple[Path, str]:
    """An association negotiation profile: each SOP class with Explicit VR Little Endian."""
    lines = [
        "[[TransferSyntaxes]]",
        "[ExplicitLE]",
        "TransferSyntax1 = 1.2.840.10008.1.2.1",
        "",
        "[[PresentationContexts]]",
        "[BenchContexts]",
    ]
    lines += [f"PresentationContext{i} = {uid}\\ExplicitLE" for i, uid in enumerate(sop_classes, 1)]
    lines += ["", "[[Profiles]]", f"[{PROFILE}]", "PresentationContexts = BenchContexts", ""]
    path.write_text("\n".join(lines), encoding="ascii")
    return path, PROFILE


def split(files: Sequence[tuple[Path, int]], groups: int) -> list[list[Path]]:
    """Split ``(path, size)`` into ``groups`` lists of about equal byte size.

    Greedy: biggest file first to the currently lightest group; each group keeps the original
    order of its files (so a study's series stay together where possible).
    """
    groups = max(1, min(groups, len(files)))
    order = {p: i for i, (p, _) in enumerate(files)}
    loads = [0] * groups
    members: list[list[Path]] = [[] for _ in range(groups)]
    for path, size in sorted(files, key=lambda ps: (-ps[1], order[ps[0]])):
        g = loads.index(min(loads))
        loads[g] += size
        members[g].append(path)
    return [sorted(m, key=order.__getitem__) for m in members]


@dataclass
class LoadResult:
    associations: int
    wall_s: float
    exit_codes: list[int]
    client_cpu_s: float
    error: str | None = None
    logs: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    """The port each storescu sent to."""

    @property
    def ok(self) -> bool:
        return self.error is None and all(rc == 0 for rc in self.exit_codes)


def _failure(index: int, returncode: int, log: Path) -> str:
    msg = f"storescu #{index} exited with {returncode}"
    if returncode >= 0xA0:
        # storescu exits with the high byte of the last failed C-STORE response status.
        msg += f" (a C-STORE response had failure status 0x{returncode:02X}xx)"
    text = tail(log, 8)
    return f"{msg}: {text}" if text else msg


def storescu_argv(
    aet: str, port: int, profile: tuple[Path, str], files: Sequence[Path]
) -> list[str]:
    cfg, name = profile
    return [
        "storescu",
        "-aet", CALLING_AET,
        "-aec", aet,
        "-xf", str(cfg), name,
        "-to", "30",  # connect timeout
        "-ta", "30",  # ACSE timeout
        "-ts", "300",  # socket timeout
        LOCALHOST, str(port),
        *map(str, files),
    ]  # fmt: skip


def run_storescu(
    groups: Sequence[Sequence[Path]],
    aet: str,
    port: int | Sequence[int],
    profile: tuple[Path, str],
    log_dir: Path,
    timeout: float,
) -> LoadResult:
    """Run one storescu per group in parallel; wall time is from the first start to the last exit.

    With several ports (a server of several nodes) group ``i`` goes to ``ports[i % len(ports)]``,
    so the associations are dealt out to the nodes in turn.  Any failure (non-zero exit, timeout)
    stops the remaining storescu processes.
    """
    ports = [port] if isinstance(port, int) else list(port)
    if not ports:
        raise ValueError("no port to send to")
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = [log_dir / f"storescu-{i}.log" for i in range(len(groups))]
    procs: list[ManagedProcess] = []
    exited_at: dict[int, float] = {}
    done = threading.Condition()
    error: str | None = None

    def reap(i: int, proc: subprocess.Popen[bytes]) -> None:
        proc.wait()  # blocking waitpid: exact exit time, no polling
        with done:
            exited_at[i] = time.perf_counter()
            done.notify_all()

    def failure(i: int) -> str:
        return _failure(i, procs[i].popen.returncode, logs[i])

    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        for i, files in enumerate(groups):
            argv = storescu_argv(aet, ports[i % len(ports)], profile, files)
            proc = ManagedProcess(argv, logs[i], env=env)
            procs.append(proc)
            threading.Thread(target=reap, args=(i, proc.popen), daemon=True).start()
        deadline = start + timeout
        with done:
            while len(exited_at) < len(procs):
                failed = [i for i in exited_at if procs[i].popen.returncode != 0]
                if failed:
                    error = failure(failed[0])
                    break
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    error = f"storescu still running after {timeout:.0f} s"
                    break
                done.wait(timeout=remaining)
        wall = (max(exited_at.values()) if exited_at else time.perf_counter()) - start
        if error is None:
            failed = [i for i in range(len(procs)) if procs[i].popen.returncode != 0]
            if failed:
                error = failure(failed[0])
    finally:
        for p in procs:
            p.stop(grace=5.0)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return LoadResult(
        associations=len(groups),
        wall_s=wall,
        exit_codes=[p.popen.returncode for p in procs],
        client_cpu_s=client_cpu,
        error=error,
        logs=[str(p) for p in logs],
        ports=[ports[i % len(ports)] for i in range(len(groups))],
    )
