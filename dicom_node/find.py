"""C-FIND SCP (PS3.4 C.4.1): Patient Root and Study Root queries at every level.

The identifier's QueryRetrieveLevel decides what is searched; its keys with values are matched
by the rules in `arkiv.query_keys` (shared with QIDO-RS), and every key it holds is answered:
with the archive's value, or empty when the archive holds none. Results are fetched from the
index a page at a time through the access path (each page is authorised, scoped to the peer's
county and audited as a Query event before it is sent), and a C-CANCEL is honoured between
answers.

Failures carry an Error Comment saying what to change: 0xA900 when the identifier does not fit
the model (no or unknown level, PATIENT under Study Root, a key below the query level), 0xC000
when a value cannot be understood or a key cannot be matched, 0xA700 beyond
`dicom_find_max_results` answers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.events import Event as DimseEvent

from arkiv import query_keys
from arkiv.accounts import Principal
from arkiv.errors import ArkivError, Forbidden, InvalidQuery
from arkiv.query_keys import IMAGE, LEVELS, PATIENT, SERIES, STUDY
from arkiv.services import Archive
from dicom_node import peers, statuses
from dicom_node.handlers import caller_of, refuse_service
from dicom_node.peers import PeerPolicy
from storage.records import (
    PatientSummary,
    SeriesSummary,
    StoredInstance,
    StudyQuery,
    StudySummary,
)

log = logging.getLogger(__name__)

PENDING = 0xFF00
CANCELLED = 0xFE00
PAGE_SIZE = 200

PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"
MODEL_NAMES = {PATIENT_ROOT: "PATIENT ROOT", STUDY_ROOT: "STUDY ROOT"}

_UNIQUE_KEYS = {
    PATIENT: "PatientID",
    STUDY: "StudyInstanceUID",
    SERIES: "SeriesInstanceUID",
    IMAGE: "SOPInstanceUID",
}
_CONTROL_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet"}
_ALWAYS_ANSWERED = {"RetrieveAETitle", "InstanceAvailability"}
"""Keys the archive answers although they are no attribute of the objects it stores."""

Record = PatientSummary | StudySummary | SeriesSummary | StoredInstance


class IdentifierMismatch(ArkivError):
    """The identifier does not fit the information model (answered with 0xA900)."""


@dataclass(frozen=True)
class FindRequest:
    """A C-FIND identifier read: where to search, what to match, what to answer."""

    model: str
    level: str
    query: StudyQuery
    answer_keys: tuple[tuple[str, int, str], ...]
    """(keyword, tag, VR) of every key to answer, in the identifier's order."""
    charset: str
    matched: tuple[tuple[str, str], ...]

    def query_text(self) -> str:
        keys = " ".join(f"{name}={value}" for name, value in self.matched)
        return f"C-FIND {MODEL_NAMES[self.model]} {self.level} {keys}".strip()


