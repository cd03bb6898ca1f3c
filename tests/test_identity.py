"""Tests for Norwegian national ID recognition.

The check digits are recomputed here independently of ``arkiv.identity`` so
that numbers with a correct checksum but a broken date (or vice versa) can be
crafted, and so a bug in the module's arithmetic cannot hide behind itself.
"""

from __future__ import annotations

import datetime
import random

import pytest

from arkiv.identity import (
    CheckDigitRule,
    NationalIdCheck,
    NationalIdKind,
    check_national_id,
    is_valid_national_id,
    make_national_id,
    make_synthetic_national_id,
)

K1_WEIGHTS = (3, 7, 6, 1, 8, 9, 4, 5, 2)
K2_WEIGHTS = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def _mod11(digits: str, weights: tuple[int, ...]) -> int:
    return sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11


def _classic_k(digits: str, weights: tuple[int, ...]) -> int | None:
    k = 11 - _mod11(digits, weights)
    if k == 11:
        return 0
    return None if k == 10 else k


def _k1_candidates_2032(first9: str) -> list[int]:
    """All K1 values the 2032 rule allows, computed literally as Skatteetaten describes it."""
    r = _mod11(first9, K1_WEIGHTS)
    values = []
    for c in (11, 12, 13, 14):
        k = c - r
        if k >= 11:
            k -= 11
        if k != 10:
            values.append(k)
    return values


def _complete(first9: str, k1: int | None = None) -> str | None:
    """Append check digits (classic K1 unless given); None when not issuable."""
    if k1 is None:
        k1 = _classic_k(first9, K1_WEIGHTS)
        if k1 is None:
            return None
    k2 = _classic_k(first9 + str(k1), K2_WEIGHTS)
    if k2 is None:
        return None
    return f"{first9}{k1}{k2}"


def _with_check_digits(date6: str, individuals: range = range(1000)) -> str:
    """First classic-rule number for the date part whose check digits are both issuable."""
    for individual in individuals:
        number = _complete(f"{date6}{individual:03d}")
        if number is not None:
            return number
    raise AssertionError(f"no issuable individual number for {date6}")


def _with_2032_only_check_digits(date6: str, individuals: range = range(1000)) -> str:
    """First number for the date part that is valid under the 2032 rule but not the classic one."""
    for individual in individuals:
        first9 = f"{date6}{individual:03d}"
        classic = _classic_k(first9, K1_WEIGHTS)
        for k1 in _k1_candidates_2032(first9):
            if k1 == classic:
                continue
            number = _complete(first9, k1)
            if number is not None:
                return number
    raise AssertionError(f"no 2032-only number for {date6}")


def _assert_not_national_id(result: NationalIdCheck, value: str) -> None:
    assert result.value == value
    assert result.looks_like_national_id is False
    assert result.valid is False
    assert result.kind is None
    assert result.rule is None
    assert result.birth_date is None
    assert result.problem == "not 11 digits"


# --- Skatteetaten's published examples ---------------------------------------


@pytest.mark.parametrize(
    ("number", "birth_date"),
    [
        ("02013299997", datetime.date(2032, 1, 2)),
        ("30108299920", datetime.date(1982, 10, 30)),
    ],
)
def test_skatteetaten_classic_examples(number: str, birth_date: datetime.date) -> None:
    result = check_national_id(number)
    assert result.valid
    assert result.looks_like_national_id
    assert result.kind is NationalIdKind.FNR
    assert result.rule is CheckDigitRule.CLASSIC
    assert result.birth_date == birth_date
    assert result.problem is None
    assert is_valid_national_id(number)


def test_skatteetaten_example_valid_only_under_2032_rule() -> None:
    result = check_national_id("30108299939")
    assert result.valid
    assert result.kind is NationalIdKind.FNR
    assert result.rule is CheckDigitRule.RULE_2032
    # The 2032 rule carries no century information, so no birth date is claimed.
    assert result.birth_date is None
    assert result.problem is None


def test_2032_rule_accepts_exactly_the_documented_k1_values() -> None:
    first9 = "301082999"
    checked = 0
    for k1 in range(10):
        number = _complete(first9, k1)
        if number is None:
            continue  # K2 would be 10: no such number exists under either rule
        checked += 1
        result = check_national_id(number)
        assert result.valid is (k1 in _k1_candidates_2032(first9)), number
        if k1 == _classic_k(first9, K1_WEIGHTS):
            assert result.rule is CheckDigitRule.CLASSIC
        elif result.valid:
            assert result.rule is CheckDigitRule.RULE_2032
    assert checked >= 8


