"""FDI (ISO 3950) tooth numbers and their DICOM codes.

Clinicians write teeth as two-digit FDI numbers ("11 21, 36"): the first digit is the quadrant
(1–4 permanent, 5–8 primary, clockwise from the patient's upper right), the second the tooth
counted from the midline. DICOM names teeth with SNOMED CT codes from PS3.16 CID 4018
(permanent dentition) and CID 4019 (deciduous dentition), which "correspond to ISO 3950"
(PS3.3 C.8.11.9.1.1); photos and intra-oral images carry one Primary Anatomic Structure
Sequence item per tooth.

The table FDI → code is derived once, at import, from the concepts pydicom generates from PS3.16
(`pydicom.sr.codedict.codes.CID4018` / `CID4019`), by reading each code meaning ("Permanent
maxillary right first molar tooth"). Deriving it rather than typing 52 codes by hand avoids the
copying mistakes that public tables show (different SNOMED concepts for the same tooth: see
/work/shared/reference/pacs-anchors.md §5); the tests pin a few values checked against PS3.16.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.sr.codedict import codes

from arkiv.errors import InvalidObject

PERMANENT_CID = 4018
PRIMARY_CID = 4019

_QUADRANTS_PERMANENT = {
    ("maxillary", "right"): 1,
    ("maxillary", "left"): 2,
    ("mandibular", "left"): 3,
    ("mandibular", "right"): 4,
}
_PERMANENT_TEETH = {
    "central incisor": 1,
    "lateral incisor": 2,
    "lateral": 2,  # PS3.16 CID 4018 spells tooth 32 "Mandibular left lateral tooth"
    "canine": 3,
    "first premolar": 4,
    "second premolar": 5,
    "first molar": 6,
    "second molar": 7,
    "third molar": 8,
}
_PRIMARY_TEETH = {
    "central incisor": 1,
    "lateral incisor": 2,
    "canine": 3,
    "first molar": 4,
    "second molar": 5,
}
_MEANING = re.compile(
    r"^(?:permanent |deciduous )?(maxillary|mandibular) (left|right) (.+) tooth$", re.IGNORECASE
)
_SEPARATORS = re.compile(r"[\s,;]+")


class InvalidToothNumber(InvalidObject):
    """A tooth number that is not an FDI (ISO 3950) number of a permanent or primary tooth."""


@dataclass(frozen=True)
class ToothCode:
    """A tooth as a DICOM coded concept (the Code Sequence Macro's three attributes)."""

    value: str
    scheme_designator: str
    meaning: str
    cid: int
    """The PS3.16 context group it comes from: 4018 (permanent) or 4019 (deciduous)."""


def _valid_numbers() -> frozenset[int]:
    permanent = {q * 10 + t for q in (1, 2, 3, 4) for t in range(1, 9)}
    primary = {q * 10 + t for q in (5, 6, 7, 8) for t in range(1, 6)}
    return frozenset(permanent | primary)


VALID_TEETH = _valid_numbers()


def _fdi_from_meaning(meaning: str, cid: int) -> int:
    match = _MEANING.match(meaning.strip())
    if match is None:
        raise RuntimeError(f"CID {cid}: cannot read a tooth from {meaning!r}")
    jaw, side, tooth = (part.lower() for part in match.groups())
    quadrant = _QUADRANTS_PERMANENT[(jaw, side)]
    if cid == PRIMARY_CID:
        return (quadrant + 4) * 10 + _PRIMARY_TEETH[tooth]
    return quadrant * 10 + _PERMANENT_TEETH[tooth]


def _build_table() -> dict[int, ToothCode]:
    table: dict[int, ToothCode] = {}
    for cid in (PERMANENT_CID, PRIMARY_CID):
        collection = getattr(codes, f"CID{cid}")
        for concept in collection.concepts.values():
            number = _fdi_from_meaning(str(concept.meaning), cid)
            if number in table:
                raise RuntimeError(f"CID {cid}: two codes for tooth {number}")
            table[number] = ToothCode(
                value=str(concept.value),
                scheme_designator=str(concept.scheme_designator),
                meaning=str(concept.meaning),
                cid=cid,
            )
    if set(table) != VALID_TEETH:
        missing = sorted(VALID_TEETH - set(table))
        raise RuntimeError(f"PS3.16 CID 4018/4019 as shipped by pydicom lack teeth {missing}")
    return table


_BY_NUMBER = _build_table()
_BY_CODE = {(code.scheme_designator, code.value): number for number, code in _BY_NUMBER.items()}


def is_valid_tooth(n: int) -> bool:
    """Whether `n` is the FDI number of a permanent (11–48) or primary (51–85) tooth."""
    return n in VALID_TEETH


def parse_teeth(text: str) -> tuple[int, ...]:
    """The FDI numbers in `text` (separated by spaces, commas or semicolons), sorted, unique.

    Raises InvalidToothNumber naming the first token that is not a tooth.
    """
    numbers: set[int] = set()
    for token in _SEPARATORS.split(text.strip()):
        if not token:
            continue
        if not (token.isascii() and token.isdigit() and len(token) == 2):
            raise InvalidToothNumber(_invalid(token))
        number = int(token)
        if number not in VALID_TEETH:
            raise InvalidToothNumber(_invalid(token))
        numbers.add(number)
    return tuple(sorted(numbers))


def _invalid(token: str) -> str:
    shown = token if len(token) <= 20 else token[:20] + "…"
    return (
        f"«{shown}» er ikke et tannnummer: bruk FDI-nummer, permanente tenner 11–18, 21–28, "
        "31–38, 41–48 og melketenner 51–55, 61–65, 71–75, 81–85"
    )


def tooth_code(n: int) -> ToothCode:
    """The PS3.16 CID 4018/4019 code of FDI tooth `n`; InvalidToothNumber if there is none."""
    code = _BY_NUMBER.get(n)
    if code is None:
        raise InvalidToothNumber(_invalid(str(n)))
    return code


def tooth_from_code(scheme_designator: str, value: str) -> int | None:
    """The FDI number of a tooth code (e.g. from a received Primary Anatomic Structure
    Sequence item), or None when the code is not one of CID 4018/4019."""
    return _BY_CODE.get((scheme_designator.strip(), value.strip()))
