"""Association set-up cost: many short associations (one C-ECHO each), arkiv versus Orthanc.

Many dental modalities open a new association for every image, so the fixed cost of accepting an
association matters as much as the cost of storing an instance.  Run from the project root::

    .venv/bin/python -m bench.assoc               # 50 associations per server
    .venv/bin/python -m bench.assoc --count 20 --skip-orthanc

Reports the median round trip of one ``echoscu`` (connect, associate, C-ECHO, release; includes
starting the echoscu process) and the server CPU time per association.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.peers import (
    LOCALHOST,
    ArkivPeer,
    OrthancPeer,
    Peer,
    stop_all,
    terminate_as_interrupt,
)

console = Console(highlight=False)


def measure(peer: Peer, run_dir: Path, count: int) -> tuple[float, float]:
    """(median round trip in ms, server CPU ms per association)."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    peer.start(run_dir)
    try:
        times: list[float] = []
        cpu0 = peer.cpu_seconds()
        for _ in range(count):
            t = time.perf_counter()
            subprocess.run(
                ["echoscu", "-aec", peer.aet, LOCALHOST, str(peer.dicom_port)],
                check=True, env=env, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            times.append(time.perf_counter() - t)
        cpu = peer.cpu_seconds() - cpu0
        return 1000 * statistics.median(times), 1000 * cpu / count
    finally:
        peer.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.assoc", description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=50, help="associations per server (default 50)")
    p.add_argument("--skip-orthanc", action="store_true")
    p.add_argument("--skip-arkiv", action="store_true")
    p.add_argument("--arkiv-bin", type=Path, default=Path(sys.executable).parent / "arkiv")
    p.add_argument("--orthanc-bin", type=Path, default=Path("/usr/sbin/Orthanc"))
    args = p.parse_args(argv)
    peers: list[Peer] = []
    if not args.skip_arkiv:
        peers.append(ArkivPeer(args.arkiv_bin))
    if not args.skip_orthanc and args.orthanc_bin.exists():
        peers.append(OrthancPeer(args.orthanc_bin))
    workdir = Path(tempfile.mkdtemp(prefix="arkiv-bench-assoc-"))
    table = Table(title=f"association set-up ({args.count} C-ECHO associations)")
    for col in ("server", "median round trip ms", "server CPU ms/assoc"):
        table.add_column(col, justify="right" if col != "server" else "left")
    try:
        for peer in peers:
            rtt, cpu = measure(peer, workdir / peer.name, args.count)
            table.add_row(peer.name, f"{rtt:.1f}", f"{cpu:.1f}")
        console.print(table)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; cleaning up[/yellow]")
        return 130
    finally:
        stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    with terminate_as_interrupt():
        sys.exit(main())
