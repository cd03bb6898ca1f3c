"""C-STORE ingest benchmark: arkiv versus Orthanc.

Run from the project root::

    .venv/bin/python -m bench.ingest          # 200 IO + 20 PX, 3 reps, 1 and 4 assocs
    .venv/bin/python -m bench.ingest --intraoral 50 --panoramic 5 --repeat 1 --skip-orthanc

For each server, association count and repetition the server is started on free ports on
127.0.0.1 with a fresh, empty data directory, the whole synthetic data set is sent with DCMTK
storescu (one process per association, in parallel), and the wall time from the first storescu
start to the last storescu exit is measured.  The number of stored instances is then checked.
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

# Piped output (e.g. tee to a log) gets a width that fits the tables instead of 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)


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
    client_cpu_s: float | None = None
    startup_s: float | None = None
    stored: int | None = None
    stored_check: str = ""
    settle_s: float = 0.0
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
        description="C-STORE ingest benchmark of arkiv against Orthanc (DCMTK storescu load).",
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
        default=[1, 4],
        metavar="LIST",
        help='parallel associations to measure, comma-separated (default "1,4")',
    )
    p.add_argument("--skip-orthanc", action="store_true", help="do not run Orthanc")
    p.add_argument("--skip-arkiv", action="store_true", help="do not run arkiv")
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
        count, how = peer.count_instances()
        waited = time.monotonic() - start
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
        load = run_storescu(groups, peer.aet, peer.dicom_port, profile, run_dir / "client",
                            args.timeout)  # fmt: skip
        cpu1 = peer.cpu_seconds()
        res.wall_s = round(load.wall_s, 4)
        res.client_cpu_s = round(load.client_cpu_s, 3)
        res.server_cpu_s = round(cpu1 - cpu0, 3)
        if not load.ok:
            res.error = load.error or f"storescu exit codes {load.exit_codes}"
            if not peer.alive():
                res.error += f"\nserver died; log tail:\n{peer.log_tail()}"
            return res
        res.instances_per_s = round(n / load.wall_s, 3)
        res.mb_per_s = round(dataset.total_bytes / load.wall_s / 1e6, 3)
        count, how, waited = wait_for_count(peer, n, settle=10.0)
        res.stored, res.settle_s = count, round(waited, 2)
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
    except PeerError as exc:
        res.error = str(exc)
        return res
    finally:
        peer.stop()
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


def summarize(runs: list[RunResult]) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    keys = sorted({(r.server, r.associations) for r in runs}, key=lambda k: (k[1], k[0]))
    rows: list[dict[str, Any]] = []
    for server, assoc in keys:
        mine = [r for r in runs if r.server == server and r.associations == assoc]
        good = [r for r in mine if r.ok]
        ips = [r.instances_per_s for r in good if r.instances_per_s is not None]
        mbs = [r.mb_per_s for r in good if r.mb_per_s is not None]
        walls = [r.wall_s for r in good if r.wall_s is not None]
        cpu_ms = [1000.0 * r.server_cpu_s / r.instances for r in good if r.server_cpu_s is not None]
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
                "median_client_cpu_ms_per_instance": _median(cli_ms),
                "instances_per_s_runs": ips,
            }
        )
    ratios: dict[str, float | None] = {}
    for assoc in sorted({r.associations for r in runs}):
        by = {row["server"]: row for row in rows if row["associations"] == assoc}
        a = by.get("arkiv", {}).get("median_instances_per_s")
        o = by.get("orthanc", {}).get("median_instances_per_s")
        if "arkiv" in by and "orthanc" in by:
            ratios[str(assoc)] = round(a / o, 3) if a and o else None
    return rows, ratios


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def print_tables(rows: list[dict[str, Any]], ratios: dict[str, float | None]) -> None:
    t = Table(title="C-STORE ingest (medians over repetitions)")
    for col, just in [
        ("server", "left"), ("assoc", "right"), ("ok/runs", "right"), ("inst/s", "right"),
        ("MB/s", "right"), ("wall s", "right"), ("srv CPU ms/inst", "right"),
        ("scu CPU ms/inst", "right"), ("runs (inst/s)", "left"),
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
            _fmt(row["median_client_cpu_ms_per_instance"]),
            ", ".join(f"{v:.1f}" for v in row["instances_per_s_runs"]),
        )
    console.print(t)
    if ratios:
        r = Table(title="arkiv / Orthanc")
        for col in ("assoc", "arkiv inst/s", "Orthanc inst/s", "ratio"):
            r.add_column(col, justify="right")
        by = {(row["server"], row["associations"]): row for row in rows}
        for assoc, ratio in ratios.items():
            a = by[("arkiv", int(assoc))]["median_instances_per_s"]
            o = by[("orthanc", int(assoc))]["median_instances_per_s"]
            r.add_row(assoc, _fmt(a), _fmt(o), "–" if ratio is None else f"{ratio:.2f}×")
        console.print(r)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("storescu", "echoscu"):
        if shutil.which(tool) is None:
            console.print(f"[red]{tool} (DCMTK) not found on PATH[/red]")
            return 2

    peers: list[Peer] = []
    notes: list[str] = []
    if not args.skip_arkiv:
        if not args.arkiv_bin.exists():
            console.print(
                f"[red]{args.arkiv_bin} not found[/red] (install the project: "
                ".venv/bin/pip install -e . --no-deps), or pass --skip-arkiv"
            )
            return 2
        peers.append(ArkivPeer(args.arkiv_bin, args.startup_timeout))
    if args.skip_orthanc:
        notes.append("Orthanc skipped (--skip-orthanc)")
    elif not args.orthanc_bin.exists():
        notes.append(f"Orthanc skipped ({args.orthanc_bin} not found)")
    else:
        peers.append(OrthancPeer(args.orthanc_bin, args.startup_timeout, args.orthanc_nagle))
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]")
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
        prime_page_cache(dataset)
        profile = write_storescu_profile(workdir / "storescu-profile.cfg", dataset.sop_classes)
        sized = [(dataset.abspath(f), f.size) for f in dataset.files]
        groups = {a: split(sized, a) for a in args.associations}
        total_runs = args.repeat * len(args.associations) * len(peers)
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
                    label = f"[{i}/{total_runs}] {peer.name:8} assoc={assoc} rep={rep}"
                    with console.status(f"{label} running"):
                        res = run_one(peer, assoc, rep, dataset, groups[assoc], profile,
                                      workdir, args)  # fmt: skip
                    runs.append(res)
                    if res.ok:
                        console.print(
                            f"{label}: {res.wall_s:.2f} s, {res.instances_per_s:.1f} inst/s, "
                            f"{res.mb_per_s:.1f} MB/s, server CPU {res.server_cpu_s:.1f} s, "
                            f"stored {res.stored_check}"
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
                    "storescu": "one presentation context per SOP class, Explicit VR LE only; "
                    "TCP_NODELAY=1; one process per association",
                    "fresh_data_dir_per_run": True,
                },
                "runs": [asdict(r) for r in runs],
                "summary": rows,
                "ratio_arkiv_over_orthanc_instances_per_s": ratios,
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
            console.print(f"results written to {args.json}")
    except KeyboardInterrupt as exc:
        console.print(f"[yellow]interrupted ({str(exc) or 'Ctrl-C'}); cleaning up[/yellow]")
        exit_code = 130
    finally:
        stop_all()
        if args.keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    with terminate_as_interrupt():
        sys.exit(main())
