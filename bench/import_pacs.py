"""Import rate from a running PACS: `arkiv import --from-pacs` against Orthanc.

Run from the project root::

    .venv/bin/python -m bench.import_pacs                     # 200 IO + 20 PX, 40 patients
    .venv/bin/python -m bench.import_pacs --intraoral 50 --panoramic 5 --backends embedded

Orthanc (Debian package, `tests/servers.py`) is started on loopback and loaded through its REST
API with the ingest benchmark's synthetic data set (`bench.dataset`: 1024x768 intra-oral and
2800x1400 panoramic images, one study per patient). Then, for each backend, retrieve service
and concurrency, a fresh, empty archive pulls the whole of Orthanc with the importer's own code
(`dicom_node.pacs_pull.pull`, in this process, as the `arkiv import` command runs it): C-FIND
over date windows, then C-GET or C-MOVE study by study, every object through the ingest path.
The wall time from the first C-FIND to the last object indexed gives objects/s and MB/s; the
run counts as valid only if every object was imported.

Backends: `embedded` (SQLite and files in a temporary directory) and `scaleout` (a fresh
PostgreSQL database and MinIO bucket, the servers of `bench.scaleout`), when PostgreSQL and
MinIO are installed. Results go to the terminal and, with `--output`, to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import date
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from arkiv.audit import Actor
from arkiv.config import Settings
from arkiv.importing.pacs_state import PullState
from arkiv.importing.run import ImportReport, ImportRun
from arkiv.services import Archive
from bench import dataset as ds
from bench.ingest import machine_info, tool_versions
from bench.peers import free_ports
from bench.scaleout import ScaleoutBackend, Target
from dicom_node.pacs_pull import PacsAddress, PullOptions, pull
from tests.servers import MINIO_PASSWORD, MINIO_USER, OrthancServer, ServerUnavailable

HOST = "127.0.0.1"
IMPORTER = "ARKIVIMPORT"
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.import_pacs", description=__doc__)
    parser.add_argument("--intraoral", type=int, default=200)
    parser.add_argument("--panoramic", type=int, default=20)
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument(
        "--backends",
        default="embedded,scaleout,orthanc",
        help="embedded, scaleout, orthanc (comma separated; orthanc: a second Orthanc pulls "
        "the same studies over C-MOVE, for the ratio)",
    )
    parser.add_argument("--retrieve", default="get,move", help="get, move (comma separated)")
    parser.add_argument(
        "--concurrency", default="1,4", help="studies at once, comma separated (default 1,4)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per combination")
    parser.add_argument("--output", type=Path, help="write the results here as JSON")
    return parser.parse_args(argv)


def load_orthanc(orthanc: OrthancServer, dataset: ds.BenchDataset) -> float:
    """POST every file of the data set to Orthanc; returns the seconds it took."""
    started = time.perf_counter()
    for item in dataset.files:
        request = urllib.request.Request(
            f"http://{HOST}:{orthanc.http_port}/instances",
            data=dataset.abspath(item).read_bytes(),
            method="POST",
        )
        request.add_header("Content-Type", "application/dicom")
        with _HTTP.open(request, timeout=120) as response:
            response.read()
    return time.perf_counter() - started


def run_one(
    orthanc: OrthancServer,
    dataset: ds.BenchDataset,
    overrides: dict[str, Any],
    retrieve: str,
    concurrency: int,
    workdir: Path,
) -> dict[str, Any]:
    """One import of the whole of Orthanc into a fresh archive."""
    listen_port = free_ports(1)[0]
    orthanc.add_modality("importer", IMPORTER, HOST, listen_port)
    archive = Archive(Settings(data_dir=workdir / "data", **overrides))
    try:
        actor = Actor(name="cli:bench", kind="system", county="vestfold")
        run = ImportRun(archive.ingest, actor, ImportReport(county="vestfold", operator="bench"))
        address = PacsAddress(orthanc.aet, HOST, orthanc.dicom_port)
        options = PullOptions(
            retrieve=retrieve,
            listen_port=listen_port,
            listen_host=HOST,
            since=date(2020, 1, 1),
            until=date(2026, 12, 31),
            concurrency=concurrency,
        )
        state = PullState(workdir / "state.json", str(address))
        started = time.perf_counter()
        result = pull(address, options, run, state)
        seconds = time.perf_counter() - started
    finally:
        archive.close()
    report = run.report
    complete = report.imported == len(dataset.files) and not report.refused
    return {
        "retrieve": retrieve,
        "concurrency": concurrency,
        "seconds": round(seconds, 3),
        "objects": report.imported,
        "bytes": report.bytes_imported,
        "objects_per_s": round(report.imported / seconds, 1),
        "mb_per_s": round(report.bytes_imported / 1e6 / seconds, 1),
        "studies": result.studies_retrieved,
        "queries": result.queries,
        "complete": complete,
        "refused": report.refused[:3],
    }


def run_orthanc(orthanc: OrthancServer, dataset: ds.BenchDataset, workdir: Path) -> dict[str, Any]:
    """The same pull done by a second, empty Orthanc (what Orthanc offers for this: a C-FIND
    of every study through `/modalities/…/query`, then `/queries/…/retrieve`, one C-MOVE per
    study to itself), for the ratio."""
    dest = OrthancServer.start(workdir / "orthanc-dest", aet="ORTHANCDEST")
    try:
        dest.add_modality("source", orthanc.aet, HOST, orthanc.dicom_port)
        orthanc.add_modality("dest", dest.aet, HOST, dest.dicom_port)
        started = time.perf_counter()
        query = dest.rest("POST", "/modalities/source/query", {"Level": "Study", "Query": {}})
        dest.rest(
            "POST",
            f"/queries/{query['ID']}/retrieve",
            {"TargetAet": dest.aet, "Synchronous": True},
            timeout=3600,
        )
        seconds = time.perf_counter() - started
        stats = dest.rest("GET", "/statistics")
    finally:
        dest.stop()
    objects = int(stats["CountInstances"])
    size = int(stats["TotalDiskSize"])
    return {
        "retrieve": "move",
        "concurrency": 1,
        "seconds": round(seconds, 3),
        "objects": objects,
        "bytes": size,
        "objects_per_s": round(objects / seconds, 1),
        "mb_per_s": round(size / 1e6 / seconds, 1),
        "studies": dataset.study_count,
        "queries": 1,
        "complete": objects == len(dataset.files),
        "refused": [],
    }


def _scaleout_overrides(backend: ScaleoutBackend, target: Target) -> dict[str, Any]:
    assert backend.postgres is not None and backend.minio is not None
    return {
        "database_url": backend.postgres.url(target.database),
        "s3_endpoint": backend.minio.endpoint,
        "s3_bucket": target.bucket,
        "s3_access_key": MINIO_USER,
        "s3_secret_key": MINIO_PASSWORD,
        "s3_secure": False,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    services = [s.strip() for s in args.retrieve.split(",") if s.strip()]
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    spec = ds.DatasetSpec(
        intraoral=args.intraoral, panoramic=args.panoramic, patients=args.patients
    )
    dataset, reused = ds.ensure(spec, ds.default_cache_root())
    console.print(
        f"data set: {len(dataset.files)} objects, {dataset.study_count} studies, "
        f"{dataset.total_bytes / 1e6:.1f} MB ({'cached' if reused else 'generated'})"
    )
    scaleout = ScaleoutBackend()
    if "scaleout" in backends:
        missing = ScaleoutBackend.missing()
        if missing is not None:
            console.print(f"[yellow]scale-out skipped:[/] {missing}")
            backends.remove("scaleout")
    root = Path(tempfile.mkdtemp(prefix="arkiv-bench-import-"))
    results: list[dict[str, Any]] = []
    orthanc: OrthancServer | None = None
    try:
        orthanc = OrthancServer.start(root / "orthanc")
        loaded = load_orthanc(orthanc, dataset)
        console.print(f"Orthanc loaded in {loaded:.1f} s")
        if "scaleout" in backends:
            scaleout.start()
        for backend in backends:
            if backend == "orthanc":
                for rep in range(args.repeat):
                    workdir = root / f"orthanc-{rep}"
                    row = run_orthanc(orthanc, dataset, workdir)
                    shutil.rmtree(workdir, ignore_errors=True)
                    row["backend"] = backend
                    results.append(row)
                    console.print(
                        f"orthanc   move x1: {row['objects']} objects in {row['seconds']:.1f} s, "
                        f"{row['objects_per_s']} objects/s, {row['mb_per_s']} MB/s"
                    )
                continue
            for service in services:
                for concurrency in concurrencies:
                    for rep in range(args.repeat):
                        workdir = root / f"{backend}-{service}-{concurrency}-{rep}"
                        target = scaleout.new_target() if backend == "scaleout" else None
                        overrides = (
                            _scaleout_overrides(scaleout, target) if target is not None else {}
                        )
                        try:
                            row = run_one(
                                orthanc, dataset, overrides, service, concurrency, workdir
                            )
                        finally:
                            if target is not None:
                                scaleout.drop(target)
                            shutil.rmtree(workdir, ignore_errors=True)
                        row["backend"] = backend
                        results.append(row)
                        console.print(
                            f"{backend:9} {service:4} x{concurrency}: {row['objects']} objects "
                            f"in {row['seconds']:.1f} s, {row['objects_per_s']} objects/s, "
                            f"{row['mb_per_s']} MB/s{'' if row['complete'] else '  INCOMPLETE'}"
                        )
    except ServerUnavailable as exc:
        console.print(f"[red]cannot run:[/] {exc}")
        return 2
    finally:
        if orthanc is not None:
            orthanc.stop()
        scaleout.stop()
        shutil.rmtree(root, ignore_errors=True)
    _table(results)
    if args.output is not None:
        document = {
            "benchmark": "import-pacs",
            "dataset": dataset.summary(),
            "machine": machine_info(),
            "versions": tool_versions(),
            "results": results,
            "medians": _medians(results),
        }
        args.output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        console.print(f"results: {args.output}")
    return 0 if all(r["complete"] for r in results) else 1


def _medians(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in results:
        groups.setdefault((row["backend"], row["retrieve"], row["concurrency"]), []).append(row)
    return [
        {
            "backend": backend,
            "retrieve": service,
            "concurrency": concurrency,
            "objects_per_s": statistics.median(r["objects_per_s"] for r in rows),
            "mb_per_s": statistics.median(r["mb_per_s"] for r in rows),
            "runs": len(rows),
        }
        for (backend, service, concurrency), rows in groups.items()
    ]


def _table(results: list[dict[str, Any]]) -> None:
    table = Table(
        title="import from Orthanc (median of runs; × Orthanc: objects/s over a second "
        "Orthanc's own C-MOVE pull of the same studies)"
    )
    for column in ("backend", "retrieve", "studies at once", "objects/s", "MB/s", "runs"):
        table.add_column(column)
    table.add_column("× Orthanc")
    medians = _medians(results)
    reference = next((m["objects_per_s"] for m in medians if m["backend"] == "orthanc"), None)
    for row in medians:
        ratio = ""
        if reference and row["backend"] != "orthanc":
            ratio = f"{row['objects_per_s'] / reference:.2f}"
        table.add_row(
            row["backend"],
            row["retrieve"].upper(),
            str(row["concurrency"]),
            f"{row['objects_per_s']:.1f}",
            f"{row['mb_per_s']:.1f}",
            str(row["runs"]),
            ratio,
        )
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