def test_enum_values_are_the_stored_strings() -> None:
    assert [k.value for k in NationalIdKind] == ["fnr", "dnr", "hnr", "synthetic"]
    assert [r.value for r in CheckDigitRule] == ["classic", "2032"]


# --- Kinds built with the helpers ----------------------------------------------


def test_d_number() -> None:
    number = make_national_id(datetime.date(1985, 7, 21), 123, NationalIdKind.DNR)
    assert number[:4] == "6107"
    result = check_national_id(number)
    assert result.valid
    assert result.kind is NationalIdKind.DNR
    assert result.rule is CheckDigitRule.CLASSIC
    assert result.birth_date == datetime.date(1985, 7, 21)


def test_h_number() -> None:
    number = make_national_id(datetime.date(2004, 11, 3), 512, NationalIdKind.HNR)
    assert number[:4] == "0351"
    result = check_national_id(number)
    assert result.valid
    assert result.kind is NationalIdKind.HNR
    assert result.birth_date == datetime.date(2004, 11, 3)


def test_synthetic_number() -> None:
    number = make_synthetic_national_id(datetime.date(1971, 12, 31), 42)
    assert number[:4] == "3192"
    assert number == make_national_id(datetime.date(1971, 12, 31), 42, NationalIdKind.SYNTHETIC)
    result = check_national_id(number)
    assert result.valid
    assert result.kind is NationalIdKind.SYNTHETIC
    assert result.birth_date == datetime.date(1971, 12, 31)


def test_fnr_is_default_kind() -> None:
    number = make_national_id(datetime.date(1950, 3, 9), 2)
    assert number[:6] == "090350"
    assert check_national_id(number).kind is NationalIdKind.FNR


def test_number_cannot_be_two_kinds() -> None:
    # D-number day combined with an H-number or synthetic month.
    for date6 in ("414150", "418185"):
        number = _with_check_digits(date6)
        result = check_national_id(number)
        assert not result.valid
        assert result.kind is None
        assert result.problem is not None
        assert "only be one kind" in result.problem


@pytest.mark.parametrize("date6", ["850150", "012550", "017050"])
def test_unrecognised_offsets(date6: str) -> None:
    result = check_national_id(_with_check_digits(date6))
    assert result.looks_like_national_id
    assert not result.valid
    assert result.kind is None
    assert result.problem is not None
    assert "neither a date nor" in result.problem


# --- Error detection -----------------------------------------------------------


VALID_SAMPLES = [
    "02013299997",
    "30108299920",
    "30108299939",
    make_national_id(datetime.date(1985, 7, 21), 123, NationalIdKind.DNR),
    make_national_id(datetime.date(2004, 11, 3), 512, NationalIdKind.HNR),
    make_synthetic_national_id(datetime.date(1971, 12, 31), 42),
]


@pytest.mark.parametrize("number", VALID_SAMPLES)
def test_every_single_digit_change_is_detected(number: str) -> None:
    assert is_valid_national_id(number)
    for position in range(11):
        for digit in "0123456789":
            if digit == number[position]:
                continue
            changed = number[:position] + digit + number[position + 1 :]
            result = check_national_id(changed)
            assert not result.valid, changed
            assert result.problem is not None, changed


@pytest.mark.parametrize("number", VALID_SAMPLES)
def test_adjacent_transpositions_in_first_ten_digits_are_detected(number: str) -> None:
    for position in range(9):
        a, b = number[position], number[position + 1]
        if a == b:
            continue
        swapped = number[:position] + b + a + number[position + 2 :]
        assert not is_valid_national_id(swapped), swapped


def test_check_digit_mismatch_message() -> None:
    result = check_national_id("30108299921")
    assert result.looks_like_national_id
    assert result.kind is NationalIdKind.FNR
    assert not result.valid
    assert result.rule is None
    assert result.birth_date is None
    assert result.problem == "check digits do not match (classic or 2032 rule)"


# --- Dates ---------------------------------------------------------------------


def test_day_32_is_rejected_even_with_correct_check_digits() -> None:
    result = check_national_id(_with_check_digits("320190"))
    assert not result.valid
    assert result.kind is NationalIdKind.FNR
    assert result.problem == "day 32 is not a date"


