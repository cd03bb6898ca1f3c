"""The web app as people use it: signing in and out, throttling, the browser pages, roles and
counties, the auditor's API, and the security headers every answer carries.

Most tests share one archive (the module's `site`) and read it with accounts of their own; tests
that fail sign-ins get a fresh archive, since throttling keeps state per address and account.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from pydicom.uid import generate_uid

from arkiv.accounts import Role
from arkiv.audit import Actor
from arkiv.counties import County
from storage.records import AuditEvent, AuditQuery
from tests.conftest import (
    BACKENDS,
    PASSWORD,
    RunningArchive,
    _start_archive,
    backend_settings,
    post_login,
)
from tests.dicom_factory import Spec, encode, make_dataset, synthetic_national_id

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
LOGIN = "110114"
QUERY = "110112"
ACCESSED = "110103"
AUDIT_LOG_USED = "110101"
WRONG = "feil-passord-123"


ASE = synthetic_national_id(date(1961, 4, 12), 100)
BJORN = synthetic_national_id(date(1975, 9, 30), 200)
SIRI = synthetic_national_id(date(1988, 11, 2), 300)


# -- helpers ---------------------------------------------------------------------------------------


def ingest_study(
    running: RunningArchive,
    patient_id: str,
    name: str,
    study_date: str = "20250314",
    images: int = 1,
    county: str = "vestfold",
) -> list[Spec]:
    """One study of `images` intra-oral images in one series, as a modality of `county` sends it."""
    sensor = Actor(name="MODALITY", kind="dicom-ae", county=county, address="127.0.0.1")
    study_uid, series_uid = generate_uid(), generate_uid()
    specs = []
    for n in range(images):
        spec = Spec(
            patient_id=patient_id,
            patient_name=name,
            study_uid=study_uid,
            series_uid=series_uid,
            study_date=study_date,
            seed=n,
        )
        running.archive.ingest.ingest_dicom(encode(make_dataset(spec)), sensor)
        specs.append(spec)
    return specs


def instance_path(spec: Spec) -> str:
    return f"/studies/{spec.study_uid}/series/{spec.series_uid}/instances/{spec.sop_uid}"


def add_account(
    running: RunningArchive,
    name: str,
    role: Role = Role.CLINICIAN,
    county: County = County.VESTFOLD,
) -> None:
    running.add_user(name, role, county).close()


def browser(running: RunningArchive, address: str | None = None) -> httpx.Client:
    """A client without credentials that keeps cookies, optionally from another loopback address."""
    if address is None:
        return running.client()
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=running.base_url, transport=transport, timeout=30)


@contextlib.contextmanager
def sign_in(running: RunningArchive, name: str) -> Iterator[httpx.Client]:
    """A browser signed in through the login form (it carries the session cookie)."""
    with browser(running) as client:
        response = post_login(client, name, PASSWORD)
        assert response.status_code == 303, response.text
        yield client


def basic(
    running: RunningArchive, name: str, password: str, address: str | None = None
) -> httpx.Client:
    client = browser(running, address)
    client.auth = (name, password)
    return client


def audit(running: RunningArchive, **query: Any) -> list[AuditEvent]:
    return running.archive.index.find_audit_events(AuditQuery(limit=1000, **query))


def links(page: str, attribute: str) -> list[str]:
    return re.findall(rf'{attribute}="([^"]*)"', page)


def assert_reason(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    reason = response.json()["reason"]
    assert isinstance(reason, str) and reason


# -- the shared site -------------------------------------------------------------------------------


@dataclass
class Site:
    """One archive for the module: Åse has two studies in Vestfold, Bjørn one, and Telemark's Siri
    one. A Vestfold and a Telemark clinician have searched, and a sign-in has failed once."""

    running: RunningArchive
    ase: list[list[Spec]]
    bjorn: list[Spec]
    siri: list[Spec]
    _names: Iterator[int] = field(default_factory=itertools.count)

    def account(
        self, prefix: str, role: Role = Role.CLINICIAN, county: County = County.VESTFOLD
    ) -> str:
        """A new account of its own for one test; returns its user name."""
        name = f"{prefix}-{next(self._names)}"
        add_account(self.running, name, role, county)
        return name

    def audit_api(self, client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
        response = client.get("/api/audit", params=params)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found


@pytest.fixture(scope="module", params=BACKENDS)
def site(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Site]:
    start = contextlib.contextmanager(_start_archive)
    with (
        backend_settings(request, request.param) as overrides,
        start(tmp_path_factory.mktemp("web") / "data", overrides) as running,
    ):
        ase = [
            ingest_study(running, ASE, "Ødegård^Åse", "20230105", images=2),
            ingest_study(running, ASE, "Ødegård^Åse", "20240610"),
        ]
        bjorn = ingest_study(running, BJORN, "Kåsa^Bjørn", "20240115")
        siri = ingest_study(running, SIRI, "Ødegård^Siri", "20240610", county="telemark")
        for name, county in (("tannlege", County.VESTFOLD), ("tm-tannlege", County.TELEMARK)):
            add_account(running, name, county=county)
        add_account(running, "revisor", Role.AUDITOR)
        add_account(running, "tm-revisor", Role.AUDITOR, County.TELEMARK)
        with basic(running, "tannlege", PASSWORD) as vestfold:
            for patient in (ASE, BJORN):
                assert vestfold.get("/dicom-web/studies", params={"PatientID": patient}).json()
        with basic(running, "tm-tannlege", PASSWORD) as telemark:
            assert telemark.get("/dicom-web/studies", params={"PatientID": SIRI}).json()
        with browser(running, "127.0.0.9") as mistyped:
            failed = post_login(mistyped, "tannlege", WRONG)
            assert failed.status_code == 401
        yield Site(running, ase, bjorn, siri)


# -- health and authentication ---------------------------------------------------------------------


def test_health_and_readiness_need_no_credentials(site: Site) -> None:
    with site.running.client() as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"


PROTECTED = [
    "/dicom-web/studies",
    "/dicom-web/series",
    "/dicom-web/instances",
    "/dicom-web/studies/1.2.3/series",
    "/dicom-web/studies/1.2.3",
    "/dicom-web/studies/1.2.3/metadata",
    "/dicom-web/studies/1.2.3/thumbnail",
    "/dicom-web/studies/1.2.3/series/1.2.4/instances/1.2.5",
    "/dicom-web/studies/1.2.3/series/1.2.4/instances/1.2.5/rendered",
    "/api/audit",
    "/api/audit?patient=01017012345",
]


def test_apis_without_credentials_answer_401_with_a_challenge(site: Site) -> None:
    with site.running.client() as client:
        for path in PROTECTED:
            for headers in ({}, HTML):  # an API never redirects, even when a browser asks
                response = client.get(path, headers=headers)
                assert_reason(response, 401)
                assert response.headers["www-authenticate"].startswith("Basic"), path


def test_wrong_credentials_answer_401(running: RunningArchive) -> None:
    add_account(running, "tannlege")
    ingest_study(running, ASE, "Ødegård^Åse")
    with running.client() as client:
        for authorization in (
            "Basic dGFubmxlZ2U6ZmVpbC1wYXNzb3JkLTEyMw==",  # tannlege:feil-passord-123
            "Basic dWtqZW50OmZlaWwtcGFzc29yZC0xMjM=",  # ukjent:feil-passord-123
            "Basic !!!not-base64!!!",
            "Basic dGFubmxlZ2U=",  # "tannlege", no colon
            "Bearer not-a-token",
        ):
            response = client.get("/dicom-web/studies", headers={"Authorization": authorization})
            assert_reason(response, 401)
            assert "www-authenticate" in response.headers, authorization
            assert ASE not in response.text


def test_a_browser_without_a_session_is_sent_to_login(site: Site) -> None:
    with site.running.client() as client:
        for path in ("/", f"/studies/{site.bjorn[0].study_uid}", "/audit"):
            response = client.get(path, headers=HTML)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/login"
        page = client.get("/login")
        assert page.status_code == 200
        assert '<form method="post" action="/login"' in page.text


def test_a_forged_session_cookie_is_not_accepted(site: Site) -> None:
    with site.running.client() as client:
        client.cookies.set("arkiv_session", "not-a-session")
        assert client.get("/", headers=HTML).headers["location"] == "/login"
        assert_reason(client.get("/dicom-web/studies"), 401)


# -- signing in and out ----------------------------------------------------------------------------


def test_login_gives_a_strict_http_only_session_and_the_search_page(site: Site) -> None:
    name = site.account("innlogging")
    with site.running.client() as client:
        response = post_login(client, name, PASSWORD)
        assert response.status_code == 303
        assert response.headers["location"] == "/"
        [cookie] = [
            c for c in response.headers.get_list("set-cookie") if c.startswith("arkiv_session=")
        ]
        attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert "httponly" in attributes
        assert "samesite=strict" in attributes
        assert "path=/" in attributes
        page = client.get("/", headers=HTML)
        assert page.status_code == 200
        assert "Pasientsøk" in page.text
        assert '<form method="post" action="/search"' in page.text
        assert name in page.text
    [event] = audit(site.running, actor=name, event_id=LOGIN)
    assert event.outcome == 0
    assert event.source_address == "127.0.0.1"


def test_an_auditor_lands_on_the_audit_page(site: Site) -> None:
    with site.running.client() as client:
        response = post_login(client, "revisor", PASSWORD)
        assert response.status_code == 303 and response.headers["location"] == "/audit"
        assert "Tilgangslogg" in client.get("/audit", headers=HTML).text


def test_wrong_password_shows_the_login_page_with_an_error(running: RunningArchive) -> None:
    add_account(running, "tannlege")
    with running.client() as client:
        for username in ("tannlege", "ukjent"):
            response = post_login(client, username, WRONG)
            assert response.status_code == 401
            assert response.headers["content-type"].startswith("text/html")
            assert "arkiv_session=" not in response.headers.get("set-cookie", "")
            assert 'class="error"' in response.text
            assert "Feil brukernavn eller passord." in response.text
            assert '<form method="post" action="/login"' in response.text
        assert client.get("/", headers=HTML).headers["location"] == "/login"


def test_every_login_is_audited(running: RunningArchive) -> None:
    add_account(running, "tannlege")
    with running.client() as client:
        post_login(client, "tannlege", WRONG)
        post_login(client, "tannlege", PASSWORD)
        post_login(client, "ukjent", WRONG)
    failure, success = audit(running, actor="tannlege", event_id=LOGIN)[::-1]
    assert (failure.outcome, success.outcome) == (4, 0)
    for event in (failure, success):
        assert event.actor_kind == "user"
        assert event.source_address == "127.0.0.1"
        assert event.county == "vestfold"
    [unknown] = audit(running, actor="ukjent", event_id=LOGIN)
    assert unknown.outcome == 4


def test_basic_sign_in_is_audited(site: Site) -> None:
    name = site.account("api")
    with basic(site.running, name, PASSWORD) as client:
        assert client.get("/dicom-web/studies").status_code == 200
    [event] = audit(site.running, actor=name, event_id=LOGIN)
    assert event.outcome == 0


def test_logout_ends_the_session(site: Site) -> None:
    name = site.account("utlogging")
    with sign_in(site.running, name) as client:
        token = client.cookies["arkiv_session"]
        assert client.get("/dicom-web/studies").status_code == 200
        response = client.post("/logout")
        assert response.status_code == 303 and response.headers["location"] == "/login"
        assert 'arkiv_session=""' in response.headers["set-cookie"]
    with site.running.client() as stale:
        stale.cookies.set("arkiv_session", token)
        assert stale.get("/", headers=HTML).headers["location"] == "/login"
        assert_reason(stale.get("/dicom-web/studies"), 401)
    subtypes = [e.details.get("subtype", "") for e in audit(site.running, actor=name)]
    assert len([s for s in subtypes if "Logout" in s]) == 1


# -- throttling ------------------------------------------------------------------------------------


def _assert_locked(response: httpx.Response) -> None:
    assert response.status_code == 429, (response.status_code, response.text)
    assert int(response.headers["retry-after"]) >= 1


def test_five_wrong_passwords_lock_the_account(running: RunningArchive) -> None:
    add_account(running, "tannlege")
    add_account(running, "kollega")
    with running.client() as client:
        for _ in range(5):
            wrong = post_login(client, "tannlege", WRONG)
            assert wrong.status_code == 401
        right = post_login(client, "tannlege", PASSWORD)
        _assert_locked(right)
        assert right.headers["content-type"].startswith("text/html")
        assert 'class="error"' in right.text
        assert "arkiv_session=" not in right.headers.get("set-cookie", "")
    with basic(running, "tannlege", PASSWORD) as api:
        locked = api.get("/dicom-web/studies")
        _assert_locked(locked)
        assert locked.json()["reason"]
    outcomes = [e.outcome for e in reversed(audit(running, actor="tannlege", event_id=LOGIN))]
    assert outcomes[:5] == [4] * 5
    assert outcomes[5:] and 0 not in outcomes[5:]  # refused while locked, and audited as such
    # Another account is not affected.
    with sign_in(running, "kollega") as other:
        assert other.get("/dicom-web/studies").status_code == 200


def test_five_wrong_basic_passwords_lock_the_account(running: RunningArchive) -> None:
    add_account(running, "tannlege")
    with basic(running, "tannlege", WRONG) as wrong:
        for _ in range(5):
            assert_reason(wrong.get("/dicom-web/studies"), 401)
    with basic(running, "tannlege", PASSWORD) as api:
        _assert_locked(api.get("/dicom-web/studies"))
    with running.client() as client:
        form = post_login(client, "tannlege", PASSWORD)
        _assert_locked(form)


def test_many_failures_from_one_address_are_throttled(running: RunningArchive) -> None:
    add_account(running, "tannlege")
    add_account(running, "kollega")
    ingest_study(running, ASE, "Ødegård^Åse")
    statuses = []
    with browser(running, "127.0.0.2") as attacker:
        for n in range(25):
            response = post_login(attacker, f"gjett{n}", WRONG)
            statuses.append(response.status_code)
        assert statuses[0] == 401 and 429 in statuses
        throttled_from = statuses.index(429)
        assert statuses[throttled_from:] == [429] * (len(statuses) - throttled_from)
        assert int(response.headers["retry-after"]) >= 1
        # The address is refused whatever name it tries, over Basic as well.
        attacker.auth = ("kollega", PASSWORD)
        _assert_locked(attacker.get("/dicom-web/studies"))
    # Everyone else is still served.
    with sign_in(running, "tannlege") as client:
        found = client.get("/dicom-web/studies", params={"PatientID": ASE})
        assert found.status_code == 200 and len(found.json()) == 1
    with basic(running, "kollega", PASSWORD) as api:
        assert api.get("/dicom-web/studies").status_code == 200


def test_an_unknown_user_costs_the_same_password_check_as_a_known_one(
    running: RunningArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing must not tell an attacker which user names exist: the password is checked against
    an argon2 hash either way (counted rather than timed, so a busy machine cannot fool it)."""
    add_account(running, "tannlege")
    checks: list[str] = []
    real_verify = PasswordHasher.verify

    def counting_verify(self: PasswordHasher, hash: str, password: str | bytes) -> bool:
        checks.append(hash)
        return real_verify(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting_verify)
    for username in ("tannlege", "ukjent1", "ukjent2"):
        with running.client() as client:
            response = post_login(client, username, WRONG)
        assert response.status_code == 401
    assert len(checks) == 3
    assert all(h.startswith("$argon2id$") for h in checks)


