"""`arkiv cluster` as the operator runs it: the shipped deployment planned and its blade
failures priced; a small pool (the XAPI simulator, through the real XenAPI client) planned,
applied after a dry run, and left alone when applied again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from arkiv.cli import main
from hypervisor.xapi_pool import connect, read_pool
from hypervisor.xapi_sim import HostSpec, TemplateSpec, XapiSimulator

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
