"""FDI tooth numbers and their PS3.16 CID 4018/4019 codes."""

from __future__ import annotations

import pytest

from arkiv.errors import InvalidObject
from arkiv.teeth import (
    InvalidToothNumber,
    is_valid_tooth,
    parse_teeth,
    tooth_code,
    tooth_from_code,
)

ALL_TEETH = [q * 10 + t for q in (1, 2, 3, 4) for t in range(1, 9)] + [
    q * 10 + t for q in (5, 6, 7, 8) for t in range(1, 6)
]


@pytest.mark.parametrize(
    ("text", "teeth"),
    [
        ("", ()),
        ("   ", ()),
        ("11", (11,)),
        ("21 11", (11, 21)),
        ("11,21;36", (11, 21, 36)),
        (" 36 , 36;; 11\t48\n", (11, 36, 48)),
        ("55 61 75 85", (55, 61, 75, 85)),
    ],
)
def test_parse_teeth_valid(text: str, teeth: tuple[int, ...]) -> None:
    assert parse_teeth(text) == teeth


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("19", "19"),
        ("11 10", "10"),
        ("56", "56"),
        ("91", "91"),
        ("09", "09"),
        ("11 abc", "abc"),
        ("111", "111"),
        ("1", "1"),
        ("11-12", "11-12"),
        ("-11", "-11"),
        ("1.5", "1.5"),
        ("١١", "١١"),  # Arabic-Indic digits: not accepted as FDI numbers
    ],
)
def test_parse_teeth_invalid_names_the_token(text: str, token: str) -> None:
    with pytest.raises(InvalidToothNumber) as caught:
        parse_teeth(text)
    message = str(caught.value)
    assert f"«{token}»" in message
    assert "11–18" in message and "51–55" in message
    assert isinstance(caught.value, InvalidObject)


def test_is_valid_tooth() -> None:
    assert sorted(n for n in range(100) if is_valid_tooth(n)) == ALL_TEETH
    assert len(ALL_TEETH) == 52


def test_all_52_teeth_have_distinct_codes_and_round_trip() -> None:
    codes = [tooth_code(n) for n in ALL_TEETH]
    assert len({(c.scheme_designator, c.value) for c in codes}) == 52
    for n, code in zip(ALL_TEETH, codes, strict=True):
        assert code.scheme_designator == "SCT"
        assert code.cid == (4018 if n < 50 else 4019)
        assert tooth_from_code(code.scheme_designator, code.value) == n
        assert tooth_from_code(f" {code.scheme_designator}", f"{code.value} ") == n


def test_unknown_codes_and_numbers() -> None:
    assert tooth_from_code("SCT", "123851003") is None  # mouth, not a tooth
    assert tooth_from_code("SRT", "T-54210") is None  # retired SNOMED-RT form is not mapped
    with pytest.raises(InvalidToothNumber):
        tooth_code(19)


# Values checked against PS3.16 CID 4018 / CID 4019 (as published in the DICOM terminology
# value sets, versions 2022-09-22 and 2023-01-19). Note 17 and 16: older tables (e.g. the HL7
# Dental Data Exchange crosswalk) use 7121006 and 5140004, which PS3.16 no longer lists.
@pytest.mark.parametrize(
    ("tooth", "value", "meaning"),
    [
        (18, "68085002", "Permanent maxillary right third molar tooth"),
        (17, "863902006", "Permanent maxillary right second molar tooth"),
        (16, "865995000", "Permanent maxillary right first molar tooth"),
        (15, "36492000", "Permanent maxillary right second premolar tooth"),
        (13, "860767006", "Permanent maxillary right canine tooth"),
        (12, "424877001", "Permanent maxillary right lateral incisor tooth"),
        (32, "423331005", "Mandibular left lateral tooth"),
        (45, "8873007", "Mandibular right second premolar tooth"),
        (46, "866005003", "Mandibular right first molar tooth"),
        (48, "38994002", "Mandibular right third molar tooth"),
        (51, "88824007", "Deciduous maxillary right central incisor tooth"),
        (61, "51678005", "Deciduous maxillary left central incisor tooth"),
        (83, "6062009", "Deciduous mandibular right canine tooth"),
        (85, "61868007", "Deciduous mandibular right second molar tooth"),
    ],
)
def test_spot_checks_against_ps3_16(tooth: int, value: str, meaning: str) -> None:
    code = tooth_code(tooth)
    assert (code.scheme_designator, code.value, code.meaning) == ("SCT", value, meaning)
