"""QIDO-RS query parameters (PS3.18 8.3.4) turned into the index's StudyQuery.

Keys may be given by keyword or by tag. A matching key the archive cannot apply is refused with
400 rather than ignored, since ignoring it would answer with results the client did not ask for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from arkiv.dicom_object import is_valid_uid
from arkiv.errors import InvalidQuery
from storage.records import StudyQuery

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

_KEYS = {
    "00100020": "PatientID",
    "00100010": "PatientName",
    "00100030": "PatientBirthDate",
    "00080020": "StudyDate",
    "00080050": "AccessionNumber",
    "00080060": "Modality",
    "00080061": "ModalitiesInStudy",
    "0020000D": "StudyInstanceUID",
    "0020000E": "SeriesInstanceUID",
    "00080018": "SOPInstanceUID",
}
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
_DATE = re.compile(r"^\d{8}$")


def _date(value: str, key: str) -> str:
    if not _DATE.match(value):
        raise InvalidQuery(f"{key} must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD, not {value!r}")
    return value


def _uids(value: str, key: str) -> tuple[str, ...]:
    uids = tuple(u.strip() for u in value.replace("\\", ",").split(",") if u.strip())
    for uid in uids:
        if not is_valid_uid(uid):
            raise InvalidQuery(f"{key} {uid[:70]!r} is not a valid UID")
    return uids


def _int(value: str, key: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidQuery(f"{key} must be a whole number") from None
    if not low <= number <= high:
        raise InvalidQuery(f"{key} must be between {low} and {high}")
    return number


def parse_query(params: Iterable[tuple[str, str]]) -> StudyQuery:
    query = StudyQuery(limit=DEFAULT_LIMIT)
    for raw_key, value in params:
        key = _KEYS.get(raw_key.upper(), raw_key)
        if key in _CONTROL:
            if key == "limit":
                query = replace(query, limit=_int(value, key, 1, MAX_LIMIT))
            elif key == "offset":
                query = replace(query, offset=_int(value, key, 0, 10_000_000))
            continue
        value = value.strip()
        if not value or value == "*":
            continue  # universal matching
        if key == "PatientID":
            query = replace(query, patient_id=value)
        elif key == "PatientName":
            query = replace(query, patient_name=value)
        elif key == "PatientBirthDate":
            query = replace(query, birth_date=_date(value, key))
        elif key == "StudyDate":
            start, dash, end = value.partition("-")
            if dash:
                query = replace(
                    query,
                    study_date_from=_date(start, key) if start else None,
                    study_date_to=_date(end, key) if end else None,
                )
            else:
                query = replace(query, study_date_from=_date(value, key), study_date_to=value)
        elif key == "AccessionNumber":
            query = replace(query, accession_number=value)
        elif key in ("Modality", "ModalitiesInStudy"):
            query = replace(query, modality=value.upper())
        elif key == "StudyInstanceUID":
            query = replace(query, study_uids=_uids(value, key))
        elif key == "SeriesInstanceUID":
            query = replace(query, series_uids=_uids(value, key))
        elif key == "SOPInstanceUID":
            query = replace(query, sop_uids=_uids(value, key))
        else:
            raise InvalidQuery(f"matching on {raw_key!r} is not supported")
    return query
