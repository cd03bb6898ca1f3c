"""Query and retrieve benchmark: arkiv beside Orthanc, on the same synthetic corpus, in one run.

What a dentist waits for when opening a patient is a query (by national ID, by name, by date)
and then the images.  Both servers get the same files (``bench.corpus``); every operation is
timed with the same client against both, one request at a time, and the table shows median and
p95 latency, requests per second of that sequential client, and arkiv's ratio to Orthanc.

arkiv is filled in-process through ``Archive.ingest.ingest_dicom`` before ``arkiv serve`` starts,
the way a bulk import fills an archive; Orthanc through its REST API (``POST /instances``) from
several threads.  Orthanc answers DICOMweb through its DICOMweb plugin (Debian's
``orthanc-dicomweb``), so QIDO-RS and WADO-RS go through the same routes on both servers.  Each
query also checks that both servers found the same number of studies, so a fast wrong answer
does not count as fast.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydicom.dataset import Dataset as PydicomDataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from arkiv.accounts import Role
from arkiv.audit import Actor
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.services import Archive
from bench.corpus import Corpus, CorpusInstance, generate
from bench.peers import LOCALHOST, ArkivPeer, OrthancPeer, Peer, PeerError, stop_all

BENCH_AET = "BENCHFIND"
QIDO_LIMIT = 100
USER = "bench-tannlege"
PASSWORD = "bench-riktig-hest-batteri"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
# Never through an HTTP proxy from the environment: every request is for 127.0.0.1.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))
console = Console()
# The results table is wide; it should not wrap in a narrow terminal or a captured stream.
table_console = Console(width=170)


class BenchQueryError(RuntimeError):
    """The benchmark could not be set up or a server answered wrongly."""


# --------------------------------------------------------------------------------------------
# Servers


class QueryArkivPeer(ArkivPeer):
    """``arkiv serve`` over a data directory filled in-process before it starts, with the bench's
    calling AE configured as a peer allowed to query and a clinician account for DICOMweb."""

    def __init__(self, executable: Path, corpus: Corpus, startup_timeout: float) -> None:
        super().__init__(executable, startup_timeout)
        self.corpus = corpus
        self.load_s = 0.0

    def env(self, node: int = 0) -> dict[str, str]:
        env = super().env(node)
        peers = [
            {"ae_title": BENCH_AET, "county": County.VESTFOLD.value, "services": ["echo", "find"]}
        ]
        env["ARKIV_PEERS"] = json.dumps(peers)
        return env

    def prepare(self, run_dir: Path) -> None:
        started = time.monotonic()
        archive = Archive(Settings(data_dir=run_dir / "data"))
        try:
            archive.accounts.add_user(USER, PASSWORD, Role.CLINICIAN, County.VESTFOLD)
            actor = Actor(name="bench-import", kind="system", county=County.VESTFOLD.value)
            with ProgressBar("arkiv: in-process import", len(self.corpus.instances)) as advance:
                for inst in self.corpus.instances:
                    archive.ingest.ingest_dicom(inst.path.read_bytes(), actor)
                    advance()
        finally:
            archive.close()
        self.load_s = time.monotonic() - started


class QueryOrthancPeer(OrthancPeer):
    """Orthanc with its DICOMweb plugin; no fsync while loading (loading is not what is timed)."""

    def config(self, run_dir: Path) -> dict[str, Any]:
        cfg = super().config(run_dir)
        cfg["SyncStorageArea"] = False
        cfg["Plugins"] = [str(DICOMWEB_PLUGIN)]
        # Like arkiv, Orthanc answers C-FIND only to a configured modality.
        cfg["DicomModalities"] = {"bench": [BENCH_AET, LOCALHOST, 104]}
        cfg["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": True}
        return cfg

    def load(self, corpus: Corpus, threads: int) -> float:
        """POST every file to ``/instances``; seconds taken."""
        url = f"http://{LOCALHOST}:{self.http_port}/instances"

        def post(inst: CorpusInstance) -> None:
            req = urllib.request.Request(url, data=inst.path.read_bytes(), method="POST")
            req.add_header("Content-Type", "application/dicom")
            with _HTTP.open(req, timeout=60) as resp:
                if resp.status != 200:
                    raise BenchQueryError(f"Orthanc refused {inst.path}: HTTP {resp.status}")

        started = time.monotonic()
        with (
            ProgressBar("orthanc: POST /instances", len(corpus.instances)) as advance,
            ThreadPoolExecutor(threads) as pool,
        ):
            for future in [pool.submit(post, inst) for inst in corpus.instances]:
                future.result()
                advance()
        return time.monotonic() - started


class ProgressBar:
    """A rich progress bar as a context manager that hands out a thread-safe ``advance``."""

    def __init__(self, label: str, total: int) -> None:
        self.progress = Progress(console=console, transient=True)
        self.task = self.progress.add_task(label, total=total)
        self.lock = threading.Lock()

    def __enter__(self) -> Callable[[], None]:
        self.progress.start()

        def advance() -> None:
            with self.lock:
                self.progress.advance(self.task)

        return advance

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


# --------------------------------------------------------------------------------------------
# Operations


@dataclass
class Timing:
    """Latencies of one operation on one server, and how many studies each query found."""

    seconds: list[float] = field(default_factory=list)
    found: list[int] = field(default_factory=list)

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.seconds) * 1000 if self.seconds else None

    @property
    def p95_ms(self) -> float | None:
        if not self.seconds:
            return None
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000

    @property
    def per_second(self) -> float | None:
        total = sum(self.seconds)
        return len(self.seconds) / total if total > 0 else None


@dataclass(frozen=True)
class Target:
    """How to reach one server: its DICOM port and the base URL and auth of its DICOMweb."""

    name: str
    aet: str
    dicom_port: int
    dicomweb: str
    auth: tuple[str, str] | None


def c_find(target: Target, keys: dict[str, str]) -> int:
    """One Study Root C-FIND at STUDY level on a new association; the number of matches."""
    ae = AE(ae_title=BENCH_AET)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    query = PydicomDataset()
    query.SpecificCharacterSet = "ISO_IR 192"
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.PatientID = ""
    query.PatientName = ""
    query.StudyDate = ""
    for key, value in keys.items():
        setattr(query, key, value)
    assoc = ae.associate(LOCALHOST, target.dicom_port, ae_title=target.aet)
    if not assoc.is_established:
        raise BenchQueryError(f"{target.name} refused the C-FIND association from {BENCH_AET}")
    try:
        matches = 0
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            code = int(status.Status) if "Status" in status else -1
            if code in (0xFF00, 0xFF01):
                matches += identifier is not None
            elif code != 0x0000:
                comment = status.get("ErrorComment", "")
                raise BenchQueryError(f"{target.name} C-FIND failed: 0x{code:04X} {comment}")
        return matches
    finally:
        assoc.release()


def qido(client: httpx.Client, target: Target, params: dict[str, str]) -> int:
    """One QIDO-RS study search, a page of ``QIDO_LIMIT`` as OHIF asks for.

    ``*`` stays unescaped in the query string: Orthanc's plugin does not decode ``%2A`` and would
    search for a literal asterisk (arkiv takes both)."""
    query = urllib.parse.urlencode({**params, "limit": str(QIDO_LIMIT)}, safe="*^-")
    resp = client.get(
        f"{target.dicomweb}/studies?{query}", headers={"Accept": "application/dicom+json"}
    )
    if resp.status_code == 204:
        return 0
    if resp.status_code != 200:
        raise BenchQueryError(
            f"{target.name} QIDO {params}: HTTP {resp.status_code} {resp.text[:200]}"
        )
    return len(resp.json())


def wado(client: httpx.Client, target: Target, inst: CorpusInstance, rendered: bool) -> int:
    url = (
        f"{target.dicomweb}/studies/{inst.study_uid}/series/{inst.series_uid}"
        f"/instances/{inst.sop_uid}"
    )
    if rendered:
        url, accept = url + "/rendered", "image/jpeg"
    else:
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    resp = client.get(url, headers={"Accept": accept})
    if resp.status_code != 200 or not resp.content:
        raise BenchQueryError(f"{target.name} GET {url}: HTTP {resp.status_code} {resp.text[:200]}")
    return 1


@dataclass(frozen=True)
class Operation:
    """One measured operation: a label and, per repetition, the call to make on a server."""

    label: str
    call: Callable[[httpx.Client, Target, int], int]


def operations(corpus: Corpus, name_prefix: str) -> list[Operation]:
    patients = corpus.patient_ids
    instances = corpus.instances
    years = [str(y) for y in range(2015, 2025)]

    def pid(i: int) -> str:
        return patients[(i * 7919) % len(patients)]

    def dates(i: int) -> str:
        year = years[i % len(years)]
        return f"{year}0301-{year}0531"

    def inst(i: int) -> CorpusInstance:
        return instances[(i * 104729) % len(instances)]

    name = f"{name_prefix}*"
    return [
        Operation("C-FIND PatientID", lambda c, t, i: c_find(t, {"PatientID": pid(i)})),
        Operation(f"C-FIND PatientName={name}", lambda c, t, i: c_find(t, {"PatientName": name})),
        Operation("C-FIND StudyDate range", lambda c, t, i: c_find(t, {"StudyDate": dates(i)})),
        Operation("QIDO-RS PatientID", lambda c, t, i: qido(c, t, {"PatientID": pid(i)})),
        # Upper case: Orthanc's DICOMweb plugin (1.7) matches names case-sensitively in QIDO-RS
        # and finds nothing for `hans*`; arkiv finds the same studies either way.
        Operation(f"QIDO-RS PatientName={name}", lambda c, t, i: qido(c, t, {"PatientName": name})),
        Operation("QIDO-RS StudyDate range", lambda c, t, i: qido(c, t, {"StudyDate": dates(i)})),
        Operation("WADO-RS instance", lambda c, t, i: wado(c, t, inst(i), rendered=False)),
        Operation("WADO-RS rendered", lambda c, t, i: wado(c, t, inst(i), rendered=True)),
    ]


def measure(
    ops: list[Operation], targets: list[Target], repeat: int
) -> dict[str, dict[str, Timing]]:
    """Every operation ``repeat`` times on every server; servers alternate request by request so
    that whatever else the machine does falls on both alike."""
    results: dict[str, dict[str, Timing]] = {op.label: {} for op in ops}
    clients = {t.name: httpx.Client(auth=t.auth, timeout=60) for t in targets}
    try:
        total = len(ops) * repeat * len(targets)
        with ProgressBar("measuring", total) as advance:
            for op in ops:
                for i in range(repeat):
                    order = targets if i % 2 == 0 else list(reversed(targets))
                    for target in order:
                        timing = results[op.label].setdefault(target.name, Timing())
                        started = time.perf_counter()
                        found = op.call(clients[target.name], target, i)
                        timing.seconds.append(time.perf_counter() - started)
                        timing.found.append(found)
                        advance()
    finally:
        for client in clients.values():
            client.close()
    return results


def disagreements(results: dict[str, dict[str, Timing]]) -> list[str]:
    """Operations where the servers found different numbers of studies for the same query."""
    out: list[str] = []
    for label, by_server in results.items():
        counts = {name: t.found for name, t in by_server.items()}
        if len({tuple(v) for v in counts.values()}) > 1:
            pairs = ", ".join(f"{n}: {sum(v)}" for n, v in counts.items())
            out.append(f"{label}: servers found different results ({pairs})")
    return out


# --------------------------------------------------------------------------------------------
# Output


def _fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def summary_rows(results: dict[str, dict[str, Timing]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for label, by_server in results.items():
        arkiv, orthanc = by_server.get("arkiv"), by_server.get("orthanc")
        row: dict[str, Any] = {"operation": label}
        for name, timing in by_server.items():
            row[name] = {
                "median_ms": timing.median_ms,
                "p95_ms": timing.p95_ms,
                "per_second": timing.per_second,
                "studies_found_mean": statistics.mean(timing.found) if timing.found else None,
                "n": len(timing.seconds),
            }
        if arkiv and orthanc and arkiv.median_ms and orthanc.median_ms:
            row["median_ratio_arkiv_over_orthanc"] = arkiv.median_ms / orthanc.median_ms
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Query and retrieve: latency (ms) and sequential requests/s")
    table.add_column("operation")
    for name in ("arkiv", "orthanc"):
        table.add_column(f"{name} median", justify="right")
        table.add_column(f"{name} p95", justify="right")
        table.add_column(f"{name} req/s", justify="right")
    table.add_column("arkiv/orthanc", justify="right")
    table.add_column("found", justify="right")
    for row in rows:
        cells = [row["operation"]]
        for name in ("arkiv", "orthanc"):
            stats = row.get(name, {})
            cells += [
                _fmt(stats.get("median_ms")),
                _fmt(stats.get("p95_ms")),
                _fmt(stats.get("per_second"), 0),
            ]
        ratio = row.get("median_ratio_arkiv_over_orthanc")
        cells.append("—" if ratio is None else f"{ratio:.2f}×")
        cells.append(_fmt(row.get("arkiv", {}).get("studies_found_mean")))
        table.add_row(*cells)
    table_console.print(table)


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.query", description=__doc__)
    parser.add_argument("--instances", type=int, default=100_000, help="corpus size")
    parser.add_argument("--repeat", type=int, default=50, help="requests per operation and server")
    parser.add_argument("--name-prefix", default="HANS", help="PatientName wildcard prefix")
    parser.add_argument("--orthanc-threads", type=int, default=4, help="threads loading Orthanc")
    parser.add_argument("--arkiv-bin", type=Path, default=Path(sys.executable).parent / "arkiv")
    parser.add_argument("--orthanc-bin", type=Path, default=Path("/usr/sbin/Orthanc"))
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where corpus and servers live")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    parser.add_argument("--keep", action="store_true", help="keep corpus, data and logs")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.instances < 1 or args.repeat < 1:
        parser.error("--instances and --repeat must be at least 1")
    return args


def _check_tools(args: argparse.Namespace) -> None:
    for path, what in (
        (args.arkiv_bin, "arkiv is not installed in this venv (pip install -e .)"),
        (args.orthanc_bin, "Orthanc is missing: .ci/install-system-packages installs it"),
        (DICOMWEB_PLUGIN, "Orthanc's DICOMweb plugin is missing: apt-get install orthanc-dicomweb"),
    ):
        if not path.exists():
            raise BenchQueryError(f"{path}: {what}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        _check_tools(args)
    except BenchQueryError as exc:
        console.print(f"[red]bench.query: {exc}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="arkiv-bench-query-", dir=args.tmp_dir))
    peers: list[Peer] = []
    try:
        with ProgressBar(f"corpus: writing {args.instances} instances", args.instances) as advance:
            corpus = generate(work / "corpus", args.instances, tick=lambda _n: advance())
        console.print(
            f"corpus: {len(corpus.instances)} instances, {corpus.study_count} studies, "
            f"{len(corpus.patient_ids)} patients, {corpus.total_bytes / 1e6:.1f} MB"
        )
        arkiv = QueryArkivPeer(args.arkiv_bin, corpus, args.startup_timeout)
        orthanc = QueryOrthancPeer(args.orthanc_bin, args.startup_timeout)
        peers = [arkiv, orthanc]
        arkiv.start(work / "arkiv")
        console.print(
            f"arkiv: imported in-process (Archive.ingest.ingest_dicom, as a bulk import) in "
            f"{arkiv.load_s:.1f} s, then `arkiv serve` started (embedded: SQLite + files)"
        )
        orthanc.start(work / "orthanc")
        orthanc_load_s = orthanc.load(corpus, args.orthanc_threads)
        count, how = orthanc.count_instances()
        if count != len(corpus.instances):
            raise BenchQueryError(
                f"Orthanc holds {count} instances ({how}), not {len(corpus.instances)}"
            )
        console.print(f"orthanc: loaded through REST in {orthanc_load_s:.1f} s")
        targets = [
            Target("arkiv", arkiv.aet, arkiv.dicom_port,
                   f"http://{LOCALHOST}:{arkiv.http_port}/dicom-web", (USER, PASSWORD)),
            Target("orthanc", orthanc.aet, orthanc.dicom_port,
                   f"http://{LOCALHOST}:{orthanc.http_port}/dicom-web", None),
        ]  # fmt: skip
        results = measure(operations(corpus, args.name_prefix), targets, args.repeat)
        rows = summary_rows(results)
        print_table(rows)
        problems = disagreements(results)
        for problem in problems:
            console.print(f"[yellow]{problem}")
        if args.json is not None:
            doc = {
                "instances": len(corpus.instances),
                "studies": corpus.study_count,
                "patients": len(corpus.patient_ids),
                "repeat": args.repeat,
                "load_seconds": {"arkiv": arkiv.load_s, "orthanc": orthanc_load_s},
                "orthanc": orthanc.describe(),
                "cpus": os.cpu_count(),
                "rows": rows,
                "disagreements": problems,
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        return 1 if problems else 0
    except (BenchQueryError, PeerError) as exc:
        console.print(f"[red]bench.query: {exc}")
        for peer in peers:
            console.print(f"--- {peer.name} log ---\n{peer.log_tail()}")
        return 1
    finally:
        for peer in peers:
            peer.stop()
        stop_all()
        if args.keep:
            console.print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
