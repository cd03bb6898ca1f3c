"""Matching keys as both query adapters receive them (C-FIND identifiers and QIDO-RS parameters),
turned into one `StudyQuery` by the rules of PS3.4 C.2.2.2.

Why one module: a clinic's workstation (C-FIND) and a web viewer (QIDO-RS) asking the same
question must get the same answer, so the value syntax is read here once.

The rules, per value representation:
- universal matching: an empty value (or a lone `*`) matches everything;
- text (LO, SH, CS): a single value matches exactly and case-sensitively; `*` and `?` are
  wildcards; SQL's own wildcards (`%`, `_`) and quotes are ordinary characters;
- person names (PN): like text, but ignoring case (`æ` matches `Æ`); only the first component
  group (before `=`) is used;
- dates (DA): `YYYYMMDD`, or a range `a-b`, `a-` or `-b`, bounds inclusive;
- times (TM): `HH`, `HHMM`, `HHMMSS` or `HHMMSS.FFFFFF`, or a range of them; a bound stands for
  everything within its precision, so `0930` matches 09:30:00 up to 09:30:59.999999 and
  `0930-1000` runs from 09:30:00 through 10:00:59.999999;
- UIDs (UI): one UID or a backslash-separated list, any of which matches;
- numbers (IS): one whole number.
A key the archive cannot match on, given a value, is refused (InvalidQuery) rather than ignored:
ignoring it would answer with more than the caller asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from pydicom.datadict import keyword_for_tag, tag_for_keyword

from arkiv.dicom_object import is_valid_uid
from arkiv.errors import InvalidQuery
from storage.records import StudyQuery

PATIENT = "PATIENT"
STUDY = "STUDY"
SERIES = "SERIES"
IMAGE = "IMAGE"
LEVELS = (PATIENT, STUDY, SERIES, IMAGE)

MATCHING_KEYS: dict[str, str] = {
    "PatientID": PATIENT,
    "PatientName": PATIENT,
    "PatientBirthDate": PATIENT,
    "PatientSex": PATIENT,
    "StudyDate": STUDY,
    "StudyTime": STUDY,
    "AccessionNumber": STUDY,
    "StudyID": STUDY,
    "StudyInstanceUID": STUDY,
    "ModalitiesInStudy": STUDY,
    "ReferringPhysicianName": STUDY,
    "StudyDescription": STUDY,
    "SeriesInstanceUID": SERIES,
    "Modality": SERIES,
    "SeriesNumber": SERIES,
    "SOPInstanceUID": IMAGE,
    "SOPClassUID": IMAGE,
    "InstanceNumber": IMAGE,
}
"""Keys the archive matches on, with the query level each belongs to."""

RETURN_KEYS: dict[str, str] = {
    **MATCHING_KEYS,
    "NumberOfPatientRelatedStudies": PATIENT,
    "NumberOfPatientRelatedSeries": PATIENT,
    "NumberOfPatientRelatedInstances": PATIENT,
    "NumberOfStudyRelatedSeries": STUDY,
    "NumberOfStudyRelatedInstances": STUDY,
    "SeriesDescription": SERIES,
    "BodyPartExamined": SERIES,
    "NumberOfSeriesRelatedInstances": SERIES,
    "Rows": IMAGE,
    "Columns": IMAGE,
    "NumberOfFrames": IMAGE,
}
"""Keys the archive can answer (matching keys included); any other requested key comes back
empty. Asking one of these that is not a matching key with a value is refused."""

_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")


def keyword(raw: str) -> str:
    """A key given as keyword (`PatientName`) or tag (`00100010`, `0010,0010`) as its keyword;
    InvalidQuery if it names no attribute."""
    text = raw.strip()
    compact = text.strip("()").replace(",", "")
    if re.fullmatch(r"[0-9A-Fa-f]{8}", compact):
        name = keyword_for_tag(int(compact, 16))
        if name:
            return name
        raise InvalidQuery(f"{raw!r} is not a tag of an attribute the archive knows")
    if tag_for_keyword(text) is not None:
        return text
    raise InvalidQuery(f"{raw!r} is not a DICOM attribute keyword or tag")


def tag_of(name: str) -> int:
    tag = tag_for_keyword(name)
    if tag is None:
        raise InvalidQuery(f"{name!r} is not a DICOM attribute keyword")
    return int(tag)


def level_of(name: str) -> str | None:
    """The query level an answerable key belongs to, or None when the archive holds no value."""
    return RETURN_KEYS.get(name)


def parse_keys(pairs: Iterable[tuple[str, str]], query: StudyQuery | None = None) -> StudyQuery:
    """Apply (keyword or tag, value) pairs to a query; InvalidQuery names the first bad one."""
    result = query if query is not None else StudyQuery()
    for raw, value in pairs:
        result = apply_key(result, keyword(raw), value)
    return result


def apply_key(query: StudyQuery, name: str, raw_value: str) -> StudyQuery:
    """One key's matching applied to the query (an empty value changes nothing)."""
    value = raw_value.strip()
    if not value or (value == "*" and name not in _UID_KEYS):
        return query  # universal matching
    if name not in MATCHING_KEYS:
        raise InvalidQuery(f"matching on {name} is not supported; send it empty to get it back")
    if "\\" in value and name not in _LIST_KEYS:
        raise InvalidQuery(f"{name} takes a single value, not a list")
    if name == "PatientID":
        return replace(query, patient_id=_text(value, name, 64))
    if name == "PatientName":
        return replace(query, patient_name=_person_name(value, name))
    if name == "PatientBirthDate":
        low, high, single = _dates(value, name)
        if single:
            return replace(query, birth_date=low)
        return replace(query, birth_date_from=low, birth_date_to=high)
    if name == "PatientSex":
        return replace(query, patient_sex=_text(value, name, 16))
    if name == "StudyDate":
        low, high, _ = _dates(value, name)
        return replace(query, study_date_from=low, study_date_to=high)
    if name == "StudyTime":
        start, end = _times(value, name)
        return replace(query, study_time_from=start, study_time_to=end)
    if name == "AccessionNumber":
        return replace(query, accession_number=_text(value, name, 16))
    if name == "StudyID":
        return replace(query, study_id=_text(value, name, 16))
    if name == "StudyDescription":
        return replace(query, study_description=_text(value, name, 64))
    if name == "ReferringPhysicianName":
        return replace(query, referring_physician=_person_name(value, name))
    if name in ("Modality", "ModalitiesInStudy"):
        return replace(query, modalities=_modalities(value, name))
    if name == "StudyInstanceUID":
        return replace(query, study_uids=_uids(value, name))
    if name == "SeriesInstanceUID":
        return replace(query, series_uids=_uids(value, name))
    if name == "SOPInstanceUID":
        return replace(query, sop_uids=_uids(value, name))
    if name == "SOPClassUID":
        return replace(query, sop_class_uids=_uids(value, name))
    if name == "SeriesNumber":
        return replace(query, series_number=_number(value, name))
    return replace(query, instance_number=_number(value, name))


