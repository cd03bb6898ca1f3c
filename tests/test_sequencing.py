"""The order of a placement's steps: each one possible at the moment it runs (a migrating VM
holds memory on both hosts), cycles broken by a detour, and a clear refusal when no order
exists."""

from __future__ import annotations

import random

import pytest

from hypervisor.sequencing import SequencingError, Step, sequence

GIB = 1 << 30


def replay(
    steps: list[Step],
    current: dict[str, str | None],
    need: dict[str, int],
    capacity: dict[str, int],
) -> dict[str, str | None]:
    """Run the steps one by one, asserting each fits when it starts; the end state."""
    where = dict(current)
    for step in steps:
        used = {h: sum(need[v] for v, at in where.items() if at == h) for h in capacity}
        if step.kind in ("migrate", "start"):
            assert used[step.host] + need[step.vm] <= capacity[step.host], step.describe()
            assert (step.kind == "migrate") == (where[step.vm] is not None), step.describe()
            where[step.vm] = step.host
        else:
            assert where[step.vm] == step.host
            where[step.vm] = None
    return where


def test_a_migration_waits_until_its_destination_has_room() -> None:
    capacity = {"a": 8 * GIB, "b": 8 * GIB}
    need = {"big": 6 * GIB, "small": 4 * GIB}
    current: dict[str, str | None] = {"big": "a", "small": "b"}
    target: dict[str, str | None] = {"big": "b", "small": "a"}
    # a swap with 2 GiB free on a and 4 GiB on b: neither fits first, and there is no third host
    with pytest.raises(SequencingError, match=r"big .*small"):
        sequence(current, target, need, capacity)


def test_a_cycle_takes_a_detour_through_a_host_with_room() -> None:
    capacity = {"a": 8 * GIB, "b": 8 * GIB, "c": 8 * GIB}
    need = {"x": 6 * GIB, "y": 6 * GIB}
    current: dict[str, str | None] = {"x": "a", "y": "b"}
    target: dict[str, str | None] = {"x": "b", "y": "a"}
    steps = sequence(current, target, need, capacity)
    assert any(step.detour for step in steps)
    assert replay(steps, current, need, capacity) == target


def test_shutdowns_come_first_and_free_room() -> None:
    capacity = {"a": 8 * GIB, "b": 8 * GIB}
    need = {"old": 6 * GIB, "new": 6 * GIB}
    current: dict[str, str | None] = {"old": "a", "new": None}
    target: dict[str, str | None] = {"old": None, "new": "a"}
    steps = sequence(current, target, need, capacity)
    assert [s.kind for s in steps] == ["shutdown", "start"]
    assert replay(steps, current, need, capacity) == target


def test_nothing_to_do_gives_no_steps() -> None:
    current: dict[str, str | None] = {"x": "a"}
    assert sequence(current, dict(current), {"x": GIB}, {"a": 2 * GIB}) == []


def test_the_same_input_gives_the_same_plan() -> None:
    capacity = {h: 10 * GIB for h in "abcd"}
    need = {f"vm{i}": (1 + i % 3) * GIB for i in range(10)}
    current: dict[str, str | None] = {vm: "abcd"[i % 4] for i, vm in enumerate(need)}
    target: dict[str, str | None] = {vm: "abcd"[(i + 1) % 4] for i, vm in enumerate(need)}
    assert sequence(current, target, need, capacity) == sequence(current, target, need, capacity)


def fits(state: dict[str, str | None], need: dict[str, int], capacity: dict[str, int]) -> bool:
    return all(
        sum(need[v] for v, h in state.items() if h == host) <= room
        for host, room in capacity.items()
    )


@pytest.mark.parametrize("seed", range(200))
def test_every_step_of_random_replans_fits_when_it_runs(seed: int) -> None:
    """Random pools where the target fits: the plan reaches it with every step feasible, or
    says it cannot (only when no host has slack to break a cycle)."""
    rng = random.Random(seed)
    while True:
        hosts = [f"h{i}" for i in range(rng.randint(2, 4))]
        capacity = {h: rng.randint(8, 16) * GIB for h in hosts}
        need: dict[str, int] = {}
        current: dict[str, str | None] = {}
        target: dict[str, str | None] = {}
        for i in range(rng.randint(1, 8)):
            vm = f"vm{i}"
            need[vm] = rng.randint(1, 6) * GIB
            current[vm] = rng.choice([*hosts, None])
            target[vm] = rng.choice([*hosts, None])
        if fits(current, need, capacity) and fits(target, need, capacity):
            break
    try:
        steps = sequence(current, target, need, capacity)
    except SequencingError as error:
        assert "detour" in str(error)
        return
    assert replay(steps, current, need, capacity) == target