# -- the browser UI --------------------------------------------------------------------------------


def test_search_by_national_id_shows_that_patients_studies(site: Site) -> None:
    with sign_in(site.running, "tannlege") as client:
        response = client.post("/search", data={"patient_id": ASE})
        assert response.status_code == 200
        assert ASE not in str(response.url)
        page = response.text
        assert "Ødegård, Åse" in page
        assert "2023-01-05" in page and "2024-06-10" in page
        hrefs, sources = links(page, "href"), links(page, "src")
        for study in site.ase:
            spec = study[0]
            assert f"/studies/{spec.study_uid}" in hrefs
            thumbnail = f"/dicom-web/studies/{spec.study_uid}/series/{spec.series_uid}/thumbnail"
            assert thumbnail in sources
            image = client.get(thumbnail)
            assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert site.bjorn[0].study_uid not in page and "Kåsa" not in page
        assert site.siri[0].study_uid not in page
        assert not [url for url in hrefs + sources if ASE in url], "national ID in a URL"


@pytest.mark.parametrize("name", ["ødegård", "ØDEGÅRD", "åse", "Ødeg*"])
def test_search_by_name_with_norwegian_letters(site: Site, name: str) -> None:
    with sign_in(site.running, "tannlege") as client:
        response = client.post("/search", data={"name": name})
    assert response.status_code == 200
    page = response.text
    assert all(study[0].study_uid in page for study in site.ase)
    assert site.bjorn[0].study_uid not in page
    assert site.siri[0].study_uid not in page  # Telemark's Ødegård


