"""Bulk import benchmark: `arkiv import FOLDER` into an empty archive, objects/s and MB/s.

Run from the project root::

    .venv/bin/python -m bench.import_files                  # 200 IO + 20 PX, workers 1 and 4
    .venv/bin/python -m bench.import_files --intraoral 50 --panoramic 5 --peers embedded

The folder is the ingest benchmark's synthetic data set (`bench/dataset.py`: 1024×768 intra-oral
and 2800×1400 panoramic images, 16 bits, Part 10, one folder per patient; cached), so the two
benchmarks measure the same objects arriving by two doors. Each run imports the whole folder
into a fresh archive through the same code as the command (`arkiv.import_cli.run`, progress bars
and reports included), timed from the start of the walk to the report being written; the
archive's opening (schema creation) is not counted. The same import is then run a second time,
when every object is already stored: what continuing an interrupted import costs.

The peers (``--peers``):

* ``embedded``: SQLite and files in a fresh data directory;
* ``scaleout``: a fresh database of a PostgreSQL and a fresh bucket of a MinIO the benchmark
  starts itself on 127.0.0.1 (`bench/scaleout.py`), skipped with a note when not installed;
* ``orthanc``: the same folder into a fresh Orthanc (Debian package) the way Orthanc's own
  `ImportDicomFiles.py` does it, every file POSTed to its REST API (`/instances`) by as many
  threads as arkiv has workers; the ratio printed is arkiv's rate over Orthanc's at the same
  number of workers, measured in the same run. Skipped with a note when Orthanc is not
  installed.

The summary gives the median over ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from arkiv.cli import build_parser
from arkiv.config import Settings
from arkiv.import_cli import run as run_import
from arkiv.services import Archive
from bench import dataset as ds
from bench.peers import OrthancPeer
from bench.scaleout import ScaleoutBackend
from tests.servers import MINIO_PASSWORD, MINIO_USER, ServerUnavailable

ORTHANC_BIN = Path("/usr/sbin/Orthanc")

console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)


@dataclass
class Measurement:
    peer: str
    workers: int
    repetition: int
    objects: int
    megabytes: float
    seconds: float
    objects_per_s: float
    mb_per_s: float
    again_seconds: float
    again_objects_per_s: float
    refused: int


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.import_files", description=__doc__)
    parser.add_argument("--intraoral", type=int, default=200)
    parser.add_argument("--panoramic", type=int, default=20)
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--workers", default="1,4", help="worker counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--peers", default="embedded,scaleout,orthanc")
    parser.add_argument("--tmp-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def orthanc_import_once(folder: Path, workers: int, scratch: Path) -> tuple[float, float, int, int]:
    """(seconds, seconds again, objects, bytes) of POSTing every file of `folder` to a fresh
    Orthanc with `workers` threads, then the same again (Orthanc answers AlreadyStored)."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and _is_part10(p))
    peer = OrthancPeer(ORTHANC_BIN)
    peer.start(scratch / f"orthanc-{time.monotonic_ns()}")
    try:
        url = f"http://127.0.0.1:{peer.http_port}/instances"
        with httpx.Client(timeout=120) as client:

            def post(path: Path) -> int:
                data = path.read_bytes()
                answer = client.post(url, content=data)
                answer.raise_for_status()
                return len(data)

            def run() -> tuple[float, int]:
                started = time.perf_counter()
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    sizes = list(pool.map(post, paths))
                return time.perf_counter() - started, sum(sizes)

            first, size = run()
            again, _ = run()
        count, _how = peer.count_instances()
    finally:
        peer.stop()
    return first, again, count or 0, size


def _is_part10(path: Path) -> bool:
    """Orthanc's import script also sends only what Orthanc takes: Part 10 files."""
    with path.open("rb") as handle:
        return handle.read(132)[128:] == b"DICM"


def import_once(settings: Settings, folder: Path, workers: int, report: Path) -> tuple[float, Any]:
    """(seconds, JSON report) of one `arkiv import` into the archive of `settings`."""
    archive = Archive(settings)
    try:
        command = ["import", str(folder), "--county", "vestfold", "--report", str(report)]
        args = build_parser().parse_args([*command, "--workers", str(workers)])
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            code = run_import(archive, args, "cli:bench")
        seconds = time.perf_counter() - started
    finally:
        archive.close()
    document = json.loads(report.read_text("utf-8"))
    if code != 0:
        raise RuntimeError(f"the import failed (exit {code}): {document['refused'][:3]}")
    return seconds, document


