"""Audit exports: CSV an auditor can open safely, FHIR R4 AuditEvent (IHE BALP) and its ITI-81
search Bundle, and DICOM PS3.15 AuditMessage XML — each read back with a real parser."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any

import pytest

from arkiv.audit import Actor, Event, EventType, Outcome
from arkiv.audit_export import (
    CSV_COLUMNS,
    DCM_SYSTEM,
    DNR_SYSTEM,
    FNR_SYSTEM,
    csv_rows,
    dicom_audit_lines,
    dicom_audit_message,
    fhir_audit_event,
    fhir_bundle,
    patient_identifier_system,
)
from arkiv.services import Archive
from storage.records import AuditEvent

FNR = "01017012345"
DNR = "41017012345"
HNR = "01417012345"
STUDY = "1.2.826.0.1.3680043.10.1"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def _event(**changes: Any) -> AuditEvent:
    base = AuditEvent(
        seq=17,
        recorded_at="2026-11-26T13:04:49.123456Z",
        event_id="110103",
        event_name="DICOM Instances Accessed",
        action="R",
        outcome=0,
        outcome_description="",
        actor="tannlege1",
        actor_kind="user",
        actor_role="clinician",
        county="vestfold",
        source_address="10.20.30.40",
        patient_ids=(FNR,),
        study_uids=(STUDY,),
        object_count=3,
        query="",
        details={"purpose": "retrieve", "series_uid": "1.2.3.4"},
        prev_hash="a" * 64,
        hash="b" * 64,
        counties=("vestfold",),
    )
    return replace(base, **changes)


# -- CSV -------------------------------------------------------------------------------------------


def _parse_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_csv_round_trips_through_a_csv_reader() -> None:
    events = [
        _event(),
        _event(
            seq=18,
            outcome=4,
            outcome_description='not found, "study" gone\nsecond line; æøå',
            patient_ids=(FNR, DNR),
            study_uids=("1.2.3", "1.2.4"),
            counties=("buskerud", "vestfold"),
            details={"break_glass": True, "foreign_counties": ["buskerud"]},
        ),
    ]
    rows = list(csv_rows(events))
    assert len(rows) == 3
    assert all(row.endswith("\r\n") for row in rows)
    parsed = _parse_csv("".join(rows))
    assert parsed[0] == list(CSV_COLUMNS)
    second = dict(zip(CSV_COLUMNS, parsed[2], strict=True))
    assert second["seq"] == "18"
    assert second["outcome"] == "4"
    assert second["outcome_description"] == 'not found, "study" gone\nsecond line; æøå'
    assert second["patient_ids"].split(" ") == [FNR, DNR]
    assert second["study_uids"] == "1.2.3 1.2.4"
    assert second["counties"] == "buskerud vestfold"
    assert json.loads(second["details"]) == {"break_glass": True, "foreign_counties": ["buskerud"]}
    assert second["hash"] == "b" * 64
    first = dict(zip(CSV_COLUMNS, parsed[1], strict=True))
    assert first["recorded_at"] == "2026-11-26T13:04:49.123456Z"
    assert first["actor_role"] == "clinician"
    assert first["source_address"] == "10.20.30.40"


@pytest.mark.parametrize("payload", ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx"])
def test_csv_neutralises_spreadsheet_formulas(payload: str) -> None:
    event = _event(actor=payload, outcome_description=payload, patient_ids=(payload,))
    parsed = _parse_csv("".join(csv_rows([event])))
    row = dict(zip(CSV_COLUMNS, parsed[1], strict=True))
    for column in ("actor", "outcome_description", "patient_ids"):
        assert row[column] == "'" + payload
    assert row["seq"] == "17"  # ordinary cells untouched


def test_csv_neutralises_carriage_return_start() -> None:
    parsed = _parse_csv("".join(csv_rows([_event(actor="\r=1")])))
    assert parsed[1][CSV_COLUMNS.index("actor")] == "'\r=1"


# -- identifiers -----------------------------------------------------------------------------------


def test_patient_identifier_systems() -> None:
    assert patient_identifier_system(FNR) == FNR_SYSTEM == "urn:oid:2.16.578.1.12.4.1.4.1"
    assert patient_identifier_system("31129912345") == FNR_SYSTEM
    assert patient_identifier_system(DNR) == DNR_SYSTEM == "urn:oid:2.16.578.1.12.4.1.4.2"
    assert patient_identifier_system("71129912345") == DNR_SYSTEM
    assert patient_identifier_system("01817012345") == FNR_SYSTEM  # synthetic test number
    assert patient_identifier_system(HNR) is None  # H-number: local to its hospital
    assert patient_identifier_system("81017012345") is None
    assert patient_identifier_system("PAT-0001") is None
    assert patient_identifier_system("0101701234") is None
    assert patient_identifier_system("٠١٠١٧٠١٢٣٤٥") is None  # non-ASCII digits


# -- FHIR ------------------------------------------------------------------------------------------

_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def _no_empty_values(value: Any, path: str = "") -> None:
    """FHIR JSON has no empty strings, arrays or objects."""
    if isinstance(value, dict):
        assert value, f"empty object at {path}"
        for key, item in value.items():
            _no_empty_values(item, f"{path}.{key}")
    elif isinstance(value, list):
        assert value, f"empty array at {path}"
        for number, item in enumerate(value):
            _no_empty_values(item, f"{path}[{number}]")
    elif isinstance(value, str):
        assert value.strip(), f"empty string at {path}"


def _assert_valid_r4_audit_event(resource: dict[str, Any]) -> None:
    """The structural rules of R4 AuditEvent: required elements and their types."""
    json.dumps(resource)  # plain JSON
    _no_empty_values(resource)
    assert resource["resourceType"] == "AuditEvent"
    assert set(resource["type"]) >= {"system", "code"}  # Coding 1..1
    for subtype in resource.get("subtype", []):
        assert set(subtype) >= {"system", "code"}
    assert resource.get("action", "E") in {"C", "R", "U", "D", "E"}
    assert _INSTANT.match(resource["recorded"])
    assert resource.get("outcome", "0") in {"0", "4", "8", "12"}
    agents = resource["agent"]
    assert agents
    for agent in agents:
        assert isinstance(agent["requestor"], bool)  # 1..1
        assert "who" in agent or "altId" in agent
        if "network" in agent:
            assert agent["network"]["type"] in {"1", "2", "3", "4", "5"}
    assert sum(agent["requestor"] for agent in agents) == 1
    source = resource["source"]
    assert source["observer"]  # Reference 1..1
    for coding in source.get("type", []):
        assert coding["system"] == "http://terminology.hl7.org/CodeSystem/security-source-type"
    for entity in resource.get("entity", []):
        assert not ("name" in entity and "query" in entity)  # sev-1
        if "query" in entity:
            base64.b64decode(entity["query"], validate=True)
        for detail in entity.get("detail", []):
            assert "type" in detail
            assert "valueString" in detail or "valueBase64Binary" in detail


def _entities(resource: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [e for e in resource.get("entity", []) if e["role"]["code"] == role]


def _record_extension(resource: dict[str, Any]) -> dict[str, Any]:
    (extension,) = resource["extension"]
    return {
        part["url"]: next(v for k, v in part.items() if k.startswith("value"))
        for part in extension["extension"]
    }


def test_fhir_audit_event_codes_and_structure() -> None:
    resource = fhir_audit_event(_event(patient_ids=(FNR, DNR, "PAT-1")), "ARKIV")
    _assert_valid_r4_audit_event(resource)
    assert resource["id"] == "17"
    assert resource["type"] == {
        "system": DCM_SYSTEM,
        "code": "110103",
        "display": "DICOM Instances Accessed",
    }
    assert resource["action"] == "R"
    assert resource["recorded"] == "2026-11-26T13:04:49.123456Z"
    assert resource["outcome"] == "0"
    requestor = next(a for a in resource["agent"] if a["requestor"])
    assert requestor["who"]["identifier"]["value"] == "tannlege1"
    assert requestor["network"] == {"address": "10.20.30.40", "type": "2"}
    assert requestor["role"][0]["text"] == "clinician"
    assert resource["source"]["observer"]["identifier"]["value"] == "ARKIV"
    assert resource["source"]["type"][0]["code"] == "4"

    patients = _entities(resource, "1")
    identifiers = [p["what"]["identifier"] for p in patients]
    assert identifiers == [
        {"system": FNR_SYSTEM, "value": FNR},
        {"system": DNR_SYSTEM, "value": DNR},
        {"value": "PAT-1"},
    ]
    assert all(p["type"]["code"] == "1" for p in patients)
    (study,) = _entities(resource, "3")
    assert study["what"]["identifier"]["value"] == f"urn:oid:{STUDY}"
    assert study["what"]["identifier"]["type"]["coding"][0]["code"] == "110180"
    assert study["type"]["code"] == "2"

    record = _record_extension(resource)
    assert record["seq"] == "17"
    assert record["hash"] == "b" * 64
    assert record["prevHash"] == "a" * 64
    assert json.loads(record["details"]) == {"purpose": "retrieve", "series_uid": "1.2.3.4"}


def test_fhir_carries_the_owning_counties() -> None:
    resource = fhir_audit_event(_event(counties=("buskerud", "vestfold")), "ARKIV")
    custodians = [
        a
        for a in resource["agent"]
        if a["type"]["coding"][0]["code"] == "CST" and not a["requestor"]
    ]
    assert [a["who"]["identifier"]["value"] for a in custodians] == ["buskerud", "vestfold"]
    assert custodians[0]["who"]["display"].startswith("Buskerud fylkeskommune")
    assert [t["code"] for t in resource["meta"]["tag"]] == ["buskerud", "vestfold"]


@pytest.mark.parametrize("outcome", [0, 4, 8, 12])
def test_fhir_outcome_codes(outcome: int) -> None:
    resource = fhir_audit_event(_event(outcome=outcome, outcome_description="why"), "ARKIV")
    assert resource["outcome"] == str(outcome)
    assert resource["outcomeDesc"] == "why"


def test_fhir_query_is_base64() -> None:
    query = "PatientID=01017012345&StudyDate=20260101-&limit=10"
    resource = fhir_audit_event(
        _event(event_id="110112", event_name="Query", action="E", query=query), "ARKIV"
    )
    _assert_valid_r4_audit_event(resource)
    (entity,) = _entities(resource, "24")
    assert base64.b64decode(entity["query"]).decode() == query
    assert entity["type"]["code"] == "2"


def test_fhir_break_the_glass_has_purpose_of_event() -> None:
    grant = _event(
        event_id="110113",
        event_name="Security Alert",
        action="E",
        counties=("telemark", "vestfold"),
        details={
            "subtype": "110127 Emergency Override Started",
            "purpose_of_use": "ETREAT",
            "reason_code": "akutt",
            "reason": "Akutt behandling",
            "free_text": "smerter",
        },
    )
    resource = fhir_audit_event(grant, "ARKIV")
    _assert_valid_r4_audit_event(resource)
    assert resource["subtype"] == [
        {"system": DCM_SYSTEM, "code": "110127", "display": "Emergency Override Started"}
    ]
    (purpose,) = resource["purposeOfEvent"]
    assert purpose["coding"][0] == {
        "system": ACT_REASON,
        "code": "ETREAT",
        "display": "Emergency Treatment",
    }
    assert "Akutt behandling" in purpose["text"] and "smerter" in purpose["text"]

    planned = replace(grant, details={**grant.details, "purpose_of_use": "TREAT"})
    assert fhir_audit_event(planned, "ARKIV")["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"

    reach = _event(details={"break_glass": True, "foreign_counties": ["telemark"]})
    codes = [c["coding"][0]["code"] for c in fhir_audit_event(reach, "ARKIV")["purposeOfEvent"]]
    assert codes == ["BTG"]
    assert "purposeOfEvent" not in fhir_audit_event(_event(), "ARKIV")


def test_fhir_login_subtype_and_system_actor() -> None:
    login = fhir_audit_event(
        _event(
            event_id="110114",
            event_name="User Authentication",
            action="E",
            patient_ids=(),
            study_uids=(),
            details={"subtype": "110122 Login"},
        ),
        "ARKIV",
    )
    _assert_valid_r4_audit_event(login)
    assert login["subtype"][0]["code"] == "110122"
    assert "entity" not in login

    start = fhir_audit_event(
        _event(
            event_id="110100",
            event_name="Application Activity",
            action="E",
            actor="ARKIV",
            actor_kind="system",
            actor_role="",
            source_address="",
            patient_ids=(),
            study_uids=(),
            details={"subtype": "110120 Application Start (DICOM worker)"},
        ),
        "ARKIV",
    )
    _assert_valid_r4_audit_event(start)
    assert start["subtype"][0] == {
        "system": DCM_SYSTEM,
        "code": "110120",
        "display": "Application Start (DICOM worker)",
    }
    uncoded = fhir_audit_event(_event(details={"subtype": "user disabled"}), "ARKIV")
    assert "subtype" not in uncoded


def test_fhir_strings_from_outside_cannot_break_the_resource() -> None:
    resource = fhir_audit_event(
        _event(patient_ids=("P\x00\x1b1",), outcome_description="bad\x07bell"), "ARKIV"
    )
    _assert_valid_r4_audit_event(resource)
    assert "\x00" not in json.dumps(resource, ensure_ascii=False)
    assert resource["outcomeDesc"] == "bad\ufffdbell"


def test_fhir_bundle_is_a_searchset() -> None:
    events = [_event(seq=n, hash=f"{n:064x}") for n in (3, 4, 5)]
    url = "https://arkiv.example/fhir/AuditEvent?patient=01017012345&date=ge2026-01-01"
    bundle = fhir_bundle(events, "ARKIV", url)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 3
    assert bundle["link"] == [{"relation": "self", "url": url}]
    assert [e["fullUrl"] for e in bundle["entry"]] == [
        f"https://arkiv.example/fhir/AuditEvent/{n}" for n in (3, 4, 5)
    ]
    for entry in bundle["entry"]:
        assert entry["search"] == {"mode": "match"}
        _assert_valid_r4_audit_event(entry["resource"])
    paged = fhir_bundle(events[:1], "ARKIV", url, total=40, next_url=url + "&_offset=1")
    assert paged["total"] == 40
    assert paged["link"][1]["relation"] == "next"
    empty = fhir_bundle([], "ARKIV", "https://arkiv.example/fhir/AuditEvent")
    assert empty["total"] == 0 and empty["entry"] == []


# -- DICOM -----------------------------------------------------------------------------------------


def _parse(message: str) -> ET.Element:
    assert "\n" not in message and "\r" not in message
    assert message.startswith('<?xml version="1.0" encoding="UTF-8"?><AuditMessage')
    return ET.fromstring(message.encode("utf-8"))


def _code(element: ET.Element | None) -> tuple[str | None, str | None, str | None]:
    assert element is not None
    return element.get("csd-code"), element.get("codeSystemName"), element.get("originalText")


def _objects(root: ET.Element) -> list[ET.Element]:
    return list(root.iter("ParticipantObjectIdentification"))


def test_dicom_audit_message_instances_accessed() -> None:
    root = _parse(dicom_audit_message(_event(patient_ids=(FNR, DNR, "PAT-1")), "ARKIV"))
    assert root.tag == "AuditMessage"
    identification = root.find("EventIdentification")
    assert identification is not None
    assert identification.get("EventActionCode") == "R"
    assert identification.get("EventDateTime") == "2026-11-26T13:04:49.123456Z"
    assert identification.get("EventOutcomeIndicator") == "0"
    assert _code(identification.find("EventID")) == ("110103", "DCM", "DICOM Instances Accessed")

    participants = root.findall("ActiveParticipant")
    requestor = next(p for p in participants if p.get("UserIsRequestor") == "true")
    assert requestor.get("UserID") == "tannlege1"
    assert requestor.get("NetworkAccessPointID") == "10.20.30.40"
    assert requestor.get("NetworkAccessPointTypeCode") == "2"
    archive = next(p for p in participants if p.get("UserIsRequestor") == "false")
    assert archive.get("UserID") == "ARKIV"
    assert _code(archive.find("RoleIDCode"))[0] == "110152"

    source = root.find("AuditSourceIdentification")
    assert source is not None and source.get("AuditSourceID") == "ARKIV"
    assert _code(source.find("AuditSourceTypeCode"))[0] == "4"

    patients = [o for o in _objects(root) if o.get("ParticipantObjectTypeCodeRole") == "1"]
    assert [p.get("ParticipantObjectID") for p in patients] == [
        f"{FNR}^^^&2.16.578.1.12.4.1.4.1&ISO",
        f"{DNR}^^^&2.16.578.1.12.4.1.4.2&ISO",
        "PAT-1",
    ]
    for patient in patients:
        assert patient.get("ParticipantObjectTypeCode") == "1"
        assert _code(patient.find("ParticipantObjectIDTypeCode")) == (
            "2",
            "RFC-3881",
            "Patient Number",
        )
    (study,) = [o for o in _objects(root) if o.get("ParticipantObjectTypeCodeRole") == "3"]
    assert study.get("ParticipantObjectID") == STUDY
    assert study.get("ParticipantObjectTypeCode") == "2"
    assert _code(study.find("ParticipantObjectIDTypeCode"))[0] == "110180"

    (record,) = [o for o in _objects(root) if o.get("ParticipantObjectTypeCodeRole") == "13"]
    assert record.get("ParticipantObjectID") == "17"
    details = {
        d.get("type"): base64.b64decode(d.get("value", "")).decode()
        for d in record.iter("ParticipantObjectDetail")
    }
    assert details["hash"] == "b" * 64
    assert details["counties"] == "vestfold"


def test_dicom_login_and_emergency_override_subtypes() -> None:
    login = _parse(
        dicom_audit_message(
            _event(
                event_id="110114",
                event_name="User Authentication",
                action="E",
                outcome=8,
                outcome_description="wrong password",
                patient_ids=(),
                study_uids=(),
                details={"subtype": "110122 Login"},
            ),
            "ARKIV",
        )
    )
    assert _code(login.find("EventIdentification/EventID"))[0] == "110114"
    assert _code(login.find("EventIdentification/EventTypeCode")) == ("110122", "DCM", "Login")
    assert login.find("EventIdentification[@EventOutcomeIndicator='8']") is not None
    assert login.findtext("EventIdentification/EventOutcomeDescription") == "wrong password"

    logout = _parse(dicom_audit_message(_event(details={"subtype": "110123 Logout"}), "ARKIV"))
    assert _code(logout.find("EventIdentification/EventTypeCode"))[0] == "110123"

    override = _parse(
        dicom_audit_message(
            _event(
                event_id="110113",
                event_name="Security Alert",
                action="E",
                details={
                    "subtype": "110127 Emergency Override Started",
                    "purpose_of_use": "ETREAT",
                },
            ),
            "ARKIV",
        )
    )
    assert _code(override.find("EventIdentification/EventTypeCode")) == (
        "110127",
        "DCM",
        "Emergency Override Started",
    )
    assert _code(override.find("EventIdentification/PurposeOfUse"))[0] == "ETREAT"


def test_dicom_query_and_modality_store() -> None:
    query = "PatientName=Ø*&Modality=IO"
    root = _parse(
        dicom_audit_message(
            _event(
                event_id="110112",
                event_name="Query",
                action="E",
                query=query,
                details={"level": "studies"},
            ),
            "ARKIV",
        )
    )
    (found,) = [o for o in _objects(root) if o.get("ParticipantObjectTypeCodeRole") == "24"]
    assert found.get("ParticipantObjectID") == "SearchForStudies"
    assert base64.b64decode(found.findtext("ParticipantObjectQuery", "")).decode() == query

    store = _parse(
        dicom_audit_message(
            _event(
                event_id="110104",
                event_name="DICOM Instances Transferred",
                action="C",
                actor="SENSOR_IO1",
                actor_kind="dicom-ae",
                actor_role="",
                details={},
            ),
            "ARKIV",
        )
    )
    requestor = store.find("ActiveParticipant[@UserIsRequestor='true']")
    assert requestor is not None
    assert requestor.get("UserID") == "SENSOR_IO1"
    assert requestor.get("UserTypeCode") == "2"
    assert _code(requestor.find("RoleIDCode"))[0] == "110153"


def test_dicom_escapes_everything_from_outside() -> None:
    hostile = '"><Injected a="1"/>&amp;<!--'
    event = _event(
        actor=hostile,
        outcome_description=f"line one\nline two {hostile}",
        patient_ids=(hostile, "P\x00\x1bX"),
        study_uids=(STUDY,),
    )
    root = _parse(dicom_audit_message(event, "ARKIV"))
    assert root.find(".//Injected") is None
    requestor = root.find("ActiveParticipant[@UserIsRequestor='true']")
    assert requestor is not None and requestor.get("UserID") == hostile
    description = root.findtext("EventIdentification/EventOutcomeDescription")
    assert description == f"line one\nline two {hostile}"
    ids = [o.get("ParticipantObjectID") for o in _objects(root)]
    assert hostile in ids
    assert "P\ufffd\ufffdX" in ids


def test_dicom_audit_lines_one_message_per_line() -> None:
    events = [_event(seq=n, outcome_description="a\nb") for n in range(1, 5)]
    lines = list(dicom_audit_lines(events, "ARKIV"))
    assert len(lines) == 4
    text = "".join(lines)
    assert text.count("\n") == 4
    for number, line in enumerate(text.splitlines(), start=1):
        root = _parse(line)
        record = [o for o in _objects(root) if o.get("ParticipantObjectTypeCodeRole") == "13"]
        assert record[0].get("ParticipantObjectID") == str(number)


# -- from the real log -----------------------------------------------------------------------------


def test_exports_of_recorded_events(archive: Archive) -> None:
    clinician = Actor(
        name="tannlege1", kind="user", county="telemark", address="127.0.0.1", role="clinician"
    )
    archive.audit.record(
        Event(
            EventType.INSTANCES_ACCESSED,
            "R",
            clinician,
            patient_ids=(DNR,),
            study_uids=(STUDY,),
            object_count=1,
            counties=("buskerud",),
            details={"purpose": "retrieve", "break_glass": True, "foreign_counties": ["buskerud"]},
        )
    )
    archive.audit.record(
        Event(
            EventType.USER_AUTHENTICATION,
            "E",
            clinician,
            outcome=Outcome.SERIOUS_FAILURE,
            details={"subtype": "110122 Login"},
        )
    )
    events = list(archive.index.iter_audit_events())
    assert [e.seq for e in events] == [1, 2]

    parsed = _parse_csv("".join(csv_rows(events)))
    assert [row[0] for row in parsed[1:]] == ["1", "2"]
    assert parsed[1][CSV_COLUMNS.index("counties")] == "buskerud telemark"

    bundle = fhir_bundle(events, archive.settings.ae_title, "http://127.0.0.1/fhir/AuditEvent")
    first, second = (entry["resource"] for entry in bundle["entry"])
    for resource in (first, second):
        _assert_valid_r4_audit_event(resource)
    assert _record_extension(first)["hash"] == events[0].hash
    assert first["entity"][0]["what"]["identifier"]["system"] == DNR_SYSTEM
    assert first["purposeOfEvent"][0]["coding"][0]["code"] == "BTG"
    assert second["outcome"] == "8"

    lines = list(dicom_audit_lines(events, archive.settings.ae_title))
    assert _code(_parse(lines[0].rstrip("\n")).find("EventIdentification/EventID"))[0] == "110103"
    assert _code(_parse(lines[1].rstrip("\n")).find("EventIdentification/EventTypeCode"))[0] == (
        "110122"
    )
