"""The audit log in the formats other systems read: CSV, FHIR R4 AuditEvent, DICOM AuditMessage.

Every function here is pure: it turns stored events (`storage.records.AuditEvent`) into text or
JSON-ready dicts and does no I/O, so the same code serves `arkiv audit export`, the auditor's HTTP
API and the syslog forwarder, and an export can never differ from what is forwarded.

Why three formats:

* CSV is what an auditor (personvernombud) opens in a spreadsheet. Spreadsheets execute cells that
  start with `=`, `+`, `-` or `@`, and a patient ID, a user name or a query string comes from
  outside; such cells get a leading apostrophe so they are shown, never run.
* FHIR R4 AuditEvent (IHE BALP patterns; a Bundle is the ITI-81 answer) is what an audit record
  repository or a patient portal ("innsyn i logg") consumes.
* DICOM PS3.15 A.5 AuditMessage XML is what ATNA audit record repositories receive over syslog
  (ITI-20); `arkiv.audit_syslog` frames exactly these messages.

Three things travel with every event in both structured formats, because a consumer cannot get
them anywhere else: the sequence number (so duplicates from at-least-once forwarding are
recognised, and gaps are visible), the chain hash (so a copy can be checked against the archive's
chain), and the counties that own the data (three separate data controllers, so each consumer
must be able to filter by controller).
"""

from __future__ import annotations

import base64
import csv
import io
import ipaddress
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from arkiv.counties import organisation_name
from storage.records import AuditEvent

__all__ = [
    "ACT_REASON_SYSTEM",
    "CSV_COLUMNS",
    "DCM_SYSTEM",
    "DNR_SYSTEM",
    "FNR_SYSTEM",
    "csv_rows",
    "dicom_audit_lines",
    "dicom_audit_message",
    "fhir_audit_event",
    "fhir_bundle",
    "patient_identifier_system",
]

# -- code systems ----------------------------------------------------------------------------------

DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
"""Fødselsnummer (Folkeregisteret), the identifier system used by the Norwegian FHIR profiles."""
DNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.2"
"""D-nummer."""
ACT_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_REASON_OID = "2.16.840.1.113883.5.8"
"""The same code system as an OID: the DICOM message names coding schemes, not URLs."""
OUTCOME_SYSTEM = "http://hl7.org/fhir/audit-event-outcome"
ENTITY_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/security-source-type"
PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_CLASS_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
NETWORK_TYPE_SYSTEM = "http://hl7.org/fhir/network-type"
DICOM_UID_SYSTEM = "urn:dicom:uid"

ARKIV_NAMESPACE = "urn:arkiv"
"""Our own names (extensions, counties, roles). Replace with a registered namespace (e.g. an OID
under the counties' organisation numbers) when one is assigned; consumers match on these."""
COUNTY_SYSTEM = f"{ARKIV_NAMESPACE}:county"
ROLE_SYSTEM = f"{ARKIV_NAMESPACE}:role"
RECORD_EXTENSION = f"{ARKIV_NAMESPACE}:fhir:StructureDefinition:audit-record"
ACTOR_COUNTY_EXTENSION = f"{ARKIV_NAMESPACE}:fhir:StructureDefinition:actor-county"
PRIVATE_SCHEME = "99ARKIV"
"""DICOM private coding scheme designator (private ones start with 99, e.g. 99DCM4CHEE)."""

_OUTCOMES = {0: "0", 4: "4", 8: "8", 12: "12"}
_ACTIONS = frozenset("CRUDE")
_ACT_REASONS = {
    "ETREAT": "Emergency Treatment",
    "TREAT": "treatment",
    "BTG": "break the glass",
}
_SUBTYPE = re.compile(r"^\s*(\d{6})\s*(.*?)\s*$")
_QUERY_LEVELS = {
    "studies": "SearchForStudies",
    "series": "SearchForSeries",
    "instances": "SearchForInstances",
}

# -- CSV -------------------------------------------------------------------------------------------

