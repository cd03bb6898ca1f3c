"""Web sessions and forms: server-side sessions with idle and absolute limits, a new id at every
sign-in, logout that really ends them, CSRF tokens on every form, and the security headers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from arkiv.accounts import Role
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.services import Archive
from storage.records import AuditQuery
from tests.conftest import PASSWORD, RunningArchive, post_login
from viewer.app import create_app

HTML = {"accept": "text/html"}


@pytest.fixture
def clinic(running: RunningArchive) -> RunningArchive:
    running.archive.accounts.add_user("tannlege", PASSWORD, Role.CLINICIAN, County.VESTFOLD)
    return running


def _session_cookie(client: httpx.Client) -> str:
    return client.cookies["arkiv_session"]


def test_a_form_post_without_its_csrf_token_is_refused(clinic: RunningArchive) -> None:
    with clinic.client() as client:
        assert post_login(client, "tannlege", PASSWORD).status_code == 303
        token = client.headers.pop("X-CSRF-Token")
        before = len(clinic.archive.index.find_audit_events(AuditQuery(event_id="110112")))
        refused = client.post("/search", data={"patient_id": "01017012345"})
        assert refused.status_code == 403 and "security token" in refused.json()["reason"]
        wrong = client.post("/search", data={"patient_id": "1", "csrf_token": "x" * 43})
        assert wrong.status_code == 403
        after = len(clinic.archive.index.find_audit_events(AuditQuery(event_id="110112")))
        assert after == before  # nothing was searched
        accepted = client.post("/search", data={"patient_id": "01017012345", "csrf_token": token})
        assert accepted.status_code == 200
        assert client.post("/logout").status_code == 403  # logout is a form too
        assert client.get("/", headers=HTML).status_code == 200


def test_a_cross_site_post_is_refused_even_with_the_token(clinic: RunningArchive) -> None:
    with clinic.client() as client:
        post_login(client, "tannlege", PASSWORD)
        response = client.post(
            "/search", data={"patient_id": "1"}, headers={"origin": "https://evil.example"}
        )
        assert response.status_code == 403


def test_the_login_form_needs_its_own_token(clinic: RunningArchive) -> None:
    with clinic.client() as client:
        response = client.post("/login", data={"username": "tannlege", "password": PASSWORD})
        assert response.status_code == 403
        assert "arkiv_session" not in client.cookies


def test_a_new_session_id_at_every_sign_in_and_the_old_one_is_dead(
    clinic: RunningArchive,
) -> None:
    with clinic.client() as client:
        post_login(client, "tannlege", PASSWORD)
        first = _session_cookie(client)
        post_login(client, "tannlege", PASSWORD)
        second = _session_cookie(client)
    assert first != second
    with clinic.client() as replay:
        replay.cookies.set("arkiv_session", first)
        assert replay.get("/", headers=HTML).headers["location"] == "/login"
    with clinic.client() as current:
        current.cookies.set("arkiv_session", second)
        assert current.get("/", headers=HTML).status_code == 200


def test_a_forged_cookie_is_not_a_session(clinic: RunningArchive) -> None:
    with clinic.client() as client:
        client.cookies.set("arkiv_session", "A" * 43)
        assert client.get("/", headers=HTML).headers["location"] == "/login"
        assert client.get("/dicom-web/studies").status_code == 401


def test_logout_ends_the_session_on_the_server(clinic: RunningArchive) -> None:
    with clinic.client() as client:
        post_login(client, "tannlege", PASSWORD)
        cookie = _session_cookie(client)
        response = client.post("/logout")
        assert response.status_code == 303
        assert "clear-site-data" in response.headers
    with clinic.client() as replay:
        replay.cookies.set("arkiv_session", cookie)
        assert replay.get("/api/session").status_code == 401
    [logout] = clinic.archive.index.find_audit_events(
        AuditQuery(actor="tannlege", event_id="110114", limit=1)
    )
    assert logout.details["subtype"] == "110123 Logout"


def test_disabling_an_account_ends_its_sessions(clinic: RunningArchive) -> None:
    with clinic.client() as client:
        post_login(client, "tannlege", PASSWORD)
        assert client.get("/api/session").status_code == 200
        clinic.archive.accounts.disable_user("tannlege")
        assert client.get("/api/session").status_code == 401
        assert post_login(client, "tannlege", PASSWORD).status_code == 401


@pytest.fixture
def quick_sessions(tmp_path: Path) -> Iterator[Archive]:
    settings = Settings(
        data_dir=tmp_path / "data", session_idle_minutes=1 / 60, session_hours=3 / 3600
    )
    archive = Archive(settings)
    archive.accounts.add_user("tannlege", PASSWORD, Role.CLINICIAN, County.VESTFOLD)
    try:
        yield archive
    finally:
        archive.close()


def test_sessions_end_when_idle_and_at_their_absolute_limit(quick_sessions: Archive) -> None:
    accounts = quick_sessions.accounts
    principal = accounts.authenticate("tannlege", PASSWORD, "127.0.0.1")
    idle = accounts.open_session(principal)
    time.sleep(1.3)
    assert accounts.session(idle, "127.0.0.1") is None  # idle for longer than a second
    busy = accounts.open_session(principal)
    deadline = time.monotonic() + 3.5
    alive = 0
    while time.monotonic() < deadline:
        if accounts.session(busy, "127.0.0.1") is not None:
            alive += 1
        time.sleep(0.1)
    assert alive > 0  # in use, it lived a while …
    assert accounts.session(busy, "127.0.0.1") is None  # … but not past its absolute limit


def test_secure_cookies_are_host_prefixed_secure_http_only_and_strict(tmp_path: Path) -> None:
    archive = Archive(Settings(data_dir=tmp_path / "data"))
    archive.accounts.add_user("tannlege", PASSWORD, Role.CLINICIAN, County.VESTFOLD)
    try:
        with TestClient(create_app(archive), base_url="https://arkiv.test") as client:
            page = client.get("/login")
            assert page.headers["set-cookie"].startswith("__Host-arkiv_login=")
            token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
            response = client.post(
                "/login",
                data={"username": "tannlege", "password": PASSWORD, "csrf_token": token},
                follow_redirects=False,
            )
            assert response.status_code == 303
            cookies = response.headers.get_list("set-cookie")
            session = next(c for c in cookies if c.startswith("__Host-arkiv_session="))
            attributes = {part.strip().lower() for part in session.split(";")[1:]}
            assert {"secure", "httponly", "samesite=strict", "path=/"} <= attributes
            assert not any(a.startswith("domain") for a in attributes)
    finally:
        archive.close()


def test_security_headers_and_hsts_on_tls(tmp_path: Path) -> None:
    for tls, expect_hsts in ((False, False), (True, True)):
        settings = Settings(
            data_dir=tmp_path / f"data{tls}",
            web_tls_cert="cert.pem" if tls else "",
            web_tls_key="key.pem" if tls else "",
        )
        archive = Archive(settings)
        try:
            with TestClient(create_app(archive)) as client:
                response = client.get("/login")
        finally:
            archive.close()
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"
        assert headers["cache-control"] == "no-store"
        assert ("strict-transport-security" in headers) is expect_hsts
