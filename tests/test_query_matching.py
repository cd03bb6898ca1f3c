"""The index's matching rules (PS3.4 C.2.2.2) against a brute-force filter written here.

A corpus of studies whose attributes sit on every rule's edges (æøå names in both cases, dates
and times at range bounds, several modalities, a value full of SQL metacharacters) is stored
through ingest; each query goes through `arkiv.query_keys` (the parser both adapters share) and
the index, and must give exactly the corpus records the independent filter below selects. Runs
on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydicom.uid import generate_uid

from arkiv.accounts import Principal, Role
from arkiv.audit import Actor
from arkiv.counties import County
from arkiv.errors import InvalidQuery
from arkiv.query_keys import parse_keys
from arkiv.services import Archive
from storage.records import StudyQuery
from tests.dicom_factory import Spec, encode, make_dataset

pytestmark = pytest.mark.both_backends


@dataclass(frozen=True)
class Row:
    """One stored instance with every attribute a query may match on."""

    patient_id: str
    name: str
    birth: str
    sex: str
    study_uid: str
    date: str
    time: str
    accession: str
    study_id: str
    description: str
    physician: str
    series_uid: str
    modality: str
    series_number: int
    sop_uid: str
    sop_class: str
    instance_number: int
    county: str


CT = "1.2.840.10008.5.1.4.1.1.2"
IO = "1.2.840.10008.5.1.4.1.1.1.3"
SQL_BREAKER = "%' OR 1=1 --"

_STUDIES: list[dict[str, Any]] = [
    dict(pid="P1", name="Ødegård^Åse", birth="19700101", sex="F", date="20240101",
         time="093000", acc="A1", sid="1", desc="Bitewing", phys="Berg^Per", mods=("IO", "PX")),
    dict(pid="P2", name="ØDEGÅRD^Kjell", birth="19700102", sex="M", date="20240131",
         time="0930", acc="A2", sid="2", desc="bitewing", phys="berg^per", mods=("IO",)),
    dict(pid="P3", name="Hansen^Kari", birth="19851231", sex="F", date="20240201",
         time="100000.5", acc=SQL_BREAKER, sid="3", desc="Panorama", phys="Æsir^Bjørn",
         mods=("PX",)),
    dict(pid="P4", name="Hansen-Berg^Søren", birth="20000229", sex="M", date="20231231",
         time="235959.999999", acc="A_4", sid="4", desc="Pano 50%", phys="", mods=("CT",)),
    dict(pid="P5", name="Strøm^Æsa", birth="", sex="O", date="", time="", acc="A%5",
         sid="5", desc="", phys="ÆSIR^BJØRN", mods=("IO",)),
    dict(pid="P1", name="Ødegård^Åse", birth="19700101", sex="F", date="20240315",
         time="09", acc="A6", sid="6", desc="Bitewing left", phys="Berg^Per", mods=("CT",)),
]  # fmt: skip


def _corpus(archive: Archive) -> list[Row]:
    rows: list[Row] = []
    for number, study in enumerate(_STUDIES):
        county = County.BUSKERUD if study["pid"] == "P3" else County.VESTFOLD
        actor = Actor(name="MODALITY", kind="dicom-ae", county=county.value)
        study_uid = generate_uid()
        for series_number, modality in enumerate(study["mods"], start=1):
            series_uid = generate_uid()
            for instance_number in (1, 2):
                spec = Spec(
                    patient_id=study["pid"],
                    patient_name=study["name"],
                    birth_date=study["birth"],
                    study_uid=study_uid,
                    series_uid=series_uid,
                    study_date=study["date"],
                    accession=study["acc"],
                    modality=modality,
                    sop_class=CT if modality == "CT" else IO,
                    seed=number,
                )
                ds = make_dataset(spec)
                ds.PatientSex = study["sex"]
                ds.StudyTime = study["time"]
                ds.StudyID = study["sid"]
                ds.StudyDescription = study["desc"]
                ds.ReferringPhysicianName = study["phys"]
                ds.SeriesNumber = series_number
                ds.InstanceNumber = instance_number
                archive.ingest.ingest_dicom(encode(ds), actor)
                rows.append(
                    Row(
                        study["pid"],
                        study["name"],
                        study["birth"],
                        study["sex"],
                        study_uid,
                        study["date"],
                        study["time"],
                        study["acc"],
                        study["sid"],
                        study["desc"],
                        study["phys"],
                        series_uid,
                        modality,
                        series_number,
                        spec.sop_uid,
                        spec.sop_class,
                        instance_number,
                        county.value,
                    )
                )
    return rows


# -- the independent filter -----------------------------------------------------------------------


def _wild(pattern: str, value: str, ignore_case: bool = False) -> bool:
    """DICOM wildcard match written without SQL: walk the pattern with a small backtracker."""
    if ignore_case:
        pattern, value = pattern.casefold(), value.casefold()

    def walk(p: int, v: int) -> bool:
        if p == len(pattern):
            return v == len(value)
        if pattern[p] == "*":
            return any(walk(p + 1, k) for k in range(v, len(value) + 1))
        if v < len(value) and pattern[p] in ("?", value[v]):
            return walk(p + 1, v + 1)
        return False

    return walk(0, 0)


def _in_range(value: str, low: str, high: str) -> bool:
    return value != "" and (not low or value >= low) and (not high or value <= high)


def _seconds(tm: str, last: bool) -> float:
    """A TM as seconds since midnight; `last` gives the end of its precision."""
    digits, _, fraction = tm.partition(".")
    parts = [int(digits[i : i + 2]) for i in range(0, len(digits), 2)]
    fill = [59, 59] if last else [0, 0]
    hours, minutes, seconds = (parts + fill[len(parts) - 1 :])[:3]
    frac = float("0." + fraction) if fraction else 0.0
    if last and not fraction:
        frac = 0.999999
    elif last:
        frac = float("0." + fraction.ljust(6, "9"))
    return hours * 3600 + minutes * 60 + seconds + frac


def _time_match(spec: str, stored: str) -> bool:
    if not stored:
        return False
    low, dash, high = spec.partition("-")
    if not dash:
        low = high = spec
    moment = _seconds(stored, last=False)
    return (not low or moment >= _seconds(low, False)) and (
        not high or moment <= _seconds(high, True)
    )


def expected(rows: list[Row], key: str, value: str) -> list[Row]:
    rules: dict[str, Callable[[Row], bool]] = {
        "PatientID": lambda r: _wild(value, r.patient_id),
        "PatientName": lambda r: _wild(value, r.name, ignore_case=True),
        "ReferringPhysicianName": lambda r: _wild(value, r.physician, ignore_case=True),
        "PatientSex": lambda r: _wild(value, r.sex),
        "AccessionNumber": lambda r: _wild(value, r.accession),
        "StudyID": lambda r: _wild(value, r.study_id),
        "StudyDescription": lambda r: _wild(value, r.description),
        "StudyDate": lambda r: _in_range(r.date, *_bounds(value)),
        "PatientBirthDate": lambda r: _in_range(r.birth, *_bounds(value)),
        "StudyTime": lambda r: _time_match(value, r.time),
        "StudyInstanceUID": lambda r: r.study_uid in value.split("\\"),
        "SeriesInstanceUID": lambda r: r.series_uid in value.split("\\"),
        "SOPInstanceUID": lambda r: r.sop_uid in value.split("\\"),
        "SOPClassUID": lambda r: r.sop_class in value.split("\\"),
        "Modality": lambda r: r.modality in value.split("\\"),
        "SeriesNumber": lambda r: r.series_number == int(value),
        "InstanceNumber": lambda r: r.instance_number == int(value),
    }
    if value == "":
        return rows
    return [r for r in rows if rules[key](r)]


def _bounds(value: str) -> tuple[str, str]:
    low, dash, high = value.partition("-")
    return (low, high) if dash else (value, value)


# -- the cases ------------------------------------------------------------------------------------

CASES: list[tuple[str, str]] = [
    ("PatientID", "P1"),
    ("PatientID", "P?"),
    ("PatientID", ""),
    ("PatientName", "ødegård*"),
    ("PatientName", "ØDEGÅRD^KJELL"),
    ("PatientName", "*^åse"),
    ("PatientName", "Hansen*"),
    ("PatientName", "?ansen^kari"),
    ("PatientName", "%"),
    ("PatientName", "strøm^æsa"),
    ("ReferringPhysicianName", "berg^per"),
    ("ReferringPhysicianName", "æsir*"),
    ("PatientSex", "F"),
    ("PatientBirthDate", "19700101"),
    ("PatientBirthDate", "19700101-19851231"),
    ("PatientBirthDate", "-19700101"),
    ("StudyDate", "20240101-20240131"),
    ("StudyDate", "20240201-"),
    ("StudyDate", "-20231231"),
    ("StudyDate", "20240131"),
    ("StudyTime", "0930"),
    ("StudyTime", "093000"),
    ("StudyTime", "09"),
    ("StudyTime", "0930-100000.5"),
    ("StudyTime", "100000.4-"),
    ("StudyTime", "-0929"),
    ("StudyTime", "2359-"),
    ("AccessionNumber", SQL_BREAKER),
    ("AccessionNumber", "%"),
    ("AccessionNumber", "A_?"),
    ("AccessionNumber", "A%*"),
    ("AccessionNumber", "a1"),
    ("StudyID", "4"),
    ("StudyDescription", "Bitewing*"),
    ("StudyDescription", "bitewing"),
    ("StudyDescription", "*50%"),
    ("Modality", "CT"),
    ("Modality", "IO\\PX"),
    ("SeriesNumber", "2"),
    ("InstanceNumber", "1"),
    ("SOPClassUID", CT),
]


def _studies(rows: list[Row]) -> set[str]:
    return {r.study_uid for r in rows}


def _everything(query: StudyQuery) -> StudyQuery:
    return StudyQuery(**{**query.__dict__, "limit": 10_000})


def test_every_rule_matches_what_the_brute_force_filter_selects(archive: Archive) -> None:
    rows = _corpus(archive)
    failures = []
    for key, value in CASES:
        query = _everything(parse_keys([(key, value)]))
        want = expected(rows, key, value)
        instances = {i.sop_uid for i in archive.index.find_instances(query)}
        series = {s.series_uid for s in archive.index.find_series(query)}
        studies = {s.study_uid for s in archive.index.find_studies(query)}
        patients = {p.patient_id for p in archive.index.find_patients(query)}
        if instances != {r.sop_uid for r in want}:
            failures.append(f"{key}={value!r} instances")
        if series != {r.series_uid for r in want}:
            failures.append(f"{key}={value!r} series")
        if studies != _studies(want):
            failures.append(f"{key}={value!r} studies")
        if patients != {r.patient_id for r in want}:
            failures.append(f"{key}={value!r} patients")
    assert not failures, failures


def test_uid_lists_and_combined_keys(archive: Archive) -> None:
    rows = _corpus(archive)
    two = sorted(_studies(rows))[:2]
    query = _everything(parse_keys([("StudyInstanceUID", "\\".join(two))]))
    assert {s.study_uid for s in archive.index.find_studies(query)} == set(two)
    combined = _everything(
        parse_keys([("PatientName", "ødegård*"), ("StudyDate", "20240101-"), ("Modality", "CT")])
    )
    want = [
        r
        for r in rows
        if _wild("ødegård*", r.name, True) and r.date >= "20240101" and r.modality == "CT"
    ]
    assert {i.sop_uid for i in archive.index.find_instances(combined)} == {r.sop_uid for r in want}
    assert {s.study_uid for s in archive.index.find_studies(combined)} == _studies(want)


def test_counts_and_modalities_are_of_the_whole_study(archive: Archive) -> None:
    rows = _corpus(archive)
    query = _everything(parse_keys([("PatientID", "P1")]))
    (patient,) = archive.index.find_patients(query)
    p1 = [r for r in rows if r.patient_id == "P1"]
    assert (patient.study_count, patient.series_count, patient.instance_count) == (
        len(_studies(p1)),
        len({r.series_uid for r in p1}),
        len(p1),
    )
    for study in archive.index.find_studies(query):
        own = [r for r in p1 if r.study_uid == study.study_uid]
        assert study.modalities == tuple(sorted({r.modality for r in own}))
        assert study.series_count == len({r.series_uid for r in own})
        assert study.instance_count == len(own)
    # A series-level key selects studies, but their counts stay those of the whole study.
    (with_px,) = archive.index.find_studies(
        _everything(parse_keys([("PatientID", "P1"), ("Modality", "PX")]))
    )
    assert with_px.modalities == ("IO", "PX") and with_px.instance_count == 4


def test_fuzzy_names_match_word_prefixes_ignoring_case_and_accents(archive: Archive) -> None:
    rows = _corpus(archive)

    def fuzzy(value: str) -> set[str]:
        query = _everything(parse_keys([("PatientName", value)]))
        query = StudyQuery(**{**query.__dict__, "fuzzy_names": True})
        return {s.patient_id for s in archive.index.find_studies(query)}

    assert fuzzy("odeg") == {"P1", "P2"}
    assert fuzzy("ase") == {"P1"}
    assert fuzzy("soren") == {"P4"}
    assert fuzzy("berg") == {"P4"}  # a word after a hyphen
    assert fuzzy("kari hans") == {"P3"}
    assert fuzzy("ansen") == set()  # prefixes of words, not any substring
    assert fuzzy("æsa") == {"P5"}
    assert {r.patient_id for r in rows} >= {"P1", "P2", "P3", "P4", "P5"}


def test_paging_walks_every_study_once(archive: Archive) -> None:
    rows = _corpus(archive)
    seen: list[str] = []
    offset = 0
    while True:
        page = archive.index.find_studies(StudyQuery(limit=2, offset=offset))
        if not page:
            break
        seen.extend(s.study_uid for s in page)
        offset += 2
    assert sorted(seen) == sorted(_studies(rows))


def test_scope_limits_every_level_to_the_county(archive: Archive) -> None:
    rows = _corpus(archive)
    principal = Principal("tekniker", Role.CLINICIAN, County.BUSKERUD)
    found = archive.access.search_patients(principal, StudyQuery(limit=100), "PATIENT")
    assert [p.patient_id for p in found] == ["P3"]
    assert found[0].instance_count == len([r for r in rows if r.patient_id == "P3"])
    studies = archive.access.search_studies(principal, StudyQuery(limit=100), "STUDY")
    assert {s.patient_id for s in studies} == {"P3"}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("StudyDate", "2024-01-01"),
        ("StudyDate", "20240230"),
        ("StudyDate", "20240201-20240101"),
        ("StudyDate", "-"),
        ("StudyTime", "2500"),
        ("StudyTime", "09:30"),
        ("StudyInstanceUID", "1.2.x"),
        ("StudyInstanceUID", "1.2.*"),
        ("SeriesNumber", "one"),
        ("PatientID", "A\\B"),
        ("Modality", "ct'--"),
        ("SeriesDescription", "x"),
        ("InstitutionName", "Klinikk"),
        ("NotAKeyword", ""),
        ("99999999", "x"),
    ],
)
def test_malformed_and_unsupported_keys_are_refused(key: str, value: str) -> None:
    with pytest.raises(InvalidQuery) as caught:
        parse_keys([(key, value)])
    assert str(caught.value)


def test_keys_given_as_tags_mean_their_keywords() -> None:
    assert parse_keys([("00100020", "P1")]) == parse_keys([("PatientID", "P1")])
    assert parse_keys([("0020000D", "")]) == StudyQuery()
