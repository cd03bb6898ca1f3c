"""OpenID Connect sign-in against a real, independent OpenID Provider.

The provider is the OpenID Certified `oidc-provider` npm package (tests/oidc/provider.mjs),
configured like HelseID: `private_key_jwt` only, PKCE required, PAR required, HPR number and
national ID in the ID token under HelseID's claim names, TLS with a certificate from a CA this
module makes (so the archive trusts it through `oidc_ca_file` alone). An HTTP client plays the
browser: it follows the redirects, posts the provider's login form and comes back to the archive.

Checks of the ID token that a well-behaved provider never lets fail (wrong nonce, audience,
signature, expiry …) use tokens signed here, served by an in-process stand-in for the provider.

Node.js and the npm packages are required: a missing one fails the tests, it never skips them.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import json
import re
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from arkiv.accounts import Role
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.oidc import (
    ASSERTION_SECONDS,
    CLIENT_ASSERTION_TYPE,
    OidcCancelled,
    OidcClient,
    OidcError,
    OidcLoginExpired,
    OidcUnavailable,
    PendingLogin,
    public_jwks,
)
from arkiv.services import Archive
from storage.records import AuditEvent, AuditQuery
from tests.conftest import free_port
from viewer.app import create_app
from viewer.routers import oidc as oidc_router

PROVIDER_DIR = Path(__file__).parent / "oidc"
CLIENT_ID = "arkiv-test"
PID_CLAIM = "helseid://claims/identity/pid"
HPR_CLAIM = "helseid://claims/hpr/hpr_number"
LEVEL_CLAIM = "helseid://claims/identity/security_level"
SCOPES = (
    "openid profile helseid://scopes/identity/pid helseid://scopes/hpr/hpr_number "
    "helseid://scopes/identity/security_level"
)
ACR = "urn:arkiv:test:loa-high"

DENTIST_PID = "13097248022"
PERSONS: dict[str, dict[str, str]] = {
    "tannlege": {
        "name": "Tone Tannlege",
        PID_CLAIM: DENTIST_PID,
        HPR_CLAIM: "1234567",
        LEVEL_CLAIM: "4",
    },
    "revisor": {"name": "Rolf Revisor", PID_CLAIM: "01017012345", HPR_CLAIM: "2345678"},
    "uten-hpr": {"name": "Una Uten-HPR", PID_CLAIM: "24088012345", LEVEL_CLAIM: "4"},
    "ukjent": {"name": "Ulf Ukjent", PID_CLAIM: "15066012345", HPR_CLAIM: "7654321"},
}


# -- prerequisites ---------------------------------------------------------------------------------


def _require_provider_packages() -> str:
    """Node and the pinned npm packages, or a failure naming the command that installs them."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run `make test` (it installs nodejs and npm)")
    stamp = PROVIDER_DIR / "node_modules" / ".arkiv-lock-sha256"
    lock = hashlib.sha256((PROVIDER_DIR / "package-lock.json").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text().strip() != lock:
        pytest.fail(
            "the OpenID Provider's npm packages are missing or outdated: run `make test` "
            "(it runs .ci/install-node-packages)"
        )
    return node


# -- keys and certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_key_file: Path
    other_client_key_file: Path


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _make_pki(directory: Path) -> Pki:
    """A test CA, a server certificate for localhost from it, and two client keys."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "arkiv test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(
        ca_file=directory / "ca.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server-key.pem",
        client_key_file=directory / "client-key.pem",
        other_client_key_file=directory / "other-client-key.pem",
    )
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.key_file, server_key)
    _write_key(pki.client_key_file, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    _write_key(
        pki.other_client_key_file, rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    return pki


# -- the provider and the archive ------------------------------------------------------------------


@dataclass
class Deployment:
    """The archive (web app) and the OpenID Provider, both running on loopback."""

    archive: Archive
    settings: Settings
    base_url: str
    issuer: str
    pki: Pki

    @property
    def callback_url(self) -> str:
        return self.settings.oidc_redirect_uri

    def browser(self) -> httpx.Client:
        """A cookie-keeping client that trusts the test CA, like a browser would."""
        return httpx.Client(
            verify=ssl.create_default_context(cafile=str(self.pki.ca_file)),
            follow_redirects=False,
            timeout=15,
            headers={"Accept": "text/html,application/xhtml+xml"},
        )


def _start_provider(node: str, directory: Path, pki: Pki, redirect_uri: str) -> Iterator[str]:
    config = {
        "host": "127.0.0.1",
        "hostname": "localhost",
        "tls": {"key": str(pki.key_file), "cert": str(pki.cert_file)},
        "client": {
            "client_id": CLIENT_ID,
            "redirect_uris": [redirect_uri],
            "jwks": public_jwks(pki.client_key_file, CLIENT_ID),
        },
        "accounts": PERSONS,
        "acr": ACR,
    }
    config_file = directory / "provider.json"
    config_file.write_text(json.dumps(config))
    log_file = directory / "provider.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [node, str(PROVIDER_DIR / "provider.mjs"), str(config_file)],
            cwd=PROVIDER_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env={"PATH": "/usr/bin:/bin", "NODE_ENV": "test"},
        )
    try:
        stdout = process.stdout
        assert stdout is not None
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(stdout.readline().decode()))
        reader.start()
        reader.join(timeout=20)
        line = ready[0].strip() if ready else ""
        if not line.startswith("READY "):
            process.kill()
            pytest.fail(f"the OpenID Provider did not start:\n{log_file.read_text()[-2000:]}")
        yield line.removeprefix("READY ")
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _app_with_oidc(archive: Archive) -> FastAPI:
    app = create_app(archive)
    if not any(getattr(route, "path", "") == "/auth/oidc/login" for route in app.routes):
        app.include_router(oidc_router.router)
    return app


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    node = _require_provider_packages()
    directory = tmp_path_factory.mktemp("oidc")
    pki = _make_pki(directory)
    http_port = free_port()
    redirect_uri = f"http://127.0.0.1:{http_port}/auth/oidc/callback"
    for issuer in _start_provider(node, directory, pki, redirect_uri):
        settings = Settings(
            data_dir=directory / "data",
            http_port=http_port,
            secure_cookies=False,
            oidc_issuer=issuer,
            oidc_client_id=CLIENT_ID,
            oidc_private_key_file=str(pki.client_key_file),
            oidc_redirect_uri=redirect_uri,
            oidc_scopes=SCOPES,
            oidc_ca_file=str(pki.ca_file),
        )
        archive = Archive(settings)
        archive.accounts.add_user(
            "tannlege", None, Role.CLINICIAN, County.VESTFOLD, hpr_number="1234567"
        )
        archive.accounts.add_user(
            "revisor", None, Role.AUDITOR, County.TELEMARK, hpr_number="2345678"
        )
        archive.accounts.add_user(
            "uten-hpr", None, Role.CLINICIAN, County.BUSKERUD, pid=PERSONS["uten-hpr"][PID_CLAIM]
        )
        config = uvicorn.Config(
            _app_with_oidc(archive),
            host="127.0.0.1",
            port=http_port,
            log_level="warning",
            access_log=False,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline:
                pytest.fail("web app did not start")
            time.sleep(0.05)
        try:
            yield Deployment(archive, settings, f"http://127.0.0.1:{http_port}", issuer, pki)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            archive.close()


# -- the browser's part ----------------------------------------------------------------------------


def _location(response: httpx.Response) -> str:
    return urljoin(str(response.url), response.headers["location"])


def to_callback(
    deployment: Deployment, browser: httpx.Client, person: str, action: str = "login"
) -> str:
    """Start a sign-in at the archive and go through the provider as `person` would, up to (not
    including) the return to the archive; the callback URL is returned."""
    response = browser.get(f"{deployment.base_url}/auth/oidc/login")
    for _ in range(12):
        if response.status_code in (302, 303):
            location = _location(response)
            if location.startswith(deployment.callback_url):
                return location
            response = browser.get(location)
        elif response.status_code == 200 and "/interaction/" in str(response.url):
            form = re.search(rf'action="([^"]*/{action})"', response.text)
            assert form is not None, response.text
            response = browser.post(urljoin(str(response.url), form[1]), data={"account": person})
        else:
            raise AssertionError(f"{response.status_code} at {response.url}: {response.text}")
    raise AssertionError("too many redirects")


def session_cookie(browser: httpx.Client) -> str | None:
    return browser.cookies.get("arkiv_session", domain="127.0.0.1")


def login_events(archive: Archive, actor: str) -> list[AuditEvent]:
    return archive.index.find_audit_events(AuditQuery(event_id="110114", actor=actor))


# -- sign-in through the real provider -------------------------------------------------------------


def test_sign_in_opens_a_session_for_the_linked_account(deployment: Deployment) -> None:
    with deployment.browser() as browser:
        start = browser.get(f"{deployment.base_url}/auth/oidc/login")
        assert start.status_code == 303
        pending = start.cookies.get("arkiv_oidc")
        assert pending
        set_cookie = start.headers["set-cookie"]
        assert "HttpOnly" in set_cookie
        assert "SameSite=lax" in set_cookie or "SameSite=Lax" in set_cookie
        authorize = urlsplit(start.headers["location"])
        query = parse_qs(authorize.query)
        # PAR: the browser carries only the request_uri, the parameters went to the provider.
        assert set(query) == {"client_id", "request_uri"}
        assert authorize.geturl().startswith(deployment.issuer)

        callback = to_callback(deployment, browser, "tannlege")
        assert "code" in parse_qs(urlsplit(callback).query)
        landing = browser.get(callback)
        assert landing.status_code == 200, landing.text
        assert 'http-equiv="refresh" content="0;url=/"' in landing.text
        assert session_cookie(browser)
        assert browser.cookies.get("arkiv_oidc", domain="127.0.0.1") is None

        me = browser.get(f"{deployment.base_url}/api/session").json()
        assert me["username"] == "tannlege"
        assert me["role"] == "clinician"
        assert me["county"] == "vestfold"
        assert me["auth_method"] == "oidc"

    event = login_events(deployment.archive, "tannlege")[0]
    assert event.outcome == 0
    details = event.details
    assert details["issuer"] == deployment.issuer
    assert details["sub"] == "tannlege"
    assert details["client_id"] == CLIENT_ID
    assert details["acr"] == ACR
    assert details["security_level"] == "4"
    assert details["hpr_number"] == "1234567"
    assert details["sid"]
    assert DENTIST_PID not in json.dumps(details)


def test_auditor_lands_on_the_audit_pages(deployment: Deployment) -> None:
    with deployment.browser() as browser:
        landing = browser.get(to_callback(deployment, browser, "revisor"))
        assert landing.status_code == 200
        assert 'content="0;url=/audit"' in landing.text
        me = browser.get(f"{deployment.base_url}/api/session").json()
        assert (me["username"], me["role"], me["county"]) == ("revisor", "auditor", "telemark")


def test_account_is_found_by_national_id_without_hpr_number(deployment: Deployment) -> None:
    with deployment.browser() as browser:
        assert browser.get(to_callback(deployment, browser, "uten-hpr")).status_code == 200
        assert browser.get(f"{deployment.base_url}/api/session").json()["county"] == "buskerud"


def test_unknown_person_is_refused_and_audited(deployment: Deployment) -> None:
    with deployment.browser() as browser:
        refused = browser.get(to_callback(deployment, browser, "ukjent"))
        assert refused.status_code == 403
        assert "no account for this identity" in refused.text
        assert session_cookie(browser) is None
        assert browser.get(f"{deployment.base_url}/api/session").status_code == 401
    event = login_events(deployment.archive, "hpr:7654321")[0]
    assert event.outcome == 8
    assert event.details["issuer"] == deployment.issuer
    assert event.details["sub"] == "ukjent"
    assert PERSONS["ukjent"][PID_CLAIM] not in json.dumps(event.details)


def test_answer_with_another_state_is_refused(deployment: Deployment) -> None:
    with deployment.browser() as browser:
        callback = to_callback(deployment, browser, "tannlege")
        forged = re.sub(r"state=[^&]+", "state=forged", callback)
        refused = browser.get(forged)
        assert refused.status_code == 400
        assert "state mismatch" in refused.text
        assert session_cookie(browser) is None
        # The pending login is gone with the failure: the genuine answer cannot follow up.
        assert browser.get(callback).status_code == 400
        assert session_cookie(browser) is None
    assert any(
        "state mismatch" in e.outcome_description for e in login_events(deployment.archive, "oidc")
    )


def test_answer_without_pending_login_is_refused(deployment: Deployment) -> None:
    with deployment.browser() as browser:
        callback = to_callback(deployment, browser, "tannlege")
    with deployment.browser() as other_browser:
        refused = other_browser.get(callback, headers={"Accept": "application/json"})
        assert refused.status_code == 400
        assert "no sign-in is in progress" in refused.json()["reason"]
        assert session_cookie(other_browser) is None


def test_replayed_code_is_refused_by_the_provider(deployment: Deployment) -> None:
    with deployment.browser() as browser:
        callback = to_callback(deployment, browser, "tannlege")
        pending = browser.cookies.get("arkiv_oidc", domain="127.0.0.1")
        assert pending
        assert browser.get(callback).status_code == 200
        first_session = session_cookie(browser)
        # Someone who kept the pending cookie and the callback URL tries it again.
        browser.cookies.set("arkiv_oidc", pending, domain="127.0.0.1")
        replay = browser.get(callback, headers={"Accept": "application/json"})
        assert replay.status_code == 401
        assert "did not accept the sign-in code" in replay.json()["reason"]
        assert session_cookie(browser) == first_session


def test_cancelled_sign_in_is_refused(deployment: Deployment) -> None:
    with deployment.browser() as browser:
        callback = to_callback(deployment, browser, "tannlege", action="abort")
        assert "error=access_denied" in callback
        refused = browser.get(callback, headers={"Accept": "application/json"})
        assert refused.status_code == 401
        assert "cancelled or refused" in refused.json()["reason"]
        assert session_cookie(browser) is None


def test_provider_refuses_a_client_assertion_signed_with_another_key(
    deployment: Deployment,
) -> None:
    wrong = replace(
        deployment.settings, oidc_private_key_file=str(deployment.pki.other_client_key_file)
    )
    client = OidcClient(wrong)
    try:
        with pytest.raises(OidcUnavailable, match="refused the archive's client authentication"):
            client.start()
    finally:
        client.close()


def test_token_request_is_authenticated_with_the_client_key(deployment: Deployment) -> None:
    """The code is redeemed with a client assertion too: with the wrong key the provider refuses
    it, even with the right code and PKCE verifier."""
    good = OidcClient(deployment.settings)
    wrong = OidcClient(
        replace(
            deployment.settings, oidc_private_key_file=str(deployment.pki.other_client_key_file)
        )
    )
    try:
        with deployment.browser() as browser:
            callback = to_callback(deployment, browser, "tannlege")
            sealed = browser.cookies.get("arkiv_oidc", domain="127.0.0.1")
            assert sealed
        pending = good.unseal(sealed)
        params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
        with pytest.raises(OidcUnavailable, match="invalid_client"):
            wrong.finish(pending, params)
        # The refused attempt did not use up the code: the right key still redeems it.
        assert good.finish(pending, params).hpr_number == "1234567"
    finally:
        good.close()
        wrong.close()


def test_pending_login_sealed_with_another_key_is_refused(deployment: Deployment) -> None:
    other = OidcClient(
        replace(
            deployment.settings, oidc_private_key_file=str(deployment.pki.other_client_key_file)
        )
    )
    mine = OidcClient(deployment.settings)
    try:
        sealed = other.seal(PendingLogin("s", "n", "v", time.time()))
        with pytest.raises(OidcLoginExpired):
            mine.unseal(sealed)
        with pytest.raises(OidcLoginExpired):
            mine.unseal(mine.seal(PendingLogin("s", "n", "v", time.time()))[:-2] + "AA")
        assert mine.unseal(mine.seal(PendingLogin("s", "n", "v", 5.0))).created == 5.0
    finally:
        other.close()
        mine.close()


def test_oidc_routes_are_absent_when_not_configured(tmp_path: Path) -> None:
    archive = Archive(Settings(data_dir=tmp_path / "data", secure_cookies=False))

    async def statuses() -> list[int]:
        transport = httpx.ASGITransport(app=_app_with_oidc(archive))
        async with httpx.AsyncClient(transport=transport, base_url="http://arkiv") as client:
            login = await client.get("/auth/oidc/login")
            callback = await client.get("/auth/oidc/callback?code=x&state=y")
            return [login.status_code, callback.status_code]

    try:
        assert asyncio.run(statuses()) == [404, 404]
    finally:
        archive.close()


def test_provider_certificate_is_checked_against_oidc_ca_file(deployment: Deployment) -> None:
    """Without the test CA the provider's certificate is not trusted, and sign-in cannot start."""
    client = OidcClient(replace(deployment.settings, oidc_ca_file=""))
    try:
        with pytest.raises(OidcUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            client.start()
    finally:
        client.close()


# -- ID token validation against a stand-in provider -----------------------------------------------

STAND_IN = "https://op.example.test"


@dataclass
class StandIn:
    """An in-process provider: discovery and keys served from memory, tokens signed here."""

    signing_key: RSAKey
    requests: list[httpx.Request]
    now: float
    client: OidcClient = field(init=False)

    def token(self, nonce: str = "nonce-1", **changes: Any) -> str:
        claims: dict[str, Any] = {
            "iss": STAND_IN,
            "sub": "person-1",
            "aud": CLIENT_ID,
            "iat": int(self.now),
            "exp": int(self.now) + 300,
            "nonce": nonce,
            HPR_CLAIM: "1234567",
        }
        claims.update(changes)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode({"alg": "RS256", "kid": "op-1"}, claims, self.signing_key)


@pytest.fixture(scope="module")
def stand_in_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RSAKey]:
    """The client's key file and the stand-in's signing key (RSA keys take a while to make)."""
    key_file = tmp_path_factory.mktemp("stand-in") / "client-key.pem"
    _write_key(key_file, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return key_file, RSAKey.generate_key(2048, parameters={"kid": "op-1", "alg": "RS256"})


@pytest.fixture
def stand_in(tmp_path: Path, stand_in_keys: tuple[Path, RSAKey]) -> Iterator[StandIn]:
    key_file, signing_key = stand_in_keys
    requests: list[httpx.Request] = []
    holder = StandIn(signing_key, requests, time.time())

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        path = request.url.path
        if path == "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": STAND_IN,
                    "authorization_endpoint": f"{STAND_IN}/auth",
                    "token_endpoint": f"{STAND_IN}/token",
                    "pushed_authorization_request_endpoint": f"{STAND_IN}/par",
                    "jwks_uri": f"{STAND_IN}/jwks",
                    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                    "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256"],
                    "code_challenge_methods_supported": ["S256"],
                },
            )
        if path == "/jwks":
            published = KeySet([holder.signing_key]).as_dict(private=False)
            return httpx.Response(200, json=dict(published))
        if path == "/par":
            return httpx.Response(201, json={"request_uri": "urn:par:1", "expires_in": 60})
        return httpx.Response(404)

    settings = Settings(
        data_dir=tmp_path,
        oidc_issuer=STAND_IN,
        oidc_client_id=CLIENT_ID,
        oidc_private_key_file=str(key_file),
        oidc_redirect_uri="http://127.0.0.1:1/auth/oidc/callback",
    )

    def clock() -> float:
        return holder.now

    holder.client = OidcClient(
        settings, http=httpx.Client(transport=httpx.MockTransport(handle)), clock=clock
    )
    yield holder
    holder.client.close()