CSV_COLUMNS: tuple[str, ...] = (
    "seq",
    "recorded_at",
    "event_id",
    "event_name",
    "action",
    "outcome",
    "outcome_description",
    "actor",
    "actor_role",
    "county",
    "source_address",
    "patient_ids",
    "study_uids",
    "object_count",
    "counties",
    "details",
    "hash",
)

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _neutralise(cell: str) -> str:
    """A cell a spreadsheet would evaluate is prefixed with `'`, which shows it as plain text."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def _compact_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _csv_cells(event: AuditEvent) -> list[str]:
    return [
        str(event.seq),
        event.recorded_at,
        event.event_id,
        event.event_name,
        event.action,
        str(event.outcome),
        event.outcome_description,
        event.actor,
        event.actor_role,
        event.county,
        event.source_address,
        " ".join(event.patient_ids),
        " ".join(event.study_uids),
        str(event.object_count),
        " ".join(event.counties),
        _compact_json(event.details),
        event.hash,
    ]


def _csv_line(cells: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([_neutralise(c) for c in cells])
    return buffer.getvalue()


def csv_rows(events: Iterable[AuditEvent]) -> Iterator[str]:
    """The header, then one RFC 4180 record (ending in CRLF) per event; join them for a file.

    Lazy, so a whole log can be streamed to an HTTP response without holding it in memory.
    A quoted cell may contain line breaks; parse the output with a CSV reader, not by lines.
    """
    yield _csv_line(CSV_COLUMNS)
    for event in events:
        yield _csv_line(_csv_cells(event))


# -- shared interpretation -------------------------------------------------------------------------


def patient_identifier_system(patient_id: str) -> str | None:
    """The FHIR identifier system of a Norwegian national ID, or None for anything else.

    Read from the shape alone (11 digits; first digit 0-3 fødselsnummer, 4-7 D-nummer), not from
    the check digits: the archive stores IDs as the modality sent them, and an auditor must still
    find a mistyped number under the register it was meant for. H-numbers (month + 40) are local
    to the hospital that issued them and their OID is not confirmed, so they get no system.
    Synthetic test numbers (month + 80) are test fødselsnummer and keep the fødselsnummer system.
    """
    digits = patient_id.strip()
    if len(digits) != 11 or not digits.isascii() or not digits.isdigit():
        return None
    if digits[2] in "45":
        return None
    first = int(digits[0])
    if first <= 3:
        return FNR_SYSTEM
    if first <= 7:
        return DNR_SYSTEM
    return None


def _subtype(event: AuditEvent) -> tuple[str, str] | None:
    """The coded subtype in details ("110122 Login"), or None when it is free text or absent."""
    match = _SUBTYPE.match(str(event.details.get("subtype", "")))
    return (match.group(1), match.group(2)) if match else None


def _purposes(event: AuditEvent) -> list[str]:
    """Why data was reached outside the ordinary rules, as v3-ActReason codes.

    The grant itself records the clinician's purpose (ETREAT for acute treatment, TREAT
    otherwise); a read under a grant is marked break-the-glass (BTG) and points back to it.
    """
    purpose = str(event.details.get("purpose_of_use", "")).strip().upper()
    if purpose in _ACT_REASONS:
        return [purpose]
    if event.details.get("break_glass"):
        return ["BTG"]
    return []


def _purpose_text(event: AuditEvent) -> str:
    parts = [str(event.details.get(k, "")).strip() for k in ("reason", "free_text")]
    return " — ".join(p for p in parts if p)


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _query_object_id(event: AuditEvent) -> str:
    return _QUERY_LEVELS.get(str(event.details.get("level", "")), "Query")


# -- FHIR R4 AuditEvent ----------------------------------------------------------------------------


def _coding(system: str, code: str, display: str = "") -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _concept(system: str, code: str, display: str = "") -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)]}


def _requestor_type(event: AuditEvent) -> dict[str, Any]:
    """BALP's agent types: a user reading or searching is the information recipient (IRCP), one
    who creates or changes is an agent (AGNT); a DICOM node or service is the source (110153);
    the archive acting on its own is the application (110150)."""
    if event.actor_kind == "user":
        if event.action in ("C", "U", "D"):
            return _concept(ROLE_CLASS_SYSTEM, "AGNT", "agent")
        return _concept(PARTICIPATION_SYSTEM, "IRCP", "information recipient")
    if event.actor_kind == "system":
        return _concept(DCM_SYSTEM, "110150", "Application")
    return _concept(DCM_SYSTEM, "110153", "Source Role ID")


def _fhir_agents(event: AuditEvent, source_id: str) -> list[dict[str, Any]]:
    who: dict[str, Any] = {"identifier": {"value": event.actor or "unknown"}}
    if event.actor:
        who["display"] = event.actor
    requestor: dict[str, Any] = {
        "type": _requestor_type(event),
        "who": who,
        "requestor": True,
    }
    if event.actor_role:
        requestor["role"] = [
            {"coding": [_coding(ROLE_SYSTEM, event.actor_role)], "text": event.actor_role}
        ]
    if event.county:
        requestor["extension"] = [{"url": ACTOR_COUNTY_EXTENSION, "valueCode": event.county}]
    if event.source_address:
        requestor["network"] = {
            "address": event.source_address,
            "type": "2" if _is_ip(event.source_address) else "1",
        }
    purposes = _purposes(event)
    if purposes:
        requestor["purposeOfUse"] = [
            _concept(ACT_REASON_SYSTEM, code, _ACT_REASONS[code]) for code in purposes
        ]
    agents = [requestor]
    if event.actor_kind != "system":
        agents.append(
            {
                "type": _concept(DCM_SYSTEM, "110152", "Destination Role ID"),
                "who": {"identifier": {"value": source_id}, "display": source_id},
                "requestor": False,
            }
        )
    for county in event.counties:
        # The data controllers: custodians of the records the event concerns (BALP uses CST).
        agents.append(
            {
                "type": _concept(PARTICIPATION_SYSTEM, "CST", "custodian"),
                "who": {
                    "identifier": {"system": COUNTY_SYSTEM, "value": county},
                    "display": organisation_name(county),
                },
                "requestor": False,
            }
        )
    return agents


def _fhir_entities(event: AuditEvent) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    for patient_id in event.patient_ids:
        identifier: dict[str, Any] = {"value": patient_id}
        system = patient_identifier_system(patient_id)
        if system is not None:
            identifier["system"] = system
        entities.append(
            {
                "what": {"identifier": identifier},
                "type": _coding(ENTITY_TYPE_SYSTEM, "1", "Person"),
                "role": _coding(OBJECT_ROLE_SYSTEM, "1", "Patient"),
            }
        )
    for study_uid in event.study_uids:
        entities.append(
            {
                "what": {
                    "identifier": {
                        "type": _concept(DCM_SYSTEM, "110180", "Study Instance UID"),
                        "system": DICOM_UID_SYSTEM,
                        "value": f"urn:oid:{study_uid}",
                    }
                },
                "type": _coding(ENTITY_TYPE_SYSTEM, "2", "System Object"),
                "role": _coding(OBJECT_ROLE_SYSTEM, "3", "Report"),
            }
        )
    if event.query:
        entities.append(
            {
                "type": _coding(ENTITY_TYPE_SYSTEM, "2", "System Object"),
                "role": _coding(OBJECT_ROLE_SYSTEM, "24", "Query"),
                "description": _query_object_id(event),
                "query": _b64(event.query),
                "detail": [{"type": "QueryEncoding", "valueString": "UTF-8"}],
            }
        )
    return entities


def _record_extension(event: AuditEvent) -> dict[str, Any]:
    """The chain and the fields FHIR has no element for, so nothing the archive knows is lost."""
    parts: list[dict[str, Any]] = [
        {"url": "seq", "valueString": str(event.seq)},
        {"url": "hash", "valueString": event.hash},
        {"url": "prevHash", "valueString": event.prev_hash},
        {"url": "objectCount", "valueInteger": event.object_count},
    ]
    if event.actor_kind:
        parts.append({"url": "actorKind", "valueCode": event.actor_kind})
    if event.details:
        parts.append({"url": "details", "valueString": _compact_json(event.details)})
    return {"url": RECORD_EXTENSION, "extension": parts}


def fhir_audit_event(event: AuditEvent, source_id: str) -> dict[str, Any]:
    """One event as a FHIR R4 AuditEvent resource (JSON-ready), following IHE BALP.

    `source_id` is the observer: the archive's AE title. The owning counties appear twice: as
    custodian agents (the data controllers, named) and as `meta.tag`, which every FHIR server can
    search (`_tag=urn:arkiv:county|vestfold`). FHIR forbids empty strings, so absent values are
    left out rather than sent empty.
    """
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(event.seq),
        "meta": {
            "versionId": "1",
            "lastUpdated": event.recorded_at,
        },
        "extension": [_record_extension(event)],
        "type": _coding(DCM_SYSTEM, event.event_id, event.event_name),
    }
    if event.counties:
        resource["meta"]["tag"] = [
            _coding(COUNTY_SYSTEM, county, organisation_name(county)) for county in event.counties
        ]
    subtype = _subtype(event)
    if subtype is not None:
        resource["subtype"] = [_coding(DCM_SYSTEM, *subtype)]
    if event.action in _ACTIONS:
        resource["action"] = event.action
    resource["recorded"] = event.recorded_at
    resource["outcome"] = _OUTCOMES.get(event.outcome, "12")
    if event.outcome_description:
        resource["outcomeDesc"] = event.outcome_description
    purposes = _purposes(event)
    if purposes:
        text = _purpose_text(event)
        resource["purposeOfEvent"] = [
            {
                "coding": [_coding(ACT_REASON_SYSTEM, code, _ACT_REASONS[code])],
                **({"text": text} if text else {}),
            }
            for code in purposes
        ]
    resource["agent"] = _fhir_agents(event, source_id)
    resource["source"] = {
        "observer": {"identifier": {"value": source_id}, "display": source_id},
        "type": [_coding(SOURCE_TYPE_SYSTEM, "4", "Application Server")],
    }
    entities = _fhir_entities(event)
    if entities:
        resource["entity"] = entities
    cleaned: dict[str, Any] = _clean(resource)
    return cleaned


def _clean(value: Any) -> Any:
    """Every string with characters FHIR (like XML) cannot carry replaced, recursively: values
    from outside (a Patient ID, an error text) must not make the whole resource invalid."""
    if isinstance(value, str):
        return _xml_text(value)
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def fhir_bundle(
    events: Sequence[AuditEvent],
    source_id: str,
    self_url: str,
    *,
    total: int | None = None,
    next_url: str | None = None,
) -> dict[str, Any]:
    """A FHIR searchset Bundle of AuditEvents: the answer to an ITI-81 query.

    `self_url` is the absolute URL of the search as asked (FHIR wants absolute URLs); each
    entry's `fullUrl` is `<base>/AuditEvent/<seq>` derived from it. `total` is the number of
    matches of the whole search when the page holds only part of them; `next_url` links the
    following page.
    """
    base = self_url.split("?", 1)[0].rstrip("/")
    if not base.endswith("/AuditEvent"):
        base = f"{base}/AuditEvent"
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(events) if total is None else total,
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base}/{event.seq}",
                "resource": fhir_audit_event(event, source_id),
                "search": {"mode": "match"},
            }
            for event in events
        ],
    }


# -- DICOM PS3.15 A.5 AuditMessage -----------------------------------------------------------------

_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


def _xml_text(value: str) -> str:
    """Characters XML 1.0 cannot carry at all (NUL, ESC, lone surrogates) become U+FFFD, since a
    Patient ID or a query from outside could hold them and the message must still parse."""
    return _XML_ILLEGAL.sub("\ufffd", value)


def _sub(parent: ET.Element, tag: str, **attributes: str) -> ET.Element:
    return ET.SubElement(parent, tag, {k: _xml_text(v) for k, v in attributes.items() if v})


def _code(parent: ET.Element, tag: str, code: str, scheme: str, text: str) -> ET.Element:
    return _sub(parent, tag, **{"csd-code": code, "codeSystemName": scheme, "originalText": text})


def _text_element(parent: ET.Element, tag: str, text: str) -> None:
    element = ET.SubElement(parent, tag)
    element.text = _xml_text(text)


def _detail(parent: ET.Element, kind: str, value: str) -> None:
    _sub(parent, "ParticipantObjectDetail", type=kind, value=_b64(value))


def _participant_user_type(event: AuditEvent) -> tuple[str, tuple[str, str] | None]:
    """UserTypeCode (1 person, 2 application) and the DCM UserIDTypeCode of the requestor: a
    person's user name, or an AE title (a DICOM node, or the archive itself); a service account
    of an API client is an application with no DICOM ID type."""
    if event.actor_kind == "user":
        return "1", ("113871", "Person ID")
    if event.actor_kind in ("dicom-ae", "system"):
        return "2", ("110119", "Station AE Title")
    return "2", None


def _event_identification(root: ET.Element, event: AuditEvent) -> None:
    identification = _sub(
        root,
        "EventIdentification",
        EventActionCode=event.action if event.action in _ACTIONS else "E",
        EventDateTime=event.recorded_at,
        EventOutcomeIndicator=_OUTCOMES.get(event.outcome, "12"),
    )
    _code(identification, "EventID", event.event_id, "DCM", event.event_name)
    subtype = _subtype(event)
    if subtype is not None:
        _code(identification, "EventTypeCode", subtype[0], "DCM", subtype[1])
    if event.outcome_description:
        _text_element(identification, "EventOutcomeDescription", event.outcome_description)
    for code in _purposes(event):
        _code(identification, "PurposeOfUse", code, ACT_REASON_OID, _ACT_REASONS[code])


def _active_participants(root: ET.Element, event: AuditEvent, source_id: str) -> None:
    user_type, id_type = _participant_user_type(event)
    address = event.source_address
    requestor = _sub(
        root,
        "ActiveParticipant",
        UserID=event.actor or "unknown",
        UserIsRequestor="true",
        NetworkAccessPointID=address,
        NetworkAccessPointTypeCode=("2" if _is_ip(address) else "1") if address else "",
        UserTypeCode=user_type,
    )
    if event.actor_kind == "system":
        _code(requestor, "RoleIDCode", "110150", "DCM", "Application")
    else:
        _code(requestor, "RoleIDCode", "110153", "DCM", "Source Role ID")
    if event.actor_role:
        _code(requestor, "RoleIDCode", event.actor_role, PRIVATE_SCHEME, event.actor_role)
    if id_type is not None:
        _code(requestor, "UserIDTypeCode", id_type[0], "DCM", id_type[1])
    if event.actor_kind != "system":
        archive = _sub(
            root,
            "ActiveParticipant",
            UserID=source_id,
            UserIsRequestor="false",
            UserTypeCode="2",
        )
        _code(archive, "RoleIDCode", "110152", "DCM", "Destination Role ID")
        _code(archive, "UserIDTypeCode", "110119", "DCM", "Station AE Title")


def _patient_object_id(patient_id: str) -> str:
    """HL7 CX form (`ID^^^&OID&ISO`) for national IDs, as IHE asks of patient objects, so the
    register is explicit; other IDs as stored."""
    system = patient_identifier_system(patient_id)
    if system is None:
        return patient_id
    return f"{patient_id}^^^&{system.removeprefix('urn:oid:')}&ISO"


def _participant_objects(root: ET.Element, event: AuditEvent) -> None:
    for patient_id in event.patient_ids:
        patient = _sub(
            root,
            "ParticipantObjectIdentification",
            ParticipantObjectID=_patient_object_id(patient_id),
            ParticipantObjectTypeCode="1",
            ParticipantObjectTypeCodeRole="1",
        )
        _code(patient, "ParticipantObjectIDTypeCode", "2", "RFC-3881", "Patient Number")
    for study_uid in event.study_uids:
        study = _sub(
            root,
            "ParticipantObjectIdentification",
            ParticipantObjectID=study_uid,
            ParticipantObjectTypeCode="2",
            ParticipantObjectTypeCodeRole="3",
        )
        _code(study, "ParticipantObjectIDTypeCode", "110180", "DCM", "Study Instance UID")
    if event.query:
        query = _sub(
            root,
            "ParticipantObjectIdentification",
            ParticipantObjectID=_query_object_id(event),
            ParticipantObjectTypeCode="2",
            ParticipantObjectTypeCodeRole="24",
        )
        _code(query, "ParticipantObjectIDTypeCode", "10", "RFC-3881", "Search Criteria")
        _text_element(query, "ParticipantObjectQuery", _b64(event.query))
        _detail(query, "QueryEncoding", "UTF-8")
    # The log record itself: its place in the chain (seq identifies duplicates after a resend),
    # its hash, and what the DICOM schema has no attribute for.
    record = _sub(
        root,
        "ParticipantObjectIdentification",
        ParticipantObjectID=str(event.seq),
        ParticipantObjectTypeCode="2",
        ParticipantObjectTypeCodeRole="13",
    )
    _code(record, "ParticipantObjectIDTypeCode", "seq", PRIVATE_SCHEME, "Audit Record Sequence")
    _detail(record, "hash", event.hash)
    _detail(record, "prevHash", event.prev_hash)
    _detail(record, "counties", " ".join(event.counties))
    _detail(record, "actorCounty", event.county)
    _detail(record, "actorKind", event.actor_kind)
    _detail(record, "objectCount", str(event.object_count))
    if event.details:
        _detail(record, "details", _compact_json(event.details))


def dicom_audit_message(event: AuditEvent, source_id: str) -> str:
    """One event as a DICOM PS3.15 A.5 AuditMessage, with an XML declaration, on one line.

    Built with ElementTree so every value is escaped; line breaks inside text become character
    references, so a message never spans lines (one per line in an export, one per syslog frame).
    `source_id` is the AuditSourceID, the archive's AE title.
    """
    root = ET.Element("AuditMessage")
    _event_identification(root, event)
    _active_participants(root, event, source_id)
    source = _sub(root, "AuditSourceIdentification", AuditSourceID=source_id)
    _code(source, "AuditSourceTypeCode", "4", "DCM", "Application Server Process")
    _participant_objects(root, event)
    body = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    # ElementTree escapes line breaks in attributes but writes them raw in text; as character
    # references they mean the same to a parser and keep the message on one line.
    body = body.replace("\r", "&#13;").replace("\n", "&#10;")
    return _XML_DECLARATION + body


def dicom_audit_lines(events: Iterable[AuditEvent], source_id: str) -> Iterator[str]:
    """One AuditMessage per line (each ending in a newline), for an export file."""
    for event in events:
        yield dicom_audit_message(event, source_id) + "\n"
