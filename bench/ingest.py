"""C-STORE ingest benchmark: arkiv (embedded and scale-out) versus Orthanc.

Run from the project root::

    .venv/bin/python -m bench.ingest          # 200 IO + 20 PX, 3 reps, 1, 2 and 4 assocs
    .venv/bin/python -m bench.ingest --intraoral 50 --panoramic 5 --repeat 1 --peers embedded

The peers (``--peers``, default every one that is installed):

* ``embedded``: ``arkiv serve`` on its default backend, SQLite and files in a fresh ``--data``;
* ``scaleout``: the same ``arkiv serve`` with ``ARKIV_DATABASE_URL`` / ``ARKIV_S3_*`` pointing at
  a fresh database of a PostgreSQL and a fresh bucket of a MinIO the benchmark starts itself;
* ``scaleout-2nodes``: two ``arkiv dicom`` nodes (own data directories and ports) on one such
  database and bucket, the associations dealt out to them in turn;
* ``orthanc``: Orthanc with a generated configuration.

For each peer, association count and repetition the server is started on free ports on
127.0.0.1 with a fresh, empty archive, the whole synthetic data set is sent with DCMTK storescu
(one process per association, in parallel), and the wall time from the first storescu start to
the last storescu exit is measured.  The number of stored instances is then checked.
See docs/PERFORMANCE.md for results and how to read them.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from arkiv.config import Settings
from bench import dataset as ds
from bench.load import run_storescu, split, write_storescu_profile
from bench.peers import (
    ArkivPeer,
    OrthancPeer,
    Peer,
    PeerError,
    stop_all,
    terminate_as_interrupt,
    version_line,
)
from bench.scaleout import ScaleoutBackend, ScaleoutPeer
from tests.servers import ServerUnavailable

EMBEDDED, SCALEOUT, SCALEOUT_2NODES, ORTHANC = "embedded", "scaleout", "scaleout-2nodes", "orthanc"
PEER_NAMES = (EMBEDDED, SCALEOUT, SCALEOUT_2NODES, ORTHANC)
ARKIV_PEERS = (EMBEDDED, SCALEOUT, SCALEOUT_2NODES)
SCALEOUT_PEERS = (SCALEOUT, SCALEOUT_2NODES)
REFERENCES = (EMBEDDED, ORTHANC)
"""The peers every other one is compared with."""

# Piped output (e.g. tee to a log) gets a width that fits the tables instead of 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 170)


@dataclass
class RunResult:
    server: str
    associations: int
    repetition: int
    ok: bool
    instances: int
    bytes: int
    wall_s: float | None = None
    instances_per_s: float | None = None
    mb_per_s: float | None = None
    server_cpu_s: float | None = None
    backend_cpu_s: dict[str, float] | None = None
    """CPU time of the servers behind the peer during the load (scale-out: PostgreSQL, MinIO)."""
    client_cpu_s: float | None = None
    startup_s: float | None = None
    stored: int | None = None
    stored_check: str = ""
    stored_how: str = ""
    settle_s: float = 0.0
    associations_per_node: list[int] | None = None
    loadavg_1m_before: float | None = None
    error: str | None = None


# --------------------------------------------------------------------------------------------
# Command line


def _assoc_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text}") from exc
    if not values or any(v < 1 or v > 64 for v in values):
        raise argparse.ArgumentTypeError("association counts must be 1..64")
    return list(dict.fromkeys(values))


def _peer_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in PEER_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown peer {', '.join(unknown) or '(none given)'}; "
            f"choose from {','.join(PEER_NAMES)}"
        )
    return list(dict.fromkeys(names))


def _nonneg(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    default_arkiv = Path(sys.executable).parent / "arkiv"
    p = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="C-STORE ingest benchmark of arkiv (embedded and on PostgreSQL + MinIO) "
        "against Orthanc (DCMTK storescu load).",
    )
    p.add_argument(
        "--intraoral",
        type=_nonneg,
        default=200,
        metavar="N",
        help="intra-oral images, 1024x768 (default 200)",
    )
    p.add_argument(
        "--panoramic",
        type=_nonneg,
        default=20,
        metavar="N",
        help="panoramic images, 2800x1400 (default 20)",
    )
    p.add_argument(
        "--patients",
        type=_positive,
        default=20,
        metavar="N",
        help="patients, one study each (default 20)",
    )
    p.add_argument(
        "--seed", type=int, default=ds.DatasetSpec.seed, help="data set seed (default %(default)s)"
    )
    p.add_argument(
        "--repeat",
        type=_positive,
        default=3,
        metavar="R",
        help="repetitions per server and association count (default 3)",
    )
    p.add_argument(
        "--associations",
        type=_assoc_list,
        default=[1, 2, 4],
        metavar="LIST",
        help='parallel associations to measure, comma-separated (default "1,2,4")',
    )
    p.add_argument(
        "--peers",
        type=_peer_list,
        default=None,
        metavar="LIST",
        help=f"servers to measure, comma-separated, from {','.join(PEER_NAMES)}"
        " (default: every one that is installed)",
    )
    p.add_argument("--skip-orthanc", action="store_true", help="do not run Orthanc")
    p.add_argument("--skip-arkiv", action="store_true", help="do not run any arkiv peer")
    p.add_argument(
        "--dicom-workers",
        type=_positive,
        default=None,
        metavar="N",
        help="DICOM processes of the one-node arkiv peers (default: arkiv's own, two per core"
        " up to 4)",
    )
    p.add_argument(
        "--node-workers",
        type=_positive,
        default=None,
        metavar="N",
        help="DICOM processes of each node of scaleout-2nodes (default: half of the one-node"
        " peers', at least 1, so both variants run the same number of DICOM processes)",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the temporary directories (server data, logs)"
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON to PATH")
    p.add_argument(
        "--arkiv-bin",
        type=Path,
        default=default_arkiv,
        help="arkiv executable (default: the one next to this Python)",
    )
    p.add_argument(
        "--orthanc-nagle",
        action="store_true",
        help="do not set TCP_NODELAY=1 for Orthanc (stock Debian behaviour: Nagle on, which"
        " stalls each C-STORE response ~40 ms)",
    )
    p.add_argument(
        "--orthanc-bin",
        type=Path,
        default=Path("/usr/sbin/Orthanc"),
        help="Orthanc executable (default /usr/sbin/Orthanc)",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=ds.default_cache_root(),
        help="where generated data sets are cached (default %(default)s)",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="generate the data set into the temporary directory instead",
    )
    p.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="parent of the temporary directory (default: system temp dir)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="seconds one load may take before it is aborted (default 1800)",
    )
    p.add_argument(
        "--startup-timeout",
        type=float,
        default=90.0,
        help="seconds a server may take to answer C-ECHO (default 90)",
    )
    args = p.parse_args(argv)
    if args.intraoral + args.panoramic == 0:
        p.error("nothing to send: --intraoral and --panoramic are both 0")
    return args


# --------------------------------------------------------------------------------------------
# Machine description


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib: float | None = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024**2, 1)
    load: list[float] | None = None
    with contextlib.suppress(OSError):
        load = [round(x, 2) for x in os.getloadavg()]
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "mem_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": load,
    }


def project_revision() -> str:
    """The commit checked out in this work tree, read from .git without running git.

    Uncommitted changes are not reflected; the archive may be ahead of this commit.
    """
    git = Path(__file__).resolve().parent.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).is_file():
            return f"{(git / ref).read_text().strip()} ({ref})"
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return f"{line.split()[0]} ({ref})"
    except OSError:
        pass
    return "unknown"


def tool_versions() -> dict[str, str]:
    import pydicom
    import pynetdicom

    return {
        "arkiv_commit": project_revision(),
        "storescu": version_line(["storescu", "--version"]),
        "pydicom": pydicom.__version__,
        "pynetdicom": pynetdicom.__version__,
    }


# --------------------------------------------------------------------------------------------
# Running


def prime_page_cache(dataset: ds.BenchDataset) -> None:
    """Read every file once so the first measured run does not pay for cold reads."""
    for f in dataset.files:
        with dataset.abspath(f).open("rb") as fh:
            while fh.read(1 << 20):
                pass


def wait_for_count(peer: Peer, expected: int, settle: float) -> tuple[int | None, str, float]:
    """Stored-instance count; polls up to ``settle`` seconds while it is below ``expected``."""
    start = time.monotonic()
    while True:
        # Waited: until the count that is returned began (counting itself takes a while when it
        # asks a database and an S3 server).
        waited = time.monotonic() - start
        count, how = peer.count_instances()
        if count is None or count >= expected or waited >= settle:
            return count, how, waited
        time.sleep(0.1)


def run_one(
    peer: Peer,
    assoc: int,
    rep: int,
    dataset: ds.BenchDataset,
    groups: list[list[Path]],
    profile: tuple[Path, str],
    workdir: Path,
    args: argparse.Namespace,
) -> RunResult:
    n = len(dataset.files)
    res = RunResult(
        server=peer.name, associations=assoc, repetition=rep, ok=False, instances=n,
        bytes=dataset.total_bytes,
    )  # fmt: skip
    run_dir = workdir / f"{peer.name}-a{assoc}-r{rep}"
    with contextlib.suppress(OSError):
        res.loadavg_1m_before = round(os.getloadavg()[0], 2)
    try:
        peer.start(run_dir)
        res.startup_s = round(peer.startup_s, 3)
        cpu0 = peer.cpu_seconds()
        backend0 = peer.backend_cpu_seconds()
        load = run_storescu(groups, peer.aet, peer.dicom_ports, profile, run_dir / "client",
                            args.timeout)  # fmt: skip
        cpu1 = peer.cpu_seconds()
        backend1 = peer.backend_cpu_seconds()
        res.associations_per_node = [load.ports.count(port) for port in peer.dicom_ports]
        res.wall_s = round(load.wall_s, 4)
        res.client_cpu_s = round(load.client_cpu_s, 3)
        res.server_cpu_s = round(cpu1 - cpu0, 3)
        if backend0 is not None and backend1 is not None:
            res.backend_cpu_s = {k: round(backend1[k] - backend0[k], 3) for k in backend1}
        if not load.ok:
            res.error = load.error or f"storescu exit codes {load.exit_codes}"
            if not peer.alive():
                res.error += f"\nserver died; log tail:\n{peer.log_tail()}"
            return res
        res.instances_per_s = round(n / load.wall_s, 3)
        res.mb_per_s = round(dataset.total_bytes / load.wall_s / 1e6, 3)
        count, how, waited = wait_for_count(peer, n, settle=10.0)
        res.stored, res.stored_how, res.settle_s = count, how, round(waited, 2)
        if count is None:
            res.stored_check = f"skipped ({how})"
        elif count == n:
            res.stored_check = "ok" if waited < 0.05 else f"ok after {waited:.1f} s"
        else:
            res.stored_check = f"MISMATCH: {count} stored, {n} sent ({how})"
            res.error = res.stored_check
            return res
        if not peer.alive():
            res.error = f"server exited during the run; log tail:\n{peer.log_tail()}"
            return res
        res.ok = True
        return res
    except (PeerError, ServerUnavailable) as exc:
        res.error = str(exc)
        return res
    finally:
        try:
            peer.stop()
        except Exception as exc:  # e.g. the database could not be dropped: say so, go on
            res.ok = False
            res.error = f"{res.error or ''}\ncleaning up failed: {exc}".strip()
        if not args.keep and run_dir.exists():
            if res.error:
                # Keep the evidence of a failed run in the console before it is deleted.
                tail = peer.log_tail(15)
                if tail and "log tail" not in (res.error or ""):
                    res.error = f"{res.error}\nserver log tail:\n{tail}"
            shutil.rmtree(run_dir, ignore_errors=True)
        # Start the next run with no dirty pages of this one still being written back.
        os.sync()


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def summarize(runs: list[RunResult]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Medians per (peer, associations), and each peer's ratios.

    The ratios are, per association count, the peer's median inst/s over the embedded peer's
    and over Orthanc's (``vs_embedded``, ``vs_orthanc``) and over its own at the smallest
    association count (``vs_fewest_associations``: how it scales).
    """
    peer_order = list(dict.fromkeys(r.server for r in runs))
    keys = sorted({(r.server, r.associations) for r in runs},
                  key=lambda k: (k[1], peer_order.index(k[0])))  # fmt: skip
    rows: list[dict[str, Any]] = []
    for server, assoc in keys:
        mine = [r for r in runs if r.server == server and r.associations == assoc]
        good = [r for r in mine if r.ok]
        ips = [r.instances_per_s for r in good if r.instances_per_s is not None]
        mbs = [r.mb_per_s for r in good if r.mb_per_s is not None]
        walls = [r.wall_s for r in good if r.wall_s is not None]
        cpu_ms = [1000.0 * r.server_cpu_s / r.instances for r in good if r.server_cpu_s is not None]
        backend_ms: dict[str, list[float]] = {}
        for r in good:
            for part, seconds in (r.backend_cpu_s or {}).items():
                backend_ms.setdefault(part, []).append(1000.0 * seconds / r.instances)
        cli_ms = [1000.0 * r.client_cpu_s / r.instances for r in good if r.client_cpu_s is not None]
        rows.append(
            {
                "server": server,
                "associations": assoc,
                "runs": len(mine),
                "runs_ok": len(good),
                "median_instances_per_s": _median(ips),
                "median_mb_per_s": _median(mbs),
                "median_wall_s": _median(walls),
                "median_server_cpu_ms_per_instance": _median(cpu_ms),
                "median_backend_cpu_ms_per_instance": {
                    part: _median(values) for part, values in backend_ms.items()
                },
                "median_client_cpu_ms_per_instance": _median(cli_ms),
                "instances_per_s_runs": ips,
            }
        )
    median = {(row["server"], row["associations"]): row["median_instances_per_s"] for row in rows}
    assocs = sorted({r.associations for r in runs})
    ratios: dict[str, Any] = {}
    for server in peer_order:
        per: dict[str, dict[str, float | None]] = {}
        for assoc in assocs:
            if (server, assoc) not in median:
                continue
            mine = median[(server, assoc)]
            entry: dict[str, float | None] = {}
            for ref in REFERENCES:
                if ref != server and (ref, assoc) in median:
                    entry[f"vs_{ref}"] = _ratio(mine, median[(ref, assoc)])
            if assoc != assocs[0] and (server, assocs[0]) in median:
                entry["vs_fewest_associations"] = _ratio(mine, median[(server, assocs[0])])
            per[str(assoc)] = entry
        ratios[server] = per
    return rows, ratios


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _times(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def print_tables(rows: list[dict[str, Any]], ratios: dict[str, Any]) -> None:
    t = Table(title="C-STORE ingest (medians over repetitions)")
    for col, just in [
        ("server", "left"), ("assoc", "right"), ("ok/runs", "right"), ("inst/s", "right"),
        ("MB/s", "right"), ("wall s", "right"), ("srv CPU ms/inst", "right"),
        ("PG CPU ms/inst", "right"), ("MinIO CPU ms/inst", "right"), ("scu CPU ms/inst", "right"),
        ("runs (inst/s)", "left"),
    ]:  # fmt: skip
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for row in rows:
        t.add_row(
            row["server"],
            str(row["associations"]),
            f"{row['runs_ok']}/{row['runs']}",
            _fmt(row["median_instances_per_s"]),
            _fmt(row["median_mb_per_s"]),
            _fmt(row["median_wall_s"], 2),
            _fmt(row["median_server_cpu_ms_per_instance"]),
            _fmt(row["median_backend_cpu_ms_per_instance"].get("postgresql")),
            _fmt(row["median_backend_cpu_ms_per_instance"].get("minio")),
            _fmt(row["median_client_cpu_ms_per_instance"]),
            ", ".join(f"{v:.1f}" for v in row["instances_per_s_runs"]),
        )
    console.print(t)

    servers = list(ratios)
    assocs = sorted({row["associations"] for row in rows})
    median = {(row["server"], row["associations"]): row["median_instances_per_s"] for row in rows}
    side = Table(title="Side by side: median inst/s (× own inst/s at the fewest associations)")
    side.add_column("assoc", justify="right")
    for server in servers:
        side.add_column(server, justify="right")
    for assoc in assocs:
        cells = []
        for server in servers:
            value = median.get((server, assoc))
            scale = ratios[server].get(str(assoc), {}).get("vs_fewest_associations")
            cells.append(_fmt(value) + ("" if scale is None else f" ({scale:.2f}×)"))
        side.add_row(str(assoc), *cells)
    console.print(side)

    pairs = [
        (server, ref)
        for ref in REFERENCES
        if ref in servers
        for server in servers
        if server != ref and not (ref == EMBEDDED and server == ORTHANC)
    ]
    if pairs:
        r = Table(title="Ratios of median inst/s")
        r.add_column("assoc", justify="right")
        for server, ref in pairs:
            r.add_column(f"{server} / {'Orthanc' if ref == ORTHANC else ref}", justify="right")
        for assoc in assocs:
            r.add_row(
                str(assoc),
                *(_times(ratios[s].get(str(assoc), {}).get(f"vs_{ref}")) for s, ref in pairs),
            )
        console.print(r)


def select_peers(
    args: argparse.Namespace, backend: ScaleoutBackend
) -> tuple[list[Peer], list[str], str | None]:
    """The peers to run, notes on the ones left out, and an error that stops the benchmark."""
    explicit = args.peers is not None
    wanted = list(args.peers) if explicit else list(PEER_NAMES)
    notes: list[str] = []
    if args.skip_arkiv:
        wanted = [n for n in wanted if n not in ARKIV_PEERS]
        notes.append("arkiv skipped (--skip-arkiv)")
    if args.skip_orthanc and ORTHANC in wanted:
        wanted.remove(ORTHANC)
        notes.append("Orthanc skipped (--skip-orthanc)")
    if any(n in ARKIV_PEERS for n in wanted) and not args.arkiv_bin.exists():
        return (
            [],
            notes,
            (
                f"{args.arkiv_bin} not found (install the project: .venv/bin/pip install -e . "
                "--no-deps), or pass --peers orthanc"
            ),
        )
    if any(n in SCALEOUT_PEERS for n in wanted):
        missing = backend.missing()
        if missing is not None:
            if explicit:
                return [], notes, f"the scale-out peers need PostgreSQL and MinIO: {missing}"
            wanted = [n for n in wanted if n not in SCALEOUT_PEERS]
            notes.append(f"scale-out peers skipped: {missing}")
    if ORTHANC in wanted and not args.orthanc_bin.exists():
        if explicit:
            return [], notes, f"{args.orthanc_bin} not found"
        wanted.remove(ORTHANC)
        notes.append(f"Orthanc skipped ({args.orthanc_bin} not found)")

    one_node = Settings(dicom_workers=args.dicom_workers or 0).dicom_process_count
    per_node = args.node_workers or max(1, one_node // 2)
    peers: list[Peer] = []
    for name in wanted:
        if name == EMBEDDED:
            peers.append(ArkivPeer(args.arkiv_bin, args.startup_timeout, name=EMBEDDED,
                                   dicom_workers=args.dicom_workers))  # fmt: skip
        elif name == SCALEOUT:
            peers.append(ScaleoutPeer(args.arkiv_bin, backend, args.startup_timeout,
                                      name=SCALEOUT, dicom_workers=args.dicom_workers))  # fmt: skip
        elif name == SCALEOUT_2NODES:
            peers.append(ScaleoutPeer(args.arkiv_bin, backend, args.startup_timeout,
                                      name=SCALEOUT_2NODES, nodes=2,
                                      dicom_workers=per_node))  # fmt: skip
        else:
            peers.append(OrthancPeer(args.orthanc_bin, args.startup_timeout, args.orthanc_nagle))
    return peers, notes, None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("storescu", "echoscu"):
        if shutil.which(tool) is None:
            console.print(f"[red]{tool} (DCMTK) not found on PATH[/red]")
            return 2

    backend = ScaleoutBackend()
    peers, notes, error = select_peers(args, backend)
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]")
    if error is not None:
        console.print(f"[red]{error}[/red]")
        return 2
    if not peers:
        console.print("[red]no server to benchmark[/red]")
        return 2

    if args.tmp_dir is not None:
        args.tmp_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="arkiv-bench-", dir=args.tmp_dir))
    runs: list[RunResult] = []
    exit_code = 0
    started = dt.datetime.now().astimezone()
    machine = machine_info()  # before the runs, so the load average is the background's
    try:
        if any(isinstance(p, ScaleoutPeer) for p in peers):
            with console.status("starting PostgreSQL and MinIO"):
                t0 = time.monotonic()
                try:
                    backend.start()
                except ServerUnavailable as exc:
                    console.print(f"[red]the scale-out servers did not start: {exc}[/red]")
                    return 2
            assert backend.postgres is not None and backend.minio is not None
            console.print(
                f"PostgreSQL on {backend.postgres.port}, MinIO on {backend.minio.endpoint}, "
                f"started in {time.monotonic() - t0:.1f} s"
            )
        spec = ds.DatasetSpec(args.intraoral, args.panoramic, args.patients, args.seed)
        with Progress(
            TextColumn("generating data set"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), console=console, transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task("gen", total=spec.intraoral + spec.panoramic)

            def tick(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            if args.no_cache:
                dataset = ds.generate(spec, workdir / "dataset", tick)
                reused = False
            else:
                dataset, reused = ds.ensure(spec, args.cache_dir, tick)
        info = dataset.summary()
        console.print(
            f"data set: {info['instances']} instances ({info['intraoral']} IO, "
            f"{info['panoramic']} PX), {info['patients']} patients, {info['studies']} studies, "
            f"{info['series']} series, {dataset.total_bytes / 1e6:.1f} MB "
            f"{'(cached)' if reused else '(generated)'} in {dataset.root}"
        )
        console.print("peers: " + ", ".join(p.name for p in peers))
        prime_page_cache(dataset)
        profile = write_storescu_profile(workdir / "storescu-profile.cfg", dataset.sop_classes)
        sized = [(dataset.abspath(f), f.size) for f in dataset.files]
        groups = {a: split(sized, a) for a in args.associations}
        total_runs = args.repeat * len(args.associations) * len(peers)
        width = max(len(p.name) for p in peers)
        broken: dict[str, str] = {}
        i = 0
        for rep in range(1, args.repeat + 1):
            for assoc in args.associations:
                # Alternate the server order between repetitions to spread drift on a noisy host.
                order = peers if rep % 2 else list(reversed(peers))
                for peer in order:
                    i += 1
                    if peer.name in broken:
                        continue
                    label = f"[{i}/{total_runs}] {peer.name:{width}} assoc={assoc} rep={rep}"
                    with console.status(f"{label} running"):
                        res = run_one(peer, assoc, rep, dataset, groups[assoc], profile,
                                      workdir, args)  # fmt: skip
                    runs.append(res)
                    if res.ok:
                        backend_cpu = (
                            "" if res.backend_cpu_s is None
                            else f", PostgreSQL CPU {res.backend_cpu_s['postgresql']:.1f} s"
                            f", MinIO CPU {res.backend_cpu_s['minio']:.1f} s"
                        )  # fmt: skip
                        console.print(
                            f"{label}: {res.wall_s:.2f} s, {res.instances_per_s:.1f} inst/s, "
                            f"{res.mb_per_s:.1f} MB/s, server CPU {res.server_cpu_s:.1f} s"
                            f"{backend_cpu}, stored {res.stored_check}"
                        )
                    else:
                        console.print(f"[red]{label}: FAILED[/red]\n{res.error}")
                        if res.wall_s is None:  # could not even start: stop trying this one
                            broken[peer.name] = res.error or "failed"
        rows, ratios = summarize(runs)
        print_tables(rows, ratios)
        if any(not r.ok for r in runs):
            exit_code = 1
        if args.json:
            embedded_vs_orthanc = {
                assoc: entry.get(f"vs_{ORTHANC}")
                for assoc, entry in ratios.get(EMBEDDED, {}).items()
                if f"vs_{ORTHANC}" in entry
            }
            doc = {
                "benchmark": "arkiv ingest (C-STORE)",
                "date": started.isoformat(timespec="seconds"),
                "command": " ".join(["python -m bench.ingest", *(argv or sys.argv[1:])]),
                "machine": machine,
                "versions": tool_versions(),
                "servers": {p.name: p.describe() for p in peers},
                "notes": notes,
                "dataset": info,
                "settings": {
                    "repeat": args.repeat,
                    "associations": args.associations,
                    "peers": [p.name for p in peers],
                    "storescu": "one presentation context per SOP class, Explicit VR LE only; "
                    "TCP_NODELAY=1; one process per association; with several nodes "
                    "association i goes to node i mod nodes",
                    "fresh_data_dir_per_run": True,
                    "fresh_database_and_bucket_per_run": True,
                },
                "runs": [asdict(r) for r in runs],
                "summary": rows,
                "ratios_instances_per_s": ratios,
                "ratio_arkiv_over_orthanc_instances_per_s": embedded_vs_orthanc,
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            console.print(f"results written to {args.json}")
    except KeyboardInterrupt as exc:
        console.print(f"[yellow]interrupted ({str(exc) or 'Ctrl-C'}); cleaning up[/yellow]")
        exit_code = 130
    finally:
        stop_all()
        backend.stop()
        if args.keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    with terminate_as_interrupt():
        sys.exit(main())