_UID_KEYS = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"})
_LIST_KEYS = _UID_KEYS | {"Modality", "ModalitiesInStudy"}


def _text(value: str, name: str, longest: int) -> str:
    if len(value) > longest:
        raise InvalidQuery(f"{name} is at most {longest} characters, not {len(value)}")
    if any(ord(c) < 32 for c in value):
        raise InvalidQuery(f"{name} contains control characters")
    return value


def _person_name(value: str, name: str) -> str:
    alphabetic = _text(value, name, 324).split("=", 1)[0]
    return alphabetic if alphabetic.strip() else "*"


def _modalities(value: str, name: str) -> tuple[str, ...]:
    found = tuple(v.strip() for v in value.split("\\") if v.strip())
    for modality in found:
        if not re.fullmatch(r"[A-Z0-9_ ]{1,16}", modality):
            raise InvalidQuery(f"{name} {modality[:20]!r} is not a modality code (such as IO, PX)")
    return found


def _uids(value: str, name: str) -> tuple[str, ...]:
    uids = tuple(u.strip() for u in value.split("\\") if u.strip())
    for uid in uids:
        if not is_valid_uid(uid):
            raise InvalidQuery(f"{name} {uid[:70]!r} is not a valid UID")
    return uids


def _number(value: str, name: str) -> int:
    if not re.fullmatch(r"[+-]?\d{1,12}", value):
        raise InvalidQuery(f"{name} must be a whole number, not {value[:20]!r}")
    return int(value)


def _date(value: str, name: str) -> str:
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise InvalidQuery(
            f"{name} must be a date YYYYMMDD or a range YYYYMMDD-YYYYMMDD, not {value[:40]!r}"
        ) from None
    if len(value) != 8:
        raise InvalidQuery(f"{name} must be a date YYYYMMDD, not {value[:40]!r}")
    return value


def _dates(value: str, name: str) -> tuple[str | None, str | None, bool]:
    """(from, to, single): bounds of a DA value or range."""
    start, dash, end = value.partition("-")
    if not dash:
        day = _date(value, name)
        return day, day, True
    if not start and not end:
        raise InvalidQuery(f"{name} range {value!r} has no bound")
    low = _date(start, name) if start else None
    high = _date(end, name) if end else None
    if low and high and low > high:
        raise InvalidQuery(f"{name} range {value!r} ends before it starts")
    return low, high, False


def _time_bounds(value: str, name: str) -> tuple[str, str]:
    """The first and last moment a TM value of any precision stands for, as `HHMMSS[.FFFFFF]`."""
    match = _TIME.match(value)
    if not match:
        raise InvalidQuery(f"{name} must be a time HHMMSS[.FFFFFF] (or HH, HHMM), not {value!r}")
    hours, minutes, seconds, fraction = match.groups()
    if int(hours) > 23 or int(minutes or 0) > 59 or int(seconds or 0) > 60:
        raise InvalidQuery(f"{name} {value!r} is not a time of day")
    if fraction and not seconds:
        raise InvalidQuery(f"{name} {value!r} has a fraction without seconds")
    start = hours + (minutes or "00") + (seconds or "00") + (fraction or "")
    if fraction:
        end = hours + minutes + seconds + fraction.ljust(7, "9")
    else:
        end = hours + (minutes or "59") + (seconds or "59") + ".999999"
    return start, end


def _times(value: str, name: str) -> tuple[str | None, str | None]:
    start, dash, end = value.partition("-")
    if not dash:
        return _time_bounds(value, name)
    if not start and not end:
        raise InvalidQuery(f"{name} range {value!r} has no bound")
    low = _time_bounds(start, name)[0] if start else None
    high = _time_bounds(end, name)[1] if end else None
    if low and high and low > high:
        raise InvalidQuery(f"{name} range {value!r} ends before it starts")
    return low, high
