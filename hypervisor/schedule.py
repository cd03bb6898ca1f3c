"""The nightly rolling restart as systemd timers on the operator's management VM.

cluster.toml lists the schedules (`[[restart_schedule]]`: a name, the roles in order, and a
systemd `OnCalendar` expression). `arkiv cluster schedule --write DIR` turns each into a
oneshot service that runs `arkiv cluster restart … --yes` and a timer that starts it. systemd
rather than a loop of our own: it survives reboots of the management VM, logs to the journal,
never starts a run while the last one still goes on, and `systemctl list-timers` shows the
next run.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class ScheduleError(ValueError):
    """A `[[restart_schedule]]` entry is wrong; the message names the key."""


@dataclass(frozen=True)
class RestartSchedule:
    name: str
    roles: tuple[str, ...]
    on_calendar: str
    """systemd calendar expression, e.g. "*-*-* 02:30:00" (nightly at 02:30 local time)."""


def schedules_from(doc: Mapping[str, Any], roles: Sequence[str]) -> tuple[RestartSchedule, ...]:
    """The `[[restart_schedule]]` entries of a parsed cluster.toml."""
    schedules: list[RestartSchedule] = []
    for index, table in enumerate(doc.get("restart_schedule", [])):
        where = f"restart_schedule[{index}]"
        name, listed, when = table.get("name"), table.get("roles"), table.get("on_calendar")
        if not isinstance(name, str) or not name.replace("-", "").isalnum():
            raise ScheduleError(f"{where}.name: letters, digits and dashes, got {name!r}")
        if not isinstance(listed, list) or not listed or not all(r in roles for r in listed):
            raise ScheduleError(f"{where}.roles: a list of roles of this file, got {listed!r}")
        if not isinstance(when, str) or not when.strip():
            raise ScheduleError(f"{where}.on_calendar: a systemd calendar expression")
        schedules.append(RestartSchedule(name, tuple(listed), when.strip()))
    if len({s.name for s in schedules}) != len(schedules):
        raise ScheduleError("restart_schedule: names must be unique")
    return tuple(schedules)


def systemd_units(schedule: RestartSchedule, command: Sequence[str]) -> dict[str, str]:
    """File name → text of the service and the timer for `schedule`; `command` is the
    `arkiv cluster restart` argv without the roles and --yes."""
    unit = f"arkiv-restart-{schedule.name}"
    argv = [*command, *(arg for role in schedule.roles for arg in ("--role", role)), "--yes"]
    service = f"""[Unit]
Description=arkiv rolling restart {schedule.name} ({", ".join(schedule.roles)})
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart={shlex.join(argv)}
"""
    timer = f"""[Unit]
Description=arkiv rolling restart {schedule.name}: {schedule.on_calendar}

[Timer]
OnCalendar={schedule.on_calendar}
Persistent=false
Unit={unit}.service

[Install]
WantedBy=timers.target
"""
    return {f"{unit}.service": service, f"{unit}.timer": timer}
