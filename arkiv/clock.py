"""Time as the archive records it: UTC ISO 8601 with microseconds, so strings sort in time order."""

from datetime import UTC, datetime, timedelta


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_iso() -> str:
    return iso(utc_now())


def iso_in(delta: timedelta) -> str:
    return iso(utc_now() + delta)