def test_valid_id_token_is_accepted(stand_in: StandIn) -> None:
    claims = stand_in.client.validate_id_token(stand_in.token(), "nonce-1")
    identity = stand_in.client.identity(claims)
    assert (identity.subject, identity.hpr_number, identity.pid) == ("person-1", "1234567", None)


@pytest.mark.parametrize(
    ("changes", "nonce", "message"),
    [
        ({}, "another-nonce", "nonce mismatch"),
        ({"nonce": None}, "nonce-1", "nonce mismatch"),
        ({"aud": "another-client"}, "nonce-1", "not for this archive"),
        ({"aud": [CLIENT_ID, "another-client"]}, "nonce-1", "not for this archive"),
        ({"azp": "another-client"}, "nonce-1", "authorized party"),
        ({"iss": "https://evil.example.test"}, "nonce-1", "issued by"),
        ({"exp": int(time.time()) - 120}, "nonce-1", "expired"),
        ({"iat": int(time.time()) + 3600}, "nonce-1", "in the future"),
        ({"iat": int(time.time()) - 7200}, "nonce-1", "too long ago"),
        ({"exp": None}, "nonce-1", "lacks a valid exp"),
        ({"sub": ""}, "nonce-1", "no subject"),
    ],
)
def test_invalid_id_token_is_refused(
    stand_in: StandIn, changes: dict[str, Any], nonce: str, message: str
) -> None:
    with pytest.raises(OidcError, match=message):
        stand_in.client.validate_id_token(stand_in.token(**changes), nonce)


