"""`arkiv cluster` as the operator runs it: the shipped deployment planned and its blade
failures priced; a small pool (the XAPI simulator, through the real XenAPI client) planned,
applied after a dry run, and left alone when applied again; its web VMs restarted one by one;
the nightly restart written as systemd timers that systemd itself accepts."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from arkiv.cli import main
from hypervisor.guest_service import GuestServices, wait_for
from hypervisor.model import load_cluster
from hypervisor.xapi_pool import connect, read_pool
from hypervisor.xapi_sim import HostSpec, TemplateSpec, XapiSimulator
from tests.conftest import require_tool
from tests.guests import Guests

SHIPPED = Path(__file__).parent.parent / "hypervisor" / "cluster.toml"
GIB = 1 << 30

SMALL = """
headroom_gib = 2
repair_hours = 4
[downtime_nok_per_hour]
vestfold = 50000

[[host]]
name = "blade1"
memory_gib = 60
cpus = 16
[[host]]
name = "blade2"
memory_gib = 60
cpus = 16
[[host]]
name = "blade3"
memory_gib = 60
cpus = 16

[[role]]
name = "web"
template = "arkiv-web-1.0"
count = 2
memory_gib = 8
vcpus = 2
anti_affinity = "web"
restart = "restart"
restart_minutes = 2
counties = ["vestfold"]
drain = "web"
"""


@pytest.fixture
def sim() -> Iterator[XapiSimulator]:
    hosts = [HostSpec(f"blade{n}", memory=64 * GIB, cpus=16) for n in (1, 2, 3)]
    with XapiSimulator(hosts=hosts, templates=[TemplateSpec("arkiv-web-1.0", 8 * GIB, 2)]) as s:
        yield s


def test_the_shipped_deployment_plans_optimally_and_survives_each_blade(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["cluster", "plan", "--cluster", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert "placement optimal" in out and "N+1 verified" in out
    assert main(["cluster", "whatif", "--cluster", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert all(f"blade-{n}" in out for n in (1, 2, 3, 4))


def test_apply_is_a_dry_run_until_yes_then_converges(
    sim: XapiSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(SMALL)
    secret = tmp_path / "pool-password"
    secret.write_text(sim.password)
    pool = ["--cluster", str(config), "--pool", sim.url, "--user", sim.username]
    pool += ["--password-file", str(secret)]
    assert main(["cluster", "apply", *pool]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "start web-1 on" in out
    with connect(sim.url, sim.username, sim.password) as api:
        assert read_pool(api).vms == {}, "a dry run changes nothing"
    # Async tasks finish on the simulator's virtual clock: let it run as the CLI polls.
    sim.faults.set_duration("start_on", 0)
    sim.faults.set_duration("clone", 0)
    sim.faults.set_duration("provision", 0)
    assert main(["cluster", "apply", "--yes", *pool]) == 0, capsys.readouterr().out
    with connect(sim.url, sim.username, sim.password) as api:
        running = {
            n: vm.host for n, vm in read_pool(api).vms.items() if vm.power_state == "Running"
        }
    assert set(running) == {"web-1", "web-2"} and len(set(running.values())) == 2
    capsys.readouterr()
    assert main(["cluster", "apply", *pool]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_a_config_mistake_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text(SMALL.replace("memory_gib = 8", 'memory_gib = "lots"'))
    assert main(["cluster", "plan", "--cluster", str(config)]) == 2
    assert "memory_gib" in capsys.readouterr().err


def test_the_nightly_restart_is_written_as_systemd_timers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "cluster.toml"
    schedule = '[[restart_schedule]]\nname = "nightly"\nroles = ["web"]\n'
    config.write_text(SMALL + schedule + 'on_calendar = "*-*-* 02:30:00"\n')
    secret, token = tmp_path / "pool-password", tmp_path / "drain-token"
    secret.write_text("xenroot")
    token.write_text("token")
    units = tmp_path / "units"
    command = ["cluster", "schedule", "--cluster", str(config), "--write", str(units)]
    assert main(command) == 2, "unattended runs need the pool and the secrets' files"
    assert "--pool" in capsys.readouterr().out
    options = ["--pool", "https://xen1", "--password-file", str(secret)]
    assert main([*command, *options, "--drain-token-file", str(token)]) == 0
    service = (units / "arkiv-restart-nightly.service").read_text()
    timer = (units / "arkiv-restart-nightly.timer").read_text()
    assert "OnCalendar=*-*-* 02:30:00" in timer
    [exec_start] = [line for line in service.splitlines() if line.startswith("ExecStart=")]
    assert exec_start.startswith("ExecStart=arkiv cluster restart --cluster ")
    assert exec_start.endswith("--role web --yes") and str(secret) in exec_start
    assert "xenroot" not in service, "the password stays in its file"
    analyze = require_tool("systemd-analyze")
    (units / "arkiv").write_text("#!/bin/sh\n")  # verify wants ExecStart's program to exist
    (units / "arkiv").chmod(0o755)
    service_file = units / "arkiv-restart-nightly.service"
    service_file.write_text(service.replace("ExecStart=arkiv ", f"ExecStart={units}/arkiv "))
    verified = subprocess.run(
        [analyze, "verify", str(units / "arkiv-restart-nightly.timer"), str(service_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr

    config.write_text(SMALL + schedule + 'on_calendar = ""\n')
    assert main([*command, *options]) == 2
    assert "on_calendar" in capsys.readouterr().err


def test_a_rolling_restart_from_the_command_line(
    sim: XapiSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Guests(sim, tmp_path, ["web-1", "web-2"], "node-token") as guests:
        endpoints = "".join(f'"{vm}" = "{url}"\n' for vm, url in guests.endpoints.items())
        config = tmp_path / "cluster.toml"
        config.write_text(SMALL + "[endpoints]\n" + endpoints)
        secret = tmp_path / "pool-password"
        secret.write_text(sim.password)
        pool = ["--cluster", str(config), "--pool", sim.url, "--password-file", str(secret)]
        for operation in ("start_on", "clone", "provision", "clean_reboot"):
            sim.faults.set_duration(operation, 0)
        assert main(["cluster", "apply", "--yes", *pool]) == 0
        services = GuestServices(load_cluster(config), "node-token")
        for vm in ("web-1", "web-2"):
            assert wait_for(services.for_vm(vm, "web").ready, 60, poll=0.2).ok
        restart = ["cluster", "restart", "--role", "web", *pool, "--soak", "0"]
        assert main(restart) == 2, "a restart without the drain token cannot drain"
        tokens = ["--drain-token-file", str(tmp_path / "drain-token")]
        capsys.readouterr()
        assert main([*restart, *tokens]) == 0
        out = capsys.readouterr().out
        assert "dry run" in out and "restart web-1 on" in out and "restart web-2 on" in out
        assert guests.boots == {"web-1": 1, "web-2": 1}
        assert main([*restart, *tokens, "--yes"]) == 0, capsys.readouterr().out
        assert guests.boots == {"web-1": 2, "web-2": 2}
