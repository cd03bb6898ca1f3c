"""`python -m hypervisor.xapi_sim`: a demo pool on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import threading
import time

from hypervisor.xapi_sim.objects import GiB
from hypervisor.xapi_sim.simulator import DEMO_TEMPLATES, XapiSimulator, demo_hosts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hypervisor.xapi_sim", description=__doc__)
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--host-memory-gib", type=int, default=256)
    parser.add_argument("--cpus", type=int, default=32)
    parser.add_argument("--user", default="root")
    parser.add_argument("--password", default="xenroot")
    parser.add_argument("--placement", choices=("first", "seeded"), default="first")
    parser.add_argument(
        "--clock-speed",
        type=float,
        default=10.0,
        help="virtual seconds per real second, so that a demo's tasks finish by themselves "
        "(a 20 s VM start takes 2 s at 10); 0 stops the clock for sim.advance alone",
    )
    args = parser.parse_args(argv)
    sim = XapiSimulator(
        demo_hosts(args.hosts, args.host_memory_gib * GiB, args.cpus),
        DEMO_TEMPLATES,
        username=args.user,
        password=args.password,
        port=args.port,
        placement=args.placement,
    )
    print(f"XAPI simulator on {sim.url} (user {args.user}); Ctrl-C to stop", flush=True)
    if args.clock_speed > 0:
        print(f"virtual clock runs {args.clock_speed:g}× real time", flush=True)
        threading.Thread(
            target=_run_clock, args=(sim, args.clock_speed), name="clock", daemon=True
        ).start()
    else:
        print("virtual clock: call sim.advance(seconds) over XML-RPC (no session)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever()
    return 0


def _run_clock(sim: XapiSimulator, speed: float) -> None:
    """Advance the virtual clock with the wall clock, `speed` times faster."""
    last = time.monotonic()
    while True:
        time.sleep(0.1)
        now = time.monotonic()
        sim.advance((now - last) * speed)
        last = now


if __name__ == "__main__":
    raise SystemExit(main())