def test_d_number_day_72_is_rejected() -> None:
    result = check_national_id(_with_check_digits("720190"))
    assert not result.valid
    assert result.kind is NationalIdKind.DNR
    assert result.problem is not None
    assert "day 32" in result.problem


def test_day_zero_is_rejected() -> None:
    result = check_national_id(_with_check_digits("000190"))
    assert not result.valid
    assert result.problem == "day 0 is not a date"


def test_month_13_is_rejected() -> None:
    result = check_national_id(_with_check_digits("011390"))
    assert not result.valid
    assert result.kind is NationalIdKind.FNR
    assert result.problem == "month 13 is not a date"


@pytest.mark.parametrize(
    ("date6", "kind"),
    [("015390", NationalIdKind.HNR), ("019390", NationalIdKind.SYNTHETIC)],
)
def test_offset_month_13_is_rejected(date6: str, kind: NationalIdKind) -> None:
    result = check_national_id(_with_check_digits(date6))
    assert not result.valid
    assert result.kind is kind
    assert result.problem is not None
    assert "month 13" in result.problem


def test_31_april_is_rejected() -> None:
    result = check_national_id(_with_check_digits("310490"))
    assert not result.valid
    assert result.problem == "day 31 is not a date in April"


def test_29_february_depends_on_century_from_individual_number() -> None:
    # Same date digits 29.02.00: individual 000-499 means 1900 (not a leap
    # year), 500-999 means 2000 (a leap year).
    in_1900 = check_national_id(_with_check_digits("290200", range(0, 500)))
    assert not in_1900.valid
    assert in_1900.problem is not None
    assert "29 February 1900" in in_1900.problem

    in_2000 = check_national_id(_with_check_digits("290200", range(500, 1000)))
    assert in_2000.valid
    assert in_2000.rule is CheckDigitRule.CLASSIC
    assert in_2000.birth_date == datetime.date(2000, 2, 29)


def test_29_february_in_1800s() -> None:
    leap = check_national_id(_with_check_digits("290296", range(500, 750)))
    assert leap.birth_date == datetime.date(1896, 2, 29)
    not_leap = check_national_id(_with_check_digits("290297", range(500, 750)))
    assert not not_leap.valid
    assert not_leap.problem is not None
    assert "1897" in not_leap.problem


def test_29_february_under_2032_rule_needs_a_leap_year_in_some_century() -> None:
    # 2032-rule numbers have no known century; 00 is a leap year as 2000.
    possible = check_national_id(_with_2032_only_check_digits("290200", range(0, 500)))
    assert possible.valid
    assert possible.rule is CheckDigitRule.RULE_2032
    assert possible.birth_date is None

    # 01 is a leap year in neither 1901 nor 2001.
    impossible = check_national_id(_with_2032_only_check_digits("290201"))
    assert not impossible.valid
    assert impossible.problem is not None
    assert "29 February" in impossible.problem


def test_unallocated_century_combination_has_no_birth_date() -> None:
    # Individual 750-899 with year 40-99 was never allocated under the old scheme.
    result = check_national_id(_with_check_digits("150660", range(750, 900)))
    assert result.valid
    assert result.rule is CheckDigitRule.CLASSIC
    assert result.birth_date is None


# --- K1 = 10 under the classic rule --------------------------------------------


def _first9_with_classic_k1_of_10() -> str:
    for individual in range(1000):
        first9 = f"150385{individual:03d}"
        if _classic_k(first9, K1_WEIGHTS) is None:
            return first9
    raise AssertionError("no individual number gives K1 = 10")


def test_classic_k1_of_10_is_not_issuable() -> None:
    first9 = _first9_with_classic_k1_of_10()
    individual = int(first9[6:])
    with pytest.raises(ValueError, match="check digit would be 10"):
        make_national_id(datetime.date(1985, 3, 15), individual)
    with pytest.raises(ValueError, match="check digit would be 10"):
        make_synthetic_national_id(datetime.date(1985, 3, 15), individual)


def test_classic_k1_of_10_numbers_are_only_valid_via_2032_rule() -> None:
    first9 = _first9_with_classic_k1_of_10()
    allowed = _k1_candidates_2032(first9)
    # 11 - r = 10 means r = 1, so the 2032 rule allows 0, 1 and 2.
    assert allowed == [0, 1, 2]
    for k1 in range(10):
        number = _complete(first9, k1)
        if number is None:
            continue
        result = check_national_id(number)
        if k1 in allowed:
            assert result.valid, number
            assert result.rule is CheckDigitRule.RULE_2032
        else:
            assert not result.valid, number
            assert result.problem == "check digits do not match (classic or 2032 rule)"