def test_id_token_signed_by_another_key_is_refused(stand_in: StandIn) -> None:
    impostor = RSAKey.generate_key(2048, parameters={"kid": "op-1", "alg": "RS256"})
    forged = jwt.encode(
        {"alg": "RS256", "kid": "op-1"},
        jwt.decode(stand_in.token(), stand_in.signing_key).claims,
        impostor,
    )
    with pytest.raises(OidcError, match="signature does not verify"):
        stand_in.client.validate_id_token(forged, "nonce-1")


def test_tampered_id_token_is_refused(stand_in: StandIn) -> None:
    header, _payload, signature = stand_in.token().split(".")
    claims = jwt.decode(stand_in.token(), stand_in.signing_key).claims
    claims[HPR_CLAIM] = "7777777"
    other_payload = jwt.encode({"alg": "RS256"}, claims, stand_in.signing_key).split(".")[1]
    with pytest.raises(OidcError, match="signature does not verify"):
        stand_in.client.validate_id_token(f"{header}.{other_payload}.{signature}", "nonce-1")


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_unsigned_or_symmetric_id_token_is_refused(stand_in: StandIn, alg: str) -> None:
    def part(document: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")

    claims = jwt.decode(stand_in.token(), stand_in.signing_key).claims
    token = f"{part({'alg': alg, 'kid': 'op-1'})}.{part(claims)}.c2ln"
    with pytest.raises(OidcError, match="not allowed"):
        stand_in.client.validate_id_token(token, "nonce-1")


def test_rotated_provider_key_is_fetched(stand_in: StandIn) -> None:
    """A token signed with a key the archive has not seen makes it fetch the provider's keys
    again, but not more than once a minute (a forged kid cannot make it hammer the provider)."""
    stand_in.client.validate_id_token(stand_in.token(), "nonce-1")
    old_claims = jwt.decode(stand_in.token(), stand_in.signing_key).claims
    stand_in.signing_key = RSAKey.generate_key(2048, parameters={"kid": "op-2", "alg": "RS256"})
    rotated = jwt.encode({"alg": "RS256", "kid": "op-2"}, old_claims, stand_in.signing_key)
    with pytest.raises(OidcError, match="signature does not verify"):
        stand_in.client.validate_id_token(rotated, "nonce-1")
    stand_in.now += 61
    rotated = jwt.encode(
        {"alg": "RS256", "kid": "op-2"},
        {**old_claims, "iat": int(stand_in.now)},
        stand_in.signing_key,
    )
    assert stand_in.client.validate_id_token(rotated, "nonce-1")["sub"] == "person-1"
    assert len([r for r in stand_in.requests if r.url.path == "/jwks"]) == 2


def test_client_assertion_is_private_key_jwt(stand_in: StandIn) -> None:
    """What the PAR endpoint receives: a short-lived, one-time JWT signed with the client key,
    addressed to the issuer, and the PKCE challenge (never the verifier)."""
    url, pending = stand_in.client.start()
    assert url == f"{STAND_IN}/auth?client_id={CLIENT_ID}&request_uri=urn%3Apar%3A1"
    stand_in.client.start()
    pushed = [parse_qs(r.content.decode()) for r in stand_in.requests if r.url.path == "/par"]
    form = {k: v[0] for k, v in pushed[0].items()}
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    assert form["code_challenge_method"] == "S256"
    assert pending.code_verifier not in json.dumps(pushed)
    assert form["state"] == pending.state and form["nonce"] == pending.nonce
    keys = KeySet.import_key_set(stand_in.client.public_jwks())  # type: ignore[arg-type]
    assertion = jwt.decode(form["client_assertion"], keys, algorithms=["PS256"])
    claims = assertion.claims
    assert assertion.header["alg"] == "PS256"
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == STAND_IN
    assert 0 < claims["exp"] - claims["iat"] <= ASSERTION_SECONDS
    second = jwt.decode(pushed[1]["client_assertion"][0], keys, algorithms=["PS256"]).claims
    assert second["jti"] != claims["jti"]


def test_expired_pending_login_is_refused(stand_in: StandIn) -> None:
    _, pending = stand_in.client.start()
    stand_in.now += 11 * 60
    with pytest.raises(OidcLoginExpired, match="10 minutes"):
        stand_in.client.finish(pending, {"state": pending.state, "code": "c", "iss": STAND_IN})


def test_provider_error_is_reported(stand_in: StandIn) -> None:
    _, pending = stand_in.client.start()
    with pytest.raises(OidcCancelled, match="access_denied"):
        stand_in.client.finish(pending, {"state": pending.state, "error": "access_denied"})
    with pytest.raises(OidcError, match="mix-up"):
        stand_in.client.finish(
            pending, {"state": pending.state, "code": "c", "iss": "https://other.test"}
        )


def test_discovery_with_another_issuer_is_refused(
    tmp_path: Path, stand_in_keys: tuple[Path, RSAKey]
) -> None:
    key_file, _ = stand_in_keys
    settings = Settings(
        data_dir=tmp_path,
        oidc_issuer=STAND_IN,
        oidc_client_id=CLIENT_ID,
        oidc_private_key_file=str(key_file),
        oidc_redirect_uri="http://127.0.0.1:1/cb",
    )
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, json={"issuer": "https://elsewhere.test"})
    )
    client = OidcClient(settings, http=httpx.Client(transport=transport))
    with pytest.raises(OidcUnavailable, match="oidc_issuer must be exactly"):
        client.start()


def test_incomplete_settings_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(OidcUnavailable, match="oidc_client_id, oidc_private_key_file"):
        OidcClient(Settings(data_dir=tmp_path, oidc_issuer=STAND_IN))