@contextlib.contextmanager
def archives(peer: str, backend: ScaleoutBackend | None, scratch: Path) -> Iterator[Settings]:
    data = Path(tempfile.mkdtemp(prefix=f"{peer}-", dir=scratch))
    if peer == "embedded":
        yield Settings(data_dir=data)
        return
    assert backend is not None and backend.postgres is not None and backend.minio is not None
    target = backend.new_target()
    try:
        yield Settings(
            data_dir=data,
            database_url=backend.postgres.url(target.database),
            s3_endpoint=backend.minio.endpoint,
            s3_bucket=target.bucket,
            s3_access_key=MINIO_USER,
            s3_secret_key=MINIO_PASSWORD,
            s3_secure=False,
        )
    finally:
        backend.drop(target)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = ds.DatasetSpec(
        intraoral=args.intraoral, panoramic=args.panoramic, patients=args.patients
    )
    data_set, reused = ds.ensure(spec, ds.default_cache_root())
    console.print(
        f"data set: {len(data_set.files)} objects, {data_set.total_bytes / 1e6:,.1f} MB "
        f"({'cached' if reused else 'generated'}) at {data_set.root}"
    )
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if "orthanc" in peers and not ORTHANC_BIN.exists():
        console.print(f"[yellow]orthanc skipped: {ORTHANC_BIN} not found")
        peers.remove("orthanc")
    backend: ScaleoutBackend | None = None
    if "scaleout" in peers:
        missing = ScaleoutBackend.missing()
        if missing:
            console.print(f"[yellow]scaleout skipped: {missing}")
            peers.remove("scaleout")
        else:
            backend = ScaleoutBackend()
            try:
                backend.start()
            except ServerUnavailable as exc:
                console.print(f"[yellow]scaleout skipped: {exc}")
                peers.remove("scaleout")
                backend = None
    results: list[Measurement] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-import-", dir=args.tmp_dir) as tmp:
            scratch = Path(tmp)
            for peer in peers:
                for workers in (int(w) for w in args.workers.split(",")):
                    for repetition in range(1, args.repeat + 1):
                        if peer == "orthanc":
                            first, again, count, size = orthanc_import_once(
                                data_set.root, workers, scratch
                            )
                            results.append(
                                Measurement(
                                    peer=peer,
                                    workers=workers,
                                    repetition=repetition,
                                    objects=count,
                                    megabytes=size / 1e6,
                                    seconds=first,
                                    objects_per_s=count / first,
                                    mb_per_s=size / 1e6 / first,
                                    again_seconds=again,
                                    again_objects_per_s=count / again,
                                    refused=0,
                                )
                            )
                            console.print(
                                f"orthanc workers={workers} #{repetition}: {count} objects in "
                                f"{first:.1f} s; again {again:.1f} s"
                            )
                            continue
                        with archives(peer, backend, scratch) as settings:
                            first, report = import_once(
                                settings, data_set.root, workers, scratch / "first.json"
                            )
                            again, _ = import_once(
                                settings, data_set.root, workers, scratch / "again.json"
                            )
                        objects = int(report["imported"])
                        megabytes = int(report["bytes_imported"]) / 1e6
                        results.append(
                            Measurement(
                                peer=peer,
                                workers=workers,
                                repetition=repetition,
                                objects=objects,
                                megabytes=megabytes,
                                seconds=first,
                                objects_per_s=objects / first,
                                mb_per_s=megabytes / first,
                                again_seconds=again,
                                again_objects_per_s=objects / again,
                                refused=len(report["refused"]),
                            )
                        )
                        console.print(
                            f"{peer} workers={workers} #{repetition}: {objects} objects in "
                            f"{first:.1f} s ({objects / first:.1f}/s, {megabytes / first:.1f} "
                            f"MB/s); again (all already stored) {again:.1f} s"
                        )
    finally:
        if backend is not None:
            backend.stop()
    table = Table(title="arkiv import FOLDER (an empty archive; then the same folder again)")
    for column in ("peer", "workers", "objects", "MB", "s", "objects/s", "MB/s", "again s"):
        table.add_column(column, justify="right")
    for m in results:
        table.add_row(
            m.peer,
            str(m.workers),
            str(m.objects),
            f"{m.megabytes:,.1f}",
            f"{m.seconds:.1f}",
            f"{m.objects_per_s:.1f}",
            f"{m.mb_per_s:.1f}",
            f"{m.again_seconds:.1f}",
        )
    console.print(table)
    console.print(summary(results))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"data_set": data_set.summary(), "results": [asdict(m) for m in results]},
                indent=2,
            )
            + "\n",
            "utf-8",
        )
    return 0


def summary(results: list[Measurement]) -> Table:
    """Medians per peer and worker count, with the ratio to Orthanc's at the same workers."""
    groups: dict[tuple[str, int], list[Measurement]] = {}
    for m in results:
        groups.setdefault((m.peer, m.workers), []).append(m)
    orthanc = {
        workers: statistics.median(x.objects_per_s for x in ms)
        for (peer, workers), ms in groups.items()
        if peer == "orthanc"
    }
    table = Table(title="medians (× Orthanc: arkiv's objects/s over Orthanc's, same workers)")
    for column in ("peer", "workers", "runs", "objects/s", "MB/s", "again s", "× Orthanc"):
        table.add_column(column, justify="right")
    for (peer, workers), ms in groups.items():
        rate = statistics.median(x.objects_per_s for x in ms)
        ratio = f"{rate / orthanc[workers]:.2f}" if workers in orthanc and peer != "orthanc" else ""
        table.add_row(
            peer,
            str(workers),
            str(len(ms)),
            f"{rate:.1f}",
            f"{statistics.median(x.mb_per_s for x in ms):.1f}",
            f"{statistics.median(x.again_seconds for x in ms):.1f}",
            ratio,
        )
    return table


if __name__ == "__main__":
    sys.exit(main())