def test_a_search_without_keys_asks_for_one(site: Site) -> None:
    with sign_in(site.running, "tannlege") as client:
        response = client.post("/search", data={"patient_id": "", "name": " "})
    assert response.status_code == 200
    assert 'class="error"' in response.text


def test_a_search_that_finds_nothing_says_so(site: Site) -> None:
    with sign_in(site.running, "tannlege") as client:
        response = client.post("/search", data={"patient_id": "01010112345"})
    assert response.status_code == 200
    assert "Ingen treff." in response.text


def test_study_page_is_the_viewer_of_that_study(site: Site) -> None:
    specs = site.ase[0]
    with sign_in(site.running, "tannlege") as client:
        response = client.get(f"/studies/{specs[0].study_uid}", headers=HTML)
        assert response.status_code == 200
        assert f'data-doc-url="/api/studies/{specs[0].study_uid}/viewer"' in response.text
        assert "/static/viewer.js" in links(response.text, "src")
        document = client.get(f"/api/studies/{specs[0].study_uid}/viewer")
        assert document.status_code == 200
        thumbnails = [image["thumbnail_url"] for image in document.json()["images"]]
        assert sorted(thumbnails) == sorted(
            f"/dicom-web{instance_path(spec)}/thumbnail" for spec in specs
        )
        thumbnail = client.get(thumbnails[0])
        assert thumbnail.status_code == 200
        assert thumbnail.headers["content-type"] == "image/jpeg"


