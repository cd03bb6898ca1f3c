"""Recognise and validate Norwegian national IDs found in DICOM Patient ID.

Modalities and referral systems put all sorts of things in Patient ID: real
fødselsnummer, D-numbers for people without one, H-numbers assigned by
hospitals, synthetic test numbers, and plain local IDs such as ``PAT-0001``.
The archive must store every object it receives exactly as sent, so this
module never rejects or rewrites a value; it only classifies it so that ingest
can flag suspicious IDs for a human to fix at the source.

The rules follow Skatteetaten's description of the 2032 change: numbers issued
from 1 January 2032 (also to people born earlier) may carry one of up to four
first check digits, and the individual number no longer tells the century.
Both the classic and the 2032 rule are accepted side by side, because the
archive holds images spanning decades and will keep receiving both.

Sex is deliberately never derived: the 2032 rule drops that meaning, and the
archive has no business inferring it from an identifier anyway.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "CheckDigitRule",
    "NationalIdCheck",
    "NationalIdKind",
    "check_national_id",
    "is_valid_national_id",
    "make_national_id",
    "make_synthetic_national_id",
]

_LENGTH = 11
_ASCII_DIGITS = frozenset("0123456789")

_K1_WEIGHTS = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2_WEIGHTS = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)

# Under the 2032 rule K1 = (c - sum mod 11) mod 11 for c in 11..14, i.e. the
# weighted sum including K1 may leave any of these remainders mod 11.
_RULE_2032_REMAINDERS = frozenset({0, 1, 2, 3})

_D_NUMBER_DAY_OFFSET = 40
_H_NUMBER_MONTH_OFFSET = 40
_SYNTHETIC_MONTH_OFFSET = 80

# When the century cannot be read from the number, a day/month is accepted if
# it exists in at least one of these centuries (2000 is a leap year, 1900 not).
_CANDIDATE_CENTURIES = (1900, 2000)

_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


class NationalIdKind(StrEnum):
    """Which register a number belongs to, read from the offsets in its date part.

    Kept as strings so the value can be stored and shown without a lookup table.
    """

    FNR = "fnr"
    DNR = "dnr"
    HNR = "hnr"
    SYNTHETIC = "synthetic"


class CheckDigitRule(StrEnum):
    """The check-digit rule a valid number satisfied.

    Recorded because only classic-rule numbers let us derive the century of
    the birth date; a 2032-rule number must not be given a guessed birth year.
    """

    CLASSIC = "classic"
    RULE_2032 = "2032"


@dataclass(frozen=True)
class NationalIdCheck:
    """Outcome of classifying one Patient ID.

    ``value`` is the input untouched so the caller can store it verbatim;
    everything else is derived from it with surrounding whitespace stripped,
    since DICOM string values are routinely space-padded.
    """

    value: str
    looks_like_national_id: bool
    kind: NationalIdKind | None
    valid: bool
    rule: CheckDigitRule | None
    birth_date: datetime.date | None
    problem: str | None


def check_national_id(value: str) -> NationalIdCheck:
    """Classify ``value`` without ever raising, so ingest can always store the object.

    When a number has several faults only the first one is reported, in the
    order a person would fix them: shape, offsets, date, then check digits.
    A broken date is reported ahead of mismatching check digits because it
    pinpoints which digits to look at.
    """
    digits = value.strip()
    if len(digits) != _LENGTH or not set(digits) <= _ASCII_DIGITS:
        return _invalid(value, looks_like=False, kind=None, problem="not 11 digits")

    kind, day, month, offset_problem = _read_offsets(digits)
    if offset_problem is not None:
        return _invalid(value, looks_like=True, kind=kind, problem=offset_problem)
    assert kind is not None  # _read_offsets returns a kind whenever there is no problem

    range_problem = _day_month_range_problem(day, month, kind)
    if range_problem is not None:
        return _invalid(value, looks_like=True, kind=kind, problem=range_problem)

    yy = int(digits[4:6])
    individual = int(digits[6:9])
    rule = _satisfied_rule(digits)

    legacy_year = _legacy_birth_year(individual, yy)
    if rule is CheckDigitRule.CLASSIC and legacy_year is not None:
        candidate_years: tuple[int, ...] = (legacy_year,)
    else:
        # A 2032-rule number says nothing about its century. With mismatching
        # check digits we cannot trust the individual number either, so give
        # the date the benefit of the doubt and blame the check digits.
        candidate_years = tuple(century + yy for century in _CANDIDATE_CENTURIES)

    if not any(_is_date(year, month, day) for year in candidate_years):
        return _invalid(
            value,
            looks_like=True,
            kind=kind,
            problem=_calendar_problem(day, month, candidate_years),
        )

    if rule is None:
        return _invalid(
            value,
            looks_like=True,
            kind=kind,
            problem="check digits do not match (classic or 2032 rule)",
        )

    birth_date = (
        datetime.date(legacy_year, month, day)
        if rule is CheckDigitRule.CLASSIC and legacy_year is not None
        else None
    )
    return NationalIdCheck(
        value=value,
        looks_like_national_id=True,
        kind=kind,
        valid=True,
        rule=rule,
        birth_date=birth_date,
        problem=None,
    )


def is_valid_national_id(value: str) -> bool:
    """Shortcut for callers that only need a yes/no, e.g. query filters."""
    return check_national_id(value).valid


def make_national_id(
    birth: datetime.date,
    individual: int,
    kind: NationalIdKind = NationalIdKind.FNR,
) -> str:
    """Build a classic-rule number, so tests and benchmarks need no real people's IDs.

    Only numbers that could actually have been issued are produced: the
    individual number must place ``birth`` in the right century, and
    individual numbers whose check digit would be 10 raise ``ValueError`` so
    callers can simply try the next one.
    """
    if isinstance(individual, bool) or not 0 <= individual <= 999:
        raise ValueError(f"individual number must be 0-999, got {individual!r}")
    yy = birth.year % 100
    encoded_year = _legacy_birth_year(individual, yy)
    if encoded_year != birth.year:
        encoded = "no year" if encoded_year is None else str(encoded_year)
        raise ValueError(
            f"individual number {individual:03d} with year digits {yy:02d} encodes "
            f"{encoded}, not {birth.year}; pick an individual number from that century's range"
        )

    day = birth.day + (_D_NUMBER_DAY_OFFSET if kind is NationalIdKind.DNR else 0)
    month = birth.month
    if kind is NationalIdKind.HNR:
        month += _H_NUMBER_MONTH_OFFSET
    elif kind is NationalIdKind.SYNTHETIC:
        month += _SYNTHETIC_MONTH_OFFSET

    base = f"{day:02d}{month:02d}{yy:02d}{individual:03d}"
    k1 = _classic_check_digit(base, _K1_WEIGHTS)
    if k1 is None:
        raise ValueError(
            f"individual number {individual:03d} is not issuable for {birth.isoformat()}: "
            "first check digit would be 10; try another individual number"
        )
    k2 = _classic_check_digit(base + str(k1), _K2_WEIGHTS)
    if k2 is None:
        raise ValueError(
            f"individual number {individual:03d} is not issuable for {birth.isoformat()}: "
            "second check digit would be 10; try another individual number"
        )
    return f"{base}{k1}{k2}"


def make_synthetic_national_id(birth: datetime.date, individual: int) -> str:
    """Build a synthetic (month + 80) number, which can never collide with a real person."""
    return make_national_id(birth, individual, NationalIdKind.SYNTHETIC)


def _invalid(
    value: str, *, looks_like: bool, kind: NationalIdKind | None, problem: str
) -> NationalIdCheck:
    return NationalIdCheck(
        value=value,
        looks_like_national_id=looks_like,
        kind=kind,
        valid=False,
        rule=None,
        birth_date=None,
        problem=problem,
    )


def _read_offsets(digits: str) -> tuple[NationalIdKind | None, int, int, str | None]:
    """Split the date part into kind, plain day and plain month.

    The offsets are read from the leading digit of day and month (0-3 plain,
    4-7 D-number day; 0-1 plain, 4-5 H-number, 8-9 synthetic month), so that a
    typo such as day 72 is reported as a bad D-number day rather than as an
    unknown kind.
    """
    raw_day = int(digits[0:2])
    raw_month = int(digits[2:4])

    day_lead = raw_day // 10
    if day_lead <= 3:
        d_number = False
    elif day_lead <= 7:
        d_number = True
    else:
        return (
            None,
            raw_day,
            raw_month,
            (f"day {raw_day:02d} is neither a date nor a D-number day (41-71)"),
        )

    month_lead = raw_month // 10
    if month_lead <= 1:
        month_kind = NationalIdKind.FNR
        month_offset = 0
    elif month_lead in (4, 5):
        month_kind = NationalIdKind.HNR
        month_offset = _H_NUMBER_MONTH_OFFSET
    elif month_lead in (8, 9):
        month_kind = NationalIdKind.SYNTHETIC
        month_offset = _SYNTHETIC_MONTH_OFFSET
    else:
        return (
            None,
            raw_day,
            raw_month,
            (
                f"month {raw_month:02d} is neither a date nor an H-number (41-52) "
                "or synthetic (81-92) month"
            ),
        )

    day = raw_day - (_D_NUMBER_DAY_OFFSET if d_number else 0)
    month = raw_month - month_offset
    if d_number and month_kind is not NationalIdKind.FNR:
        return (
            None,
            day,
            month,
            (
                f"day {raw_day:02d} marks a D-number but month {raw_month:02d} marks "
                f"{'an H-number' if month_kind is NationalIdKind.HNR else 'a synthetic number'}; "
                "a number can only be one kind"
            ),
        )
    kind = NationalIdKind.DNR if d_number else month_kind
    return kind, day, month, None


def _day_month_range_problem(day: int, month: int, kind: NationalIdKind) -> str | None:
    """Catch days and months that exist in no year, showing the offset if one was removed."""
    if not 1 <= day <= 31:
        if kind is NationalIdKind.DNR:
            return f"D-number day {day + _D_NUMBER_DAY_OFFSET} means day {day}, which is not a date"
        return f"day {day} is not a date"
    if not 1 <= month <= 12:
        if kind is NationalIdKind.HNR:
            raw = month + _H_NUMBER_MONTH_OFFSET
            return f"H-number month {raw} means month {month}, which is not a date"
        if kind is NationalIdKind.SYNTHETIC:
            raw = month + _SYNTHETIC_MONTH_OFFSET
            return f"synthetic month {raw} means month {month}, which is not a date"
        return f"month {month} is not a date"
    return None


def _calendar_problem(day: int, month: int, years: tuple[int, ...]) -> str:
    """Explain a day that does not exist in its month, mentioning the year only for 29 February."""
    month_name = _MONTH_NAMES[month - 1]
    if month == 2 and day == 29:
        year_text = " or ".join(str(year) for year in years)
        return f"29 February {year_text} is not a date (not a leap year)"
    return f"day {day} is not a date in {month_name}"


def _is_date(year: int, month: int, day: int) -> bool:
    try:
        datetime.date(year, month, day)
    except ValueError:
        return False
    return True


def _weighted_sum(digits: str, weights: tuple[int, ...]) -> int:
    return sum(int(digit) * weight for digit, weight in zip(digits, weights, strict=False))


def _classic_check_digit(digits: str, weights: tuple[int, ...]) -> int | None:
    """Classic mod-11 check digit; ``None`` where the rule yields 10 (number not issuable)."""
    check = -_weighted_sum(digits, weights) % 11  # same as 11 - (sum mod 11), with 11 -> 0
    return None if check == 10 else check


def _satisfied_rule(digits: str) -> CheckDigitRule | None:
    """Return the strictest rule the check digits satisfy.

    Classic is tried first because every classic number also satisfies the
    2032 rule, and classic is what allows the century to be derived.
    """
    k2_ok = (_weighted_sum(digits[:10], _K2_WEIGHTS) + int(digits[10])) % 11 == 0
    if not k2_ok:
        return None
    k1_remainder = (_weighted_sum(digits[:9], _K1_WEIGHTS) + int(digits[9])) % 11
    if k1_remainder == 0:
        return CheckDigitRule.CLASSIC
    if k1_remainder in _RULE_2032_REMAINDERS:
        return CheckDigitRule.RULE_2032
    return None


def _legacy_birth_year(individual: int, yy: int) -> int | None:
    """Century from the individual number under the pre-2032 allocation scheme.

    Returns ``None`` for combinations that were never allocated (e.g. 750-899
    with a year of 40 or more), where no century can honestly be claimed.
    """
    if individual <= 499:
        return 1900 + yy
    if yy < 40:
        return 2000 + yy
    if individual <= 749 and yy > 54:
        return 1800 + yy
    if individual >= 900:
        return 1900 + yy
    return None