# --- Inputs that are not national IDs --------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "PAT-0001",
        "0201329999",  # 10 digits
        "020132999970",  # 12 digits
        "020132 99997",  # inner space
        "02013299997a",
        "0201329999X",
        "０２０１３２９９９９７",  # fullwidth digits
        "٠٢٠١٣٢٩٩٩٩٧",  # Arabic-Indic digits
        "+2013299997",
        "-2013299997",
        "²2013299997",
    ],
)
def test_non_national_ids(value: str) -> None:
    _assert_not_national_id(check_national_id(value), value)
    assert not is_valid_national_id(value)


@pytest.mark.parametrize("value", [" 02013299997", "02013299997 ", "\t02013299997\r\n"])
def test_surrounding_whitespace_is_tolerated_but_kept(value: str) -> None:
    result = check_national_id(value)
    assert result.value == value
    assert result.looks_like_national_id
    assert result.valid
    assert result.birth_date == datetime.date(2032, 1, 2)


@pytest.mark.parametrize(
    "value",
    [
        "PAT-0001",
        " 30108299939 ",
        "30108299921",
        "320190 00000",
        "",
        *VALID_SAMPLES,
    ],
)
def test_value_is_never_altered(value: str) -> None:
    assert check_national_id(value).value is value


def test_result_is_immutable() -> None:
    result = check_national_id("02013299997")
    with pytest.raises(AttributeError):
        result.valid = False  # type: ignore[misc]


# --- Generators ------------------------------------------------------------------


def _individual_range_for(year: int, rng: random.Random) -> range:
    if 1855 <= year <= 1899:
        return range(500, 750)
    if 1900 <= year <= 1939:
        return range(0, 500)
    if 1940 <= year <= 1999:
        return rng.choice([range(0, 500), range(900, 1000)])
    if 2000 <= year <= 2039:
        return range(500, 1000)
    raise AssertionError(year)


def test_generated_numbers_round_trip() -> None:
    rng = random.Random(20320101)
    start = datetime.date(1855, 1, 1).toordinal()
    end = datetime.date(2039, 12, 31).toordinal()
    made = 0
    skipped = 0
    kinds = list(NationalIdKind)
    for _ in range(5000):
        birth = datetime.date.fromordinal(rng.randint(start, end))
        individual = rng.choice(_individual_range_for(birth.year, rng))
        kind = rng.choice(kinds)
        try:
            number = make_national_id(birth, individual, kind)
        except ValueError:
            skipped += 1
            continue
        made += 1
        assert len(number) == 11 and number.isdigit()
        assert number[6:9] == f"{individual:03d}"
        result = check_national_id(number)
        assert result.valid, number
        assert result.kind is kind, number
        assert result.rule is CheckDigitRule.CLASSIC, number
        assert result.birth_date == birth, number
        assert result.problem is None
    # Roughly one in ten individual numbers is not issuable per check digit.
    assert made > 3500
    assert skipped > 0


def test_generator_skips_exactly_the_unissuable_individuals() -> None:
    birth = datetime.date(1990, 6, 15)
    for individual in range(1000):
        if 500 <= individual <= 899:
            continue  # not a 1990 range
        expected = _complete(f"150690{individual:03d}")
        if expected is None:
            with pytest.raises(ValueError):
                make_national_id(birth, individual)
        else:
            assert make_national_id(birth, individual) == expected


@pytest.mark.parametrize(
    ("birth", "individual"),
    [
        (datetime.date(1990, 1, 1), 600),  # 500-749 with 90 means 1890
        (datetime.date(2005, 1, 1), 100),  # 000-499 means 1900s
        (datetime.date(1850, 1, 1), 600),  # before any range
        (datetime.date(2040, 1, 1), 600),  # after the legacy scheme
        (datetime.date(1990, 1, 1), 1000),
        (datetime.date(1990, 1, 1), -1),
    ],
)
def test_generator_rejects_individuals_from_the_wrong_century(
    birth: datetime.date, individual: int
) -> None:
    with pytest.raises(ValueError):
        make_national_id(birth, individual)