def test_image_page_opens_the_viewer_on_that_image(site: Site) -> None:
    spec = site.bjorn[0]
    with sign_in(site.running, "tannlege") as client:
        response = client.get(instance_path(spec), headers=HTML)
        assert response.status_code == 200
        assert f'data-initial-image="{spec.sop_uid}"' in response.text


def test_opening_pages_is_audited(site: Site) -> None:
    name = site.account("sider")
    spec = site.bjorn[0]
    with sign_in(site.running, name) as client:
        client.post("/search", data={"patient_id": BJORN})
        searches = audit(site.running, actor=name, event_id=QUERY)
        assert searches and all(e.patient_ids == (BJORN,) for e in searches)

        client.get(f"/studies/{spec.study_uid}", headers=HTML)
        [study_page] = audit(site.running, actor=name, event_id=ACCESSED)
        assert study_page.patient_ids == (BJORN,)
        assert study_page.study_uids == (spec.study_uid,)

        client.get(instance_path(spec), headers=HTML)
        image_page, _ = audit(site.running, actor=name, event_id=ACCESSED)
        assert image_page.patient_ids == (BJORN,)
        assert image_page.outcome == 0
        assert image_page.source_address == "127.0.0.1"


@pytest.mark.parametrize("study_uid", ["1.2.826.0.1.3680043.8.498.1", "abc", "1..2"])
def test_pages_of_unknown_studies_are_404(site: Site, study_uid: str) -> None:
    with sign_in(site.running, "tannlege") as client:
        response = client.get(f"/studies/{study_uid}", headers=HTML)
        assert response.status_code == 404
        image = client.get(f"/studies/{study_uid}/series/1.2.3/instances/1.2.4", headers=HTML)
        assert image.status_code == 404


