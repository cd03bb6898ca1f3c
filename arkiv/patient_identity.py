"""Which patient record a received object belongs to: its national ID, wherever it carries one.

The three counties' old archives file the same person under local IDs (`BU-000123`) and put the
fødselsnummer or D-nummer in Other Patient IDs. Matching on that national ID is what lets one
patient record hold every county's studies. Only a *valid* national ID is trusted for this:
a number whose check digits fail could be anyone's, so the object stays under its own ID and
is listed for an administrator (`arkiv.reconciliation`). The stored object is never changed;
only the index files it under the national ID and keeps the local ID as an alias.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydicom.dataset import Dataset

from arkiv.identity import NationalIdCheck, NationalIdKind, check_national_id
from storage.records import PatientAttributes

NO_ID_ISSUER_PREFIX = "arkiv-no-id:"
"""Issuer of the placeholder record of a study that arrived without any patient ID: one record
per study, so that unidentified studies are never lumped together as one person."""


@dataclass(frozen=True)
class OtherId:
    value: str
    issuer: str


def other_patient_ids(ds: Dataset) -> list[OtherId]:
    """Other Patient IDs Sequence (0010,1002) items, then the retired Other Patient IDs
    (0010,1000), in the order the object gives them."""
    found: list[OtherId] = []
    for item in ds.get("OtherPatientIDsSequence", None) or []:
        value = str(item.get("PatientID", "") or "").strip()
        if value:
            found.append(OtherId(value[:64], str(item.get("IssuerOfPatientID", "") or "")[:64]))
    retired = ds.get((0x0010, 0x1000), None)
    if retired is not None and retired.value:
        values = retired.value if retired.VM > 1 else [retired.value]
        found.extend(OtherId(str(v).strip()[:64], "") for v in values if str(v).strip())
    return found


def identify(
    ds: Dataset, patient_id: str, issuer: str, name: str, birth_date: str, sex: str
) -> PatientAttributes:
    """The patient record the object is indexed under.

    - A valid national ID in Patient ID: used as is (with the object's issuer).
    - Otherwise exactly one valid national ID among the other IDs: the object is indexed under
      it (issuer empty, the national register needs none) and its own ID becomes an alias.
    - Several different valid national IDs among the other IDs: none is chosen (that would be
      a guess); the object keeps its own ID, flagged invalid, with the reason.
    - No Patient ID at all: a placeholder record for this study alone.
    """
    own = check_national_id(patient_id)
    if own.valid:
        return _attributes(patient_id, issuer, own, name, birth_date, sex)
    nationals = sorted(
        {other.value for other in other_patient_ids(ds) if check_national_id(other.value).valid}
    )
    if len(nationals) == 1:
        national = nationals[0]
        return _attributes(
            national,
            "",
            check_national_id(national),
            name,
            birth_date,
            sex,
            alias=(patient_id, issuer) if patient_id else None,
        )
    if not patient_id:
        study_uid = str(ds.get("StudyInstanceUID", "") or "")
        digest = hashlib.sha256(study_uid.encode("ascii", "replace")).hexdigest()[:40]
        return PatientAttributes(
            patient_id="",
            issuer=NO_ID_ISSUER_PREFIX + digest,
            name=name,
            birth_date=birth_date,
            sex=sex,
            id_kind=None,
            id_valid=False,
            id_problem="the object carries no patient ID",
        )
    problem = own.problem or "not a valid national ID"
    if len(nationals) > 1:
        problem = (
            f"Other Patient IDs hold several national IDs ({', '.join(nationals)}); "
            "an administrator must decide which person this is"
        )
    return PatientAttributes(
        patient_id=patient_id,
        issuer=issuer,
        name=name,
        birth_date=birth_date,
        sex=sex,
        id_kind=own.kind.value if own.kind else None,
        id_valid=False,
        id_problem=problem,
    )


def _attributes(
    national: str,
    issuer: str,
    check: NationalIdCheck,
    name: str,
    birth_date: str,
    sex: str,
    alias: tuple[str, str] | None = None,
) -> PatientAttributes:
    return PatientAttributes(
        patient_id=national,
        issuer=issuer,
        name=name,
        birth_date=birth_date,
        sex=sex,
        id_kind=check.kind.value if check.kind else None,
        id_valid=True,
        id_problem=None,
        alias_id=alias[0] if alias else "",
        alias_issuer=alias[1] if alias else "",
        birth_date_problem=birth_date_problem(national, birth_date),
    )


def birth_date_problem(national_id: str, birth_date: str) -> str | None:
    """Why a DICOM birth date (`YYYYMMDD`) contradicts the date inside a valid national ID.

    A classic-rule number gives the whole date; a 2032-rule number only day, month and the
    last two digits of the year, so only those are compared. No birth date, no contradiction.
    """
    check = check_national_id(national_id)
    if not check.valid or len(birth_date) != 8 or not birth_date.isdigit():
        return None
    digits = national_id.strip()
    day, month = int(digits[0:2]), int(digits[2:4])
    if check.kind is NationalIdKind.DNR:
        day -= 40
    elif check.kind is NationalIdKind.HNR:
        month -= 40
    elif check.kind is NationalIdKind.SYNTHETIC:
        month -= 80
    if check.birth_date is not None:
        expected = check.birth_date.strftime("%Y%m%d")
        if expected != birth_date:
            return f"birth date {birth_date} differs from the national ID's date {expected}"
        return None
    if (int(birth_date[6:8]), int(birth_date[4:6]), birth_date[2:4]) != (
        day,
        month,
        digits[4:6],
    ):
        return (
            f"birth date {birth_date} differs from the national ID's date "
            f"{day:02d}.{month:02d}.{digits[4:6]}"
        )
    return None
