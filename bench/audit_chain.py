"""How many audit events per second the one hash chain takes from several writers at once.

Every audit event, from every thread, worker and node, appends to one chain under a lock on its
head row (docs/ARCHITECTURE.md, "One audit chain, many writers"). That lock, held from the
append to the commit, bounds the whole archive's event rate. This measures the bound: N writer
processes, each appending events in transactions of their own (as reads do), on the embedded
SQLite index and on PostgreSQL, and prints events per second and the median append latency.

    python -m bench.audit_chain [--writers 1,2,4,8] [--seconds 10] [--repeat 3]

PostgreSQL comes from Debian's packages, started on a free loopback port in a temporary
directory (tests/servers.py), with its default durability (`synchronous_commit=on`).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from arkiv.audit import Actor, AuditLog, Event, EventType
from storage.index import Index
from tests.servers import PostgresServer

console = Console()
_ACTOR = Actor(name="bench", kind="user", county="vestfold", address="127.0.0.1", role="clinician")
_EVENT = Event(
    EventType.INSTANCES_ACCESSED,
    "R",
    _ACTOR,
    patient_ids=("01818012345",),
    study_uids=("1.2.826.0.1.3680043.8.498.1.2.3",),
    object_count=1,
    details={"purpose": "thumbnail"},
    counties=("vestfold",),
)


@dataclass(frozen=True)
class ChainRun:
    backend: str
    writers: int
    events: int
    seconds: float
    median_ms: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


def _writer(url: str, seconds: float, ready: Any, go: Any, results: Any) -> None:
    index = Index(url)
    audit = AuditLog(index)
    latencies: list[float] = []
    try:
        audit.record(_EVENT)  # connected and warm before the clock starts
        ready.release()
        go.wait()
        stop_at = time.perf_counter() + seconds
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            audit.record(_EVENT)
            latencies.append((time.perf_counter() - began) * 1000)
    finally:
        index.close()
        results.put(latencies)


def run_writers(backend: str, url: str, writers: int, seconds: float) -> ChainRun:
    """`writers` processes append for `seconds` together; the chain must verify afterwards."""
    Index(url).close()  # the schema, before any writer starts
    context = mp.get_context("spawn")
    ready, go, results = context.Semaphore(0), context.Event(), context.Queue()
    processes = [
        context.Process(target=_writer, args=(url, seconds, ready, go, results))
        for _ in range(writers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        if not ready.acquire(timeout=120):
            raise RuntimeError(f"{backend}: a writer did not start")
    go.set()
    latencies = [ms for _ in processes for ms in results.get(timeout=seconds + 120)]
    for process in processes:
        process.join(timeout=60)
    index = Index(url)
    try:
        report = AuditLog(index).verify()
        if not report.ok:
            raise RuntimeError(f"{backend}: the chain broke under {writers} writers: {report}")
    finally:
        index.close()
    return ChainRun(backend, writers, len(latencies), seconds, statistics.median(latencies))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_chain", description=__doc__)
    parser.add_argument("--writers", default="1,2,4,8", help="writer processes (1,2,4,8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per run (10)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (3)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.writers.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="arkiv-bench-chain-"))
    postgres = PostgresServer.start()
    runs: list[ChainRun] = []
    try:
        for repetition in range(args.repeat):
            for writers in counts:
                for backend in ("sqlite", "postgresql"):
                    if backend == "sqlite":
                        url = f"sqlite:///{workdir / f'{repetition}-{writers}.sqlite3'}"
                    else:
                        url = postgres.url(postgres.create_database())
                    run = run_writers(backend, url, writers, args.seconds)
                    runs.append(run)
                    console.print(
                        f"{backend:10} {writers} writers: {run.per_second:7.0f} events/s, "
                        f"median {run.median_ms:.2f} ms"
                    )
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    table = Table(title=f"audit chain appends, medians of {args.repeat} runs of {args.seconds} s")
    table.add_column("writers", justify="right")
    for backend in ("sqlite", "postgresql"):
        table.add_column(f"{backend} events/s", justify="right")
        table.add_column(f"{backend} ms/event", justify="right")
    for writers in counts:
        row = [str(writers)]
        for backend in ("sqlite", "postgresql"):
            mine = [r for r in runs if r.backend == backend and r.writers == writers]
            row.append(f"{statistics.median(r.per_second for r in mine):.0f}")
            row.append(f"{statistics.median(r.median_ms for r in mine):.2f}")
        table.add_row(*row)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