# -- roles and counties ----------------------------------------------------------------------------


def test_auditor_searches_the_audit_log(site: Site) -> None:
    with basic(site.running, "revisor", PASSWORD) as auditor:
        everything = site.audit_api(auditor, limit=1000)
        assert len(everything) > 5
        by_patient = site.audit_api(auditor, patient=ASE)
        assert by_patient and all(ASE in e["patient_ids"] for e in by_patient)
        assert any(e["actor"] == "tannlege" and e["event_id"] == QUERY for e in by_patient)
        by_user = site.audit_api(auditor, user="tannlege")
        assert by_user and {e["actor"] for e in by_user} == {"tannlege"}
        queries = site.audit_api(auditor, action=QUERY)
        assert queries and {e["event_id"] for e in queries} == {QUERY}
        failures = site.audit_api(auditor, outcome=4)
        assert failures and {e["outcome"] for e in failures} == {4}
        [mistyped] = site.audit_api(auditor, user="tannlege", action=LOGIN, outcome=4)
        assert mistyped["source_address"] == "127.0.0.9"
        assert len(site.audit_api(auditor, limit=2)) == 2
        middle = everything[len(everything) // 2]
        since = site.audit_api(auditor, since=middle["recorded_at"], limit=1000)
        until = site.audit_api(auditor, until=middle["recorded_at"], limit=1000)
        assert all(e["recorded_at"] >= middle["recorded_at"] for e in since)
        assert all(e["recorded_at"] <= middle["recorded_at"] for e in until)
        # The bounds are inclusive, and together the two halves hold the whole log.
        assert middle in since and middle in until
        halves = {e["seq"] for e in since} | {e["seq"] for e in until}
        assert halves >= {e["seq"] for e in everything}


def test_auditor_sees_own_county_only(site: Site) -> None:
    with basic(site.running, "revisor", PASSWORD) as vestfold:
        events = site.audit_api(vestfold, limit=1000)
        assert events and {e["county"] for e in events} == {"vestfold"}
        assert site.audit_api(vestfold, user="tm-tannlege") == []
        about_siri = site.audit_api(vestfold, patient=SIRI)
        # Only the auditor's own search names her; nobody in Vestfold touched her record.
        assert {(e["actor"], e["event_id"]) for e in about_siri} == {("revisor", AUDIT_LOG_USED)}
    with basic(site.running, "tm-revisor", PASSWORD) as telemark:
        events = site.audit_api(telemark, limit=1000)
        assert events and {e["county"] for e in events} == {"telemark"}
        assert "tm-tannlege" in {e["actor"] for e in events}
        assert "tannlege" not in {e["actor"] for e in events}


def test_reading_the_audit_log_is_audited(site: Site) -> None:
    name = site.account("revisor", Role.AUDITOR)
    with basic(site.running, name, PASSWORD) as auditor:
        site.audit_api(auditor, patient=BJORN)
    [event] = audit(site.running, actor=name, event_id=AUDIT_LOG_USED)
    assert event.actor_role == "auditor"
    assert event.patient_ids == (BJORN,)
    assert BJORN in event.query
    assert event.source_address == "127.0.0.1"


def test_wrong_audit_filters_are_refused(site: Site) -> None:
    with basic(site.running, "revisor", PASSWORD) as auditor:
        for params in ({"colour": "red"}, {"limit": "0"}, {"outcome": "bad"}):
            assert_reason(auditor.get("/api/audit", params=params), 400)


def test_a_clinician_may_not_read_the_audit_log(site: Site) -> None:
    name = site.account("nysgjerrig")
    with basic(site.running, name, PASSWORD) as clinician:
        assert_reason(clinician.get("/api/audit"), 403)
        assert_reason(clinician.get("/api/audit", params={"patient": ASE}), 403)
    assert audit(site.running, actor=name, event_id=AUDIT_LOG_USED) == []


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMIN])
def test_auditors_and_admins_read_no_images(site: Site, role: Role) -> None:
    spec = site.ase[0][0]
    name = site.account(role.value, role)
    with basic(site.running, name, PASSWORD) as client:
        for path in (
            "/dicom-web/studies",
            f"/dicom-web/studies/{spec.study_uid}/metadata",
            f"/dicom-web{instance_path(spec)}",
            f"/dicom-web{instance_path(spec)}/rendered",
            f"/dicom-web/studies/{spec.study_uid}/thumbnail",
        ):
            response = client.get(path)
            assert_reason(response, 403)
            assert ASE not in response.text