def parse_request(identifier: Dataset, model: str) -> FindRequest:
    """The identifier as a FindRequest; IdentifierMismatch or InvalidQuery say what is wrong."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS:
        raise IdentifierMismatch(
            f"QueryRetrieveLevel must be one of {', '.join(LEVELS)}, not {level or 'missing'!r}"
        )
    if model == STUDY_ROOT and level == PATIENT:
        raise IdentifierMismatch("Study Root has no PATIENT level; use Patient Root")
    depth = LEVELS.index(level)
    query = StudyQuery()
    answers: list[tuple[str, int, str]] = []
    matched: list[tuple[str, str]] = []
    for element in identifier:
        name = element.keyword
        if not name or name in _CONTROL_KEYS or element.tag.group in (0x0000, 0x0002):
            continue
        answers.append((name, int(element.tag), str(element.VR)))
        if element.VR == "SQ":
            if element.value:
                raise InvalidQuery(f"matching on the sequence {name} is not supported")
            continue
        value = _text(element.value)
        key_level = query_keys.level_of(name)
        if value and key_level is not None and LEVELS.index(key_level) > depth:
            raise IdentifierMismatch(f"{name} is below the {level} level of this query")
        if value and name not in _ALWAYS_ANSWERED:
            query = query_keys.apply_key(query, name, value)
        matched.append((name, value))
    charset = identifier.get("SpecificCharacterSet", "") or ""
    if isinstance(charset, MultiValue | list):
        charset = charset[-1] if charset else ""
    return FindRequest(model, level, query, tuple(answers), str(charset), tuple(matched))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_text(v) for v in value)
    return str(value).strip()


def _failure(code: int, message: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = statuses.comment(message)
    return status


def handle_find(
    event: DimseEvent, archive: Archive, policy: PeerPolicy
) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """Answer one C-FIND; every outcome is a status, never an exception into pynetdicom."""
    try:
        model = str(event.request.AffectedSOPClassUID)
        identifier = event.identifier
        refused = refuse_service(event, archive, policy, peers.FIND, {"sop_class_uid": model})
        if refused is not None:
            yield refused, None
            return
        if model not in MODEL_NAMES:
            yield _failure(statuses.DATASET_DOES_NOT_MATCH, f"unknown model {model}"), None
            return
        request = parse_request(identifier, model)
        principal = policy.principal(caller_of(event.assoc))
        yield from _answers(event, archive, principal, request)
    except IdentifierMismatch as exc:
        log.info("C-FIND refused: %s", exc)
        yield _failure(statuses.DATASET_DOES_NOT_MATCH, str(exc)), None
    except (InvalidQuery, ValueError) as exc:
        log.info("C-FIND refused: %s", exc)
        yield _failure(statuses.CANNOT_UNDERSTAND, str(exc)), None
    except Forbidden as exc:
        yield _failure(statuses.NOT_AUTHORIZED, str(exc)), None
    except Exception as exc:  # the node must answer and keep serving, whatever happened
        log.exception("C-FIND failed unexpectedly")
        yield _failure(statuses.CANNOT_UNDERSTAND, f"internal error: {type(exc).__name__}"), None


def _answers(
    event: DimseEvent, archive: Archive, principal: Principal, request: FindRequest
) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    limit = archive.settings.dicom_find_max_results
    for sent, record in enumerate(_records(archive, principal, request, limit + 1)):
        if event.is_cancelled:
            yield CANCELLED, None
            return
        if sent >= limit:
            yield (
                _failure(
                    statuses.OUT_OF_RESOURCES,
                    f"more than {limit} matches; narrow the query",
                ),
                None,
            )
            return
        yield PENDING, answer(record, request, archive.settings.ae_title)
    if event.is_cancelled:
        yield CANCELLED, None
        return
    yield statuses.SUCCESS, None


def _records(
    archive: Archive, principal: Principal, request: FindRequest, most: int
) -> Iterator[Record]:
    """Matching records a page at a time, each page searched (and audited) when it is needed."""
    offset = 0
    while offset < most:
        size = min(PAGE_SIZE, most - offset)
        page = _search(
            archive,
            principal,
            request.level,
            replace(request.query, limit=size, offset=offset),
            request.query_text(),
        )
        yield from page
        if len(page) < size:
            return
        offset += size


def _search(
    archive: Archive, principal: Principal, level: str, query: StudyQuery, text: str
) -> Sequence[Record]:
    access = archive.access
    if level == PATIENT:
        return access.search_patients(principal, query, text)
    if level == STUDY:
        return access.search_studies(principal, query, text)
    if level == SERIES:
        return access.search_series(principal, query, text)
    return access.search_instances(principal, query, text)


def _values(record: Record, level: str, ae_title: str) -> dict[str, Any]:
    """What the archive can answer for a record, by keyword (None when it holds no value)."""
    values: dict[str, Any] = {"RetrieveAETitle": ae_title, "InstanceAvailability": "ONLINE"}
    if isinstance(record, PatientSummary | StudySummary):
        values |= {
            "PatientID": record.patient_id,
            "PatientName": record.patient_name,
            "PatientBirthDate": record.birth_date,
            "PatientSex": record.sex,
        }
    if isinstance(record, PatientSummary):
        values |= {
            "NumberOfPatientRelatedStudies": record.study_count,
            "NumberOfPatientRelatedSeries": record.series_count,
            "NumberOfPatientRelatedInstances": record.instance_count,
        }
    elif isinstance(record, StudySummary):
        values |= {
            "StudyInstanceUID": record.study_uid,
            "StudyDate": record.study_date,
            "StudyTime": record.study_time,
            "AccessionNumber": record.accession_number,
            "StudyID": record.study_id,
            "StudyDescription": record.description,
            "ReferringPhysicianName": record.referring_physician,
            "ModalitiesInStudy": list(record.modalities),
            "NumberOfStudyRelatedSeries": record.series_count,
            "NumberOfStudyRelatedInstances": record.instance_count,
        }
    elif isinstance(record, SeriesSummary):
        values |= {
            "PatientID": record.patient_id,
            "StudyInstanceUID": record.study_uid,
            "SeriesInstanceUID": record.series_uid,
            "Modality": record.modality,
            "SeriesNumber": record.series_number,
            "SeriesDescription": record.description,
            "BodyPartExamined": record.body_part,
            "NumberOfSeriesRelatedInstances": record.instance_count,
        }
    else:
        values |= {
            "PatientID": record.patient_id,
            "StudyInstanceUID": record.study_uid,
            "SeriesInstanceUID": record.series_uid,
            "SOPInstanceUID": record.sop_uid,
            "SOPClassUID": record.sop_class_uid,
            "InstanceNumber": record.instance_number,
            "Rows": record.rows,
            "Columns": record.columns,
            "NumberOfFrames": record.frames,
        }
    return values


def answer(record: Record, request: FindRequest, ae_title: str) -> Dataset:
    """One pending answer: QueryRetrieveLevel, Specific Character Set, the unique keys down to
    the query level, and every requested key (empty when the archive holds no value)."""
    values = _values(record, request.level, ae_title)
    result = Dataset()
    result.QueryRetrieveLevel = request.level
    keys = list(request.answer_keys)
    requested = {name for name, _, _ in keys}
    depth = LEVELS.index(request.level)
    unique = [_UNIQUE_KEYS[lvl] for lvl in LEVELS[: depth + 1]]
    if request.model == STUDY_ROOT:
        unique = [k for k in unique if k != "PatientID"]
    for name in unique:
        if name not in requested:
            keys.append((name, 0, ""))
    texts: list[str] = []
    for name, tag, vr in keys:
        value = values.get(name)
        if name in values and value not in (None, "", []):
            setattr(result, name, value)
            texts.extend(value if isinstance(value, list) else [str(value)])
        else:
            chosen_vr = vr or dictionary_VR(name)
            result.add_new(tag or name, chosen_vr, None)
    charset = response_charset(request.charset, texts)
    if charset:
        result.SpecificCharacterSet = charset
    return result


def response_charset(requested: str, texts: Sequence[str]) -> str:
    """The requester's character set if every value fits it, else ISO_IR 192 (UTF-8); empty
    (the default repertoire) when the requester named none and every value is ASCII."""
    encodings = {"": "ascii", "ISO_IR 6": "ascii", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}
    encoding = encodings.get(requested.strip())
    if encoding is not None:
        try:
            for text in texts:
                text.encode(encoding)
        except UnicodeEncodeError:
            return "ISO_IR 192"
        return requested.strip()
    return "ISO_IR 192"
