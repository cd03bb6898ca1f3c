"""Who may see what, route by route: every role and county against objects of two counties.

One archive holds a Vestfold patient and a Buskerud patient. Each route is called by each kind of
principal; the expected status is written out in a table so a change in policy shows up here as a
changed line. Object ids from another county answer 404, exactly like ids that do not exist, so a
clinician cannot even learn that they exist (no IDOR).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from arkiv.accounts import Role
from arkiv.audit import Actor
from arkiv.counties import County
from storage.records import AuditQuery
from tests.conftest import PASSWORD, RunningArchive, _start_archive
from tests.dicom_factory import Spec, encode, make_dataset

VESTFOLD_PATIENT = Spec(patient_id="01017012345", patient_name="Vestre^Vera")
BUSKERUD_PATIENT = Spec(patient_id="02028054321", patient_name="Bakke^Bjørn")
TELEMARK_PATIENT = Spec(patient_id="03039067890", patient_name="Tveit^Tone")

PRINCIPALS: dict[str, tuple[Role, County, frozenset[str]]] = {
    "clin_v": (Role.CLINICIAN, County.VESTFOLD, frozenset()),
    "clin_b": (Role.CLINICIAN, County.BUSKERUD, frozenset()),
    "aud_v": (Role.AUDITOR, County.VESTFOLD, frozenset()),
    "aud_b": (Role.AUDITOR, County.BUSKERUD, frozenset()),
    "joint": (Role.JOINT_AUDITOR, County.VESTFOLD, frozenset()),
    "admin": (Role.ADMIN, County.VESTFOLD, frozenset()),
    "svc_search": (Role.SERVICE, County.VESTFOLD, frozenset({"search"})),
    "svc_read": (Role.SERVICE, County.VESTFOLD, frozenset({"search", "retrieve"})),
}
WHO = [*PRINCIPALS, "anon"]


@dataclass
class World:
    running: RunningArchive

    def client(self, who: str) -> httpx.Client:
        client = self.running.client()
        if who != "anon":
            client.auth = (who, PASSWORD)
        return client


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir: Path = tmp_path_factory.mktemp("matrix") / "data"
    for running in _start_archive(data_dir):
        for spec, county in (
            (VESTFOLD_PATIENT, "vestfold"),
            (BUSKERUD_PATIENT, "buskerud"),
            (TELEMARK_PATIENT, "telemark"),
        ):
            sensor = Actor(name=f"SENSOR_{county.upper()}", kind="dicom-ae", county=county)
            running.archive.ingest.ingest_dicom(encode(make_dataset(spec)), sensor)
        for name, (role, county, scopes) in PRINCIPALS.items():
            running.archive.accounts.add_user(name, PASSWORD, role, county, scopes=scopes)
        running.archive.accounts.add_user("to_disable", PASSWORD, Role.CLINICIAN, County.VESTFOLD)
        yield World(running)


def _instance(spec: Spec) -> str:
    return f"/dicom-web/studies/{spec.study_uid}/series/{spec.series_uid}/instances/{spec.sop_uid}"


def _reads(spec: Spec) -> dict[str, str]:
    series = f"/dicom-web/studies/{spec.study_uid}/series/{spec.series_uid}"
    return {
        "qido series": f"/dicom-web/studies/{spec.study_uid}/series",
        "retrieve study": f"/dicom-web/studies/{spec.study_uid}",
        "study metadata": f"/dicom-web/studies/{spec.study_uid}/metadata",
        "instance metadata": f"{_instance(spec)}/metadata",
        "rendered": f"{_instance(spec)}/rendered",
        "thumbnail": f"{_instance(spec)}/thumbnail",
        "series thumbnail": f"{series}/thumbnail",
        "study page": f"/studies/{spec.study_uid}",
        "image page": f"/studies/{spec.study_uid}/series/{spec.series_uid}"
        f"/instances/{spec.sop_uid}",
        "viewer document": f"/api/studies/{spec.study_uid}/viewer",
    }


_VIEWER = ("study page", "image page", "viewer document")
"""The clinician's viewer: another county's clinician is sent to break the glass (403 naming the
county) rather than told the study does not exist; every other reader sees a missing object."""


# Reading a Vestfold object: the Vestfold clinician and the reading service account may; the
# Buskerud clinician gets 404 (as if it did not exist); other roles are refused outright.
OWN_READ = {
    "clin_v": 200, "clin_b": 404, "aud_v": 403, "aud_b": 403, "joint": 403, "admin": 403,
    "svc_search": 403, "svc_read": 200, "anon": 401,
}  # fmt: skip
QIDO_SERIES = {**OWN_READ, "svc_search": 200, "clin_b": 200}  # a search: empty for clin_b
VIEWER_READ = {**OWN_READ, "clin_b": 403}  # break the glass
SEARCH = {
    "clin_v": 200, "clin_b": 200, "aud_v": 403, "aud_b": 403, "joint": 403, "admin": 403,
    "svc_search": 200, "svc_read": 200, "anon": 401,
}  # fmt: skip
AUDIT = {
    "clin_v": 403, "clin_b": 403, "aud_v": 200, "aud_b": 200, "joint": 200, "admin": 403,
    "svc_search": 403, "svc_read": 403, "anon": 401,
}  # fmt: skip
AUDIT_OF_BUSKERUD = {**AUDIT, "aud_v": 403}
ADMIN = {
    "clin_v": 403, "clin_b": 403, "aud_v": 403, "aud_b": 403, "joint": 403, "admin": 200,
    "svc_search": 403, "svc_read": 403, "anon": 401,
}  # fmt: skip


def _cases() -> list[tuple[str, str, dict[str, int]]]:
    cases = [
        (
            name,
            path,
            QIDO_SERIES if name == "qido series" else VIEWER_READ if name in _VIEWER else OWN_READ,
        )
        for name, path in _reads(VESTFOLD_PATIENT).items()
    ]
    cases += [
        ("qido studies", "/dicom-web/studies", SEARCH),
        ("qido instances", "/dicom-web/instances", SEARCH),
        ("audit search", "/api/audit", AUDIT),
        ("audit of buskerud", "/api/audit?county=buskerud", AUDIT_OF_BUSKERUD),
        ("audit review", "/api/audit/review", AUDIT),
        ("audit export", "/api/audit/export?format=csv", AUDIT),
        ("fhir audit", "/fhir/AuditEvent?date=ge2020-01-01", AUDIT),
        ("admin users", "/api/admin/users", ADMIN),
        ("admin peers", "/api/admin/peers", ADMIN),
        ("admin page", "/admin", ADMIN),
        ("audit page", "/audit", AUDIT),
        ("review page", "/audit/review", AUDIT),
    ]
    return cases


@pytest.mark.parametrize(
    ("route", "path", "expected"), [pytest.param(*c, id=c[0]) for c in _cases()]
)
@pytest.mark.parametrize("who", WHO)
def test_route_answers_each_role_and_county_as_the_policy_says(
    world: World, route: str, path: str, expected: dict[str, int], who: str
) -> None:
    with world.client(who) as client:
        response = client.get(path)
    assert response.status_code == expected[who], (route, who, response.text[:200])
    if response.status_code >= 400:
        assert response.json()["reason"]
    assert VESTFOLD_PATIENT.patient_id.encode() not in response.content or who in (
        "clin_v",
        "svc_read",
        "svc_search",
        "aud_v",
        "joint",
    )


@pytest.mark.parametrize("who", ["clin_v", "clin_b", "svc_search", "svc_read"])
def test_searches_find_only_the_own_countys_patients(world: World, who: str) -> None:
    with world.client(who) as client:
        found = client.get("/dicom-web/studies").json()
    patients = {study["00100020"]["Value"][0] for study in found}
    own = PRINCIPALS[who][1]
    expected = VESTFOLD_PATIENT if own is County.VESTFOLD else BUSKERUD_PATIENT
    assert patients == {expected.patient_id}


@pytest.mark.parametrize("who", ["clin_v", "svc_read"])
def test_another_countys_object_ids_answer_like_missing_ones(world: World, who: str) -> None:
    with world.client(who) as client:
        for name, path in _reads(BUSKERUD_PATIENT).items():
            response = client.get(path)
            if name == "qido series":
                assert response.status_code == 200 and response.json() == [], name
                continue
            if name in _VIEWER and who == "clin_v":
                assert response.status_code == 403, name
                assert response.json()["break_glass"] == {"counties": ["buskerud"]}, name
                continue
            assert response.status_code == 404, name
            missing = client.get(path.replace(BUSKERUD_PATIENT.study_uid, "1.2.3.4.5"))
            assert missing.status_code == 404
            assert response.json()["reason"] == missing.json()["reason"], name


def test_auditors_see_the_events_of_their_own_county(world: World) -> None:
    with world.client("clin_b") as client:
        assert client.get(f"{_instance(BUSKERUD_PATIENT)}/metadata").status_code == 200
    with world.client("aud_v") as vestfold, world.client("aud_b") as buskerud:
        seen_v = {e["actor"] for e in vestfold.get("/api/audit", params={"limit": 1000}).json()}
        seen_b = {e["actor"] for e in buskerud.get("/api/audit", params={"limit": 1000}).json()}
    assert "clin_b" in seen_b and "clin_b" not in seen_v
    assert "SENSOR_BUSKERUD" in seen_b and "SENSOR_BUSKERUD" not in seen_v


def test_service_accounts_are_audited_as_services(world: World) -> None:
    with world.client("svc_read") as client:
        assert client.get(f"{_instance(VESTFOLD_PATIENT)}/metadata").status_code == 200
    events = world.running.archive.index.find_audit_events(
        AuditQuery(actor="svc_read", event_id="110103")
    )
    assert events and events[0].actor_kind == "service" and events[0].actor_role == "service"


# Changes and posted searches, with Basic credentials (no session, so no CSRF token needed).
# Break the glass is tried on the Telemark patient, whom no other test here reads.
POSTS: list[tuple[str, str, dict[str, object], str, dict[str, int]]] = [
    ("ui search", "/search", {"patient_id": VESTFOLD_PATIENT.patient_id}, "form", SEARCH),
    (
        "break the glass",
        "/api/break-glass",
        {"patient_id": TELEMARK_PATIENT.patient_id, "reason": "akutt"},
        "json",
        {**OWN_READ, "clin_v": 201, "clin_b": 201, "svc_read": 403},
    ),
    ("audit search posted", "/api/audit/search", {"user": "clin_v"}, "json", AUDIT),
    (
        "patient report",
        "/api/audit/patient-report",
        {"patient_id": VESTFOLD_PATIENT.patient_id},
        "json",
        AUDIT,
    ),
    ("fhir search posted", "/fhir/AuditEvent/_search", {"agent": "clin_v"}, "form", AUDIT),
    ("audit page search", "/audit", {"user": "clin_v"}, "form", AUDIT),
    (
        "patient report page",
        "/audit/patient-report",
        {"patient_id": VESTFOLD_PATIENT.patient_id},
        "form",
        AUDIT,
    ),
    ("disable a user", "/api/admin/users/to_disable/disable", {}, "json", ADMIN),
]


@pytest.mark.parametrize(
    ("route", "path", "body", "kind", "expected"),
    [pytest.param(*post, id=post[0]) for post in POSTS],
)
@pytest.mark.parametrize("who", WHO)
def test_posts_answer_each_role_and_county_as_the_policy_says(
    world: World,
    route: str,
    path: str,
    body: dict[str, object],
    kind: str,
    expected: dict[str, int],
    who: str,
) -> None:
    with world.client(who) as client:
        if kind == "json":
            response = client.post(path, json=body)
        else:
            response = client.post(path, data={k: str(v) for k, v in body.items()})
    assert response.status_code == expected[who], (route, who, response.text[:200])


@pytest.mark.parametrize("who", WHO)
def test_only_an_admin_creates_accounts(world: World, who: str) -> None:
    new = {"username": f"ny_{who}", "role": "clinician", "county": "telemark", "password": PASSWORD}
    with world.client(who) as client:
        response = client.post("/api/admin/users", json=new)
    assert response.status_code == {**ADMIN, "admin": 201}[who], response.text
    assert (world.running.archive.index.get_user(f"ny_{who}") is not None) is (who == "admin")