def test_a_clinician_of_another_county_sees_none_of_its_studies(site: Site) -> None:
    spec = site.ase[0][0]
    with basic(site.running, "tm-tannlege", PASSWORD) as telemark:
        for params in ({}, {"PatientID": ASE}, {"StudyInstanceUID": spec.study_uid}):
            found = telemark.get("/dicom-web/studies", params=params)
            assert found.status_code == 200
            assert ASE not in found.text and spec.study_uid not in found.text
        series = telemark.get(f"/dicom-web/studies/{spec.study_uid}/series")
        assert series.status_code == 200 and series.json() == []
        for path in (
            f"/dicom-web/studies/{spec.study_uid}",
            f"/dicom-web/studies/{spec.study_uid}/metadata",
            f"/dicom-web/studies/{spec.study_uid}/thumbnail",
            f"/dicom-web{instance_path(spec)}",
            f"/dicom-web{instance_path(spec)}/metadata",
            f"/dicom-web{instance_path(spec)}/rendered",
        ):
            response = telemark.get(path)
            assert_reason(response, 404)
            assert ASE not in response.text
    with sign_in(site.running, "tm-tannlege") as client:
        page = client.post("/search", data={"patient_id": ASE})
        assert "Ingen treff." in page.text and spec.study_uid not in page.text
        viewer = client.get(f"/studies/{spec.study_uid}", headers=HTML)
        # the viewer names the owning county so the clinician can break the glass, and no more
        assert viewer.status_code == 403 and "Vestfold" in viewer.text
        assert ASE not in viewer.text and "Ødegård" not in viewer.text


def test_a_clinician_of_another_county_finds_only_their_own(site: Site) -> None:
    with basic(site.running, "tm-tannlege", PASSWORD) as telemark:
        found = telemark.get("/dicom-web/studies", params={"PatientName": "ødeg*"})
    assert [item["0020000D"]["Value"][0] for item in found.json()] == [site.siri[0].study_uid]


# -- security headers ------------------------------------------------------------------------------


def test_security_headers(site: Site) -> None:
    spec = site.bjorn[0]
    with basic(site.running, "tannlege", PASSWORD) as client:
        answers = {
            "search": client.get("/dicom-web/studies"),
            "metadata": client.get(f"/dicom-web/studies/{spec.study_uid}/metadata"),
            "retrieve": client.get(f"/dicom-web/studies/{spec.study_uid}"),
            "rendered": client.get(f"/dicom-web{instance_path(spec)}/rendered"),
            "not found": client.get("/dicom-web/studies/1.2.3/metadata"),
            "refused": client.get("/dicom-web/studies", params={"limit": "0"}),
        }
    with site.running.client() as anonymous:
        answers["unauthenticated"] = anonymous.get("/dicom-web/studies")
        answers["login page"] = anonymous.get("/login")
    for what, response in answers.items():
        assert response.headers.get("x-content-type-options") == "nosniff", what
        policy = response.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in policy, what
        # Metadata and rendered images carry an ETag and may be kept by the browser, but only
        # privately and revalidated each time; everything else is never stored.
        revalidated = what in ("metadata", "rendered")
        expected = "private, no-cache" if revalidated else "no-store"
        assert response.headers.get("cache-control") == expected, what
