"""OpenID Connect sign-in the way HelseID requires it (no web framework here, only the protocol).

HelseID (the health sector's OpenID Provider) accepts only confidential clients that authenticate
with `private_key_jwt`, sign users in with the authorization code flow with PKCE (S256), and push
their authorization requests first (PAR, RFC 9126). This module is that client:

* `OidcClient.start()` makes a fresh `state`, `nonce` and PKCE verifier, pushes the request to the
  provider's PAR endpoint (when the provider has one; HelseID does) and returns the URL to send
  the browser to, with the `PendingLogin` the web layer keeps until the browser comes back.
* `OidcClient.finish()` checks that the answer belongs to that pending login (state, compared in
  constant time; the provider's `iss`), redeems the code at the token endpoint with a fresh client
  assertion, validates the ID token (signature against the provider's published keys, issuer,
  audience, authorized party, expiry, issue time, nonce) and returns the person as an
  `OidcIdentity`: HPR number and national ID under the configured claim names, subject, session
  and token ids, authentication level.

The pending login travels in a cookie, sealed with AES-GCM under a key derived from the client's
private key: every web node of the archive holds the same key (it is the client's identity at
the provider), so any node can finish a login another node started, with no shared store, and
nobody without the key can read or forge it.

Whether a person may use the archive is not decided here: `AccountService.authenticate_external`
links the identity to an account an administrator made.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from arkiv.audit import Actor, AuditLog, Event, EventType, Outcome
from arkiv.config import Settings
from arkiv.errors import AuthenticationFailed

PENDING_SECONDS = 600
"""A sign-in must come back from the provider within ten minutes, then it is started again."""
ASSERTION_SECONDS = 60
"""Lifetime of a client assertion; HelseID accepts at most 60 seconds."""
CLOCK_LEEWAY_SECONDS = 60
"""Tolerated difference between the provider's clock and ours when checking ID token times."""
METADATA_SECONDS = 3600.0
"""Discovery metadata is fetched again after an hour (a stale copy is used if that fails)."""
JWKS_REFRESH_SECONDS = 60.0
"""An ID token signed with an unknown key fetches the provider's keys again, at most this often."""
HTTP_TIMEOUT_SECONDS = 10.0

SECURITY_LEVEL_CLAIM = "helseid://claims/identity/security_level"
"""HelseID's authentication level (3 or 4 per the Norwegian framework); recorded when sent."""
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

ID_TOKEN_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
"""Asymmetric algorithms only: `none` and the HMAC family (keyed with a shared secret the
archive does not have) are never accepted for an ID token."""

_SEAL_INFO = b"arkiv oidc pending-login cookie v1"


class OidcError(AuthenticationFailed):
    """Sign-in through the identity provider did not succeed; the message says why and what to do.

    Subclasses say whose move it is: the user's (start again) or the operator's (the provider
    cannot be used). This class itself means the provider's answer could not be accepted.
    """


class OidcLoginExpired(OidcError):
    """The browser came back without a usable pending login (too late, another tab, or forged);
    starting the sign-in again is the remedy."""


class OidcCancelled(OidcError):
    """The person cancelled at the identity provider, or it refused to sign them in."""


class OidcUnavailable(OidcError):
    """The identity provider cannot be used right now: unreachable, answering something unusable,
    refusing the archive's client credentials, or the archive's OIDC settings are incomplete."""


@dataclass(frozen=True)
class PendingLogin:
    """What the archive must remember between sending the browser away and its return."""

    state: str
    nonce: str
    code_verifier: str
    created: float
    """Seconds since the epoch."""

    def expired(self, now: float) -> bool:
        return not (self.created - CLOCK_LEEWAY_SECONDS <= now <= self.created + PENDING_SECONDS)


@dataclass(frozen=True)
class OidcIdentity:
    """The person the provider vouched for, as read from a validated ID token."""

    issuer: str
    subject: str
    client_id: str
    hpr_number: str | None
    pid: str | None
    """National ID (fødselsnummer or D-nummer): used to find the account, never logged."""
    name: str = ""
    session_id: str = ""
    token_id: str = ""
    acr: str = ""
    security_level: str = ""
    auth_time: int | None = None

    def audit_details(self) -> dict[str, str]:
        """What the login audit event records about this sign-in (never the national ID)."""
        details = {
            "issuer": self.issuer,
            "sub": self.subject,
            "client_id": self.client_id,
            "sid": self.session_id,
            "jti": self.token_id,
            "acr": self.acr,
            "security_level": self.security_level,
        }
        return {key: value for key, value in details.items() if value}


@dataclass(frozen=True)
class _ClientKey:
    key: RSAKey | ECKey | OKPKey
    algorithms: tuple[str, ...]
    """Signing algorithms this key can make, in order of preference."""
    seal_key: bytes


class OidcClient:
    """The archive as an OpenID Connect client of one provider, built from the settings.

    Thread-safe: discovery metadata and the provider's keys are cached behind a lock, everything
    else is per call. One instance per web process is enough.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        missing = [
            name
            for name in (
                "oidc_issuer",
                "oidc_client_id",
                "oidc_private_key_file",
                "oidc_redirect_uri",
            )
            if not getattr(settings, name)
        ]
        if missing:
            raise OidcUnavailable(
                "OpenID Connect sign-in is not set up completely: set " + ", ".join(missing)
            )
        self.issuer = settings.oidc_issuer
        self.client_id = settings.oidc_client_id
        self.redirect_uri = settings.oidc_redirect_uri
        self.scopes = settings.oidc_scopes
        self._pid_claim = settings.oidc_pid_claim
        self._hpr_claim = settings.oidc_hpr_claim
        self._clock = clock
        _require_secure_url(self.issuer, "oidc_issuer")
        self._key = _load_client_key(Path(settings.oidc_private_key_file), self.client_id)
        self._http = http or httpx.Client(
            verify=_tls_context(settings.oidc_ca_file),
            timeout=HTTP_TIMEOUT_SECONDS,
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )
        self._owns_http = http is None
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._jwks: KeySet | None = None
        self._jwks_at = 0.0

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    # -- what the provider needs to know about us ------------------------------------------------

    def public_jwks(self) -> dict[str, Any]:
        """The public half of the client key as a JWK Set: what is registered at the provider
        (HelseID's self-service takes exactly this)."""
        return _public_jwks(self._key)

    # -- the two steps of a sign-in --------------------------------------------------------------

    def start(self) -> tuple[str, PendingLogin]:
        """The URL to send the browser to, and what to keep until it comes back.

        With a PAR endpoint the request's parameters go to the provider directly, authenticated
        with a client assertion, and the browser carries only an opaque `request_uri`.
        """
        metadata = self.metadata()
        pending = PendingLogin(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            code_verifier=secrets.token_urlsafe(64),
            created=self._clock(),
        )
        params = {
            "client_id": self.client_id,
            "response_type": "code",
            "redirect_uri": self.redirect_uri,
            "scope": self.scopes,
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": create_s256_code_challenge(pending.code_verifier),
            "code_challenge_method": "S256",
        }
        authorize = str(metadata["authorization_endpoint"])
        par_endpoint = metadata.get("pushed_authorization_request_endpoint")
        if isinstance(par_endpoint, str) and par_endpoint:
            answer = self._post(
                par_endpoint,
                {**params, **self._client_authentication()},
                "pushed authorization request",
            )
            request_uri = answer.get("request_uri")
            if not isinstance(request_uri, str) or not request_uri:
                raise OidcUnavailable(
                    "the identity provider's PAR endpoint answered without a request_uri"
                )
            query = {"client_id": self.client_id, "request_uri": request_uri}
        elif metadata.get("require_pushed_authorization_requests") is True:
            raise OidcUnavailable(
                "the identity provider requires pushed authorization requests but publishes "
                "no pushed_authorization_request_endpoint"
            )
        else:
            query = params
        return str(httpx.URL(authorize).copy_merge_params(query)), pending

    def finish(self, pending: PendingLogin, params: Mapping[str, str]) -> OidcIdentity:
        """Check the provider's answer, redeem the code and validate the ID token.

        `params` are the query parameters the browser brought to the callback.
        """
        if pending.expired(self._clock()):
            raise OidcLoginExpired(
                f"the sign-in took longer than {PENDING_SECONDS // 60} minutes; start it again"
            )
        state = params.get("state", "")
        if not state or not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise OidcLoginExpired(
                "the answer from the identity provider does not belong to the sign-in started "
                "in this browser (state mismatch); start the sign-in again"
            )
        metadata = self.metadata()
        returned_issuer = params.get("iss")
        if returned_issuer is not None and returned_issuer != self.issuer:
            raise OidcError(
                f"the answer names issuer {_quoted(returned_issuer)}, not {self.issuer} "
                "(possible mix-up attack); sign-in refused"
            )
        if returned_issuer is None and metadata.get(
            "authorization_response_iss_parameter_supported"
        ):
            raise OidcError("the answer from the identity provider lacks its issuer (iss)")
        error = params.get("error")
        if error:
            description = params.get("error_description", "")
            if error in ("access_denied", "login_required", "consent_required"):
                raise OidcCancelled(
                    "the sign-in was cancelled or refused at the identity provider "
                    f"({_quoted(error)}{': ' + _quoted(description) if description else ''})"
                )
            raise OidcError(
                f"the identity provider reported an error: {_quoted(error)}"
                f"{': ' + _quoted(description) if description else ''}"
            )
        code = params.get("code", "")
        if not code:
            raise OidcError("the answer from the identity provider carries no authorization code")
        tokens = self._post(
            str(metadata["token_endpoint"]),
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": pending.code_verifier,
                "client_id": self.client_id,
                **self._client_authentication(),
            },
            "token request",
        )
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise OidcError(
                "the identity provider issued no ID token; the scope must include openid"
            )
        return self.identity(self.validate_id_token(id_token, pending.nonce))

    # -- ID token ----------------------------------------------------------------------------------

    def validate_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The claims of an ID token after the checks of OpenID Connect Core 3.1.3.7."""
        try:
            header = jws.extract_compact(id_token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError) as exc:
            raise OidcError("the ID token is not a signed JWT") from exc
        alg = header.get("alg")
        if alg not in ID_TOKEN_ALGORITHMS:
            raise OidcError(
                f"the ID token is signed with {_quoted(str(alg))}, which is not allowed"
            )
        kid = header.get("kid")
        key_set = self._provider_keys(kid if isinstance(kid, str) else None)
        try:
            token = jwt.decode(id_token, key_set, algorithms=[alg])
        except JoseError as exc:
            raise OidcError(
                "the ID token's signature does not verify with the identity provider's keys"
            ) from exc
        claims = dict(token.claims)
        self._check_claims(claims, nonce)
        return claims

    def _check_claims(self, claims: dict[str, Any], nonce: str) -> None:
        if claims.get("iss") != self.issuer:
            raise OidcError(
                f"the ID token was issued by {_quoted(str(claims.get('iss')))}, not {self.issuer}"
            )
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or audiences != [self.client_id]:
            raise OidcError(
                f"the ID token is meant for {_quoted(json.dumps(audience))}, not for this archive "
                f"({self.client_id})"
            )
        if "azp" in claims and claims["azp"] != self.client_id:
            raise OidcError("the ID token's authorized party (azp) is another client")
        now = self._clock()
        exp, iat = _numeric(claims.get("exp")), _numeric(claims.get("iat"))
        if exp is None or iat is None:
            raise OidcError("the ID token lacks a valid exp or iat")
        if now >= exp + CLOCK_LEEWAY_SECONDS:
            raise OidcError("the ID token has expired; start the sign-in again")
        if iat > now + CLOCK_LEEWAY_SECONDS:
            raise OidcError("the ID token is issued in the future; check the clocks")
        if iat < now - PENDING_SECONDS - CLOCK_LEEWAY_SECONDS:
            raise OidcError("the ID token was issued too long ago; start the sign-in again")
        not_before = _numeric(claims.get("nbf", 0))
        if not_before is None or not_before > now + CLOCK_LEEWAY_SECONDS:
            raise OidcError("the ID token is not valid yet")
        token_nonce = claims.get("nonce")
        if not isinstance(token_nonce, str) or not hmac.compare_digest(
            token_nonce.encode(), nonce.encode()
        ):
            raise OidcError(
                "the ID token does not belong to this sign-in (nonce mismatch); start it again"
            )
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise OidcError("the ID token names no subject (sub)")

    def identity(self, claims: Mapping[str, Any]) -> OidcIdentity:
        """The person in validated claims, with HPR number and national ID under the configured
        claim names."""
        hpr_number = _text_claim(claims, self._hpr_claim)
        pid = _text_claim(claims, self._pid_claim)
        if not hpr_number and not pid:
            raise OidcError(
                f"the identity provider sent neither {self._hpr_claim} nor {self._pid_claim}; "
                "the administrator must request their scopes (oidc_scopes) and claim names"
            )
        auth_time = claims.get("auth_time")
        return OidcIdentity(
            issuer=str(claims["iss"]),
            subject=str(claims["sub"]),
            client_id=str(claims.get("azp") or self.client_id),
            hpr_number=hpr_number,
            pid=pid,
            name=_text_claim(claims, "name") or "",
            session_id=_text_claim(claims, "sid") or "",
            token_id=_text_claim(claims, "jti") or "",
            acr=_text_claim(claims, "acr") or "",
            security_level=_text_claim(claims, SECURITY_LEVEL_CLAIM) or "",
            auth_time=auth_time if isinstance(auth_time, int) else None,
        )

    # -- the pending login in a cookie -----------------------------------------------------------

    def seal(self, pending: PendingLogin) -> str:
        """The pending login as an opaque cookie value (AES-GCM: confidential and unforgeable)."""
        nonce = secrets.token_bytes(12)
        plain = json.dumps(asdict(pending), separators=(",", ":")).encode()
        sealed = AESGCM(self._key.seal_key).encrypt(nonce, plain, _SEAL_INFO)
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def unseal(self, value: str) -> PendingLogin:
        """The pending login back from its cookie; anything altered or foreign is refused."""
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            plain = AESGCM(self._key.seal_key).decrypt(raw[:12], raw[12:], _SEAL_INFO)
            document = json.loads(plain)
            pending = PendingLogin(
                state=str(document["state"]),
                nonce=str(document["nonce"]),
                code_verifier=str(document["code_verifier"]),
                created=float(document["created"]),
            )
        except (InvalidTag, ValueError, KeyError, TypeError) as exc:
            raise OidcLoginExpired(
                "the sign-in in progress cannot be read (started with another key, or altered); "
                "start it again"
            ) from exc
        return pending

    # -- talking to the provider -----------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """The provider's discovery document, fetched once an hour and checked for what the
        archive relies on."""
        with self._lock:
            fresh = self._metadata is not None and (
                self._clock() - self._metadata_at < METADATA_SECONDS
            )
            if fresh and self._metadata is not None:
                return self._metadata
            try:
                self._metadata = self._discover()
                self._metadata_at = self._clock()
            except OidcUnavailable:
                if self._metadata is None:
                    raise
            return self._metadata

    def _discover(self) -> dict[str, Any]:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = self._get_json(url, "discovery document")
        if document.get("issuer") != self.issuer:
            raise OidcUnavailable(
                f"the discovery document at {url} names issuer "
                f"{_quoted(str(document.get('issuer')))}; oidc_issuer must be exactly that"
            )
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(name)
            if not isinstance(value, str) or not value:
                raise OidcUnavailable(f"the identity provider's discovery document lacks {name}")
            _require_secure_url(value, name)
        par = document.get("pushed_authorization_request_endpoint")
        if par is not None:
            if not isinstance(par, str):
                raise OidcUnavailable("pushed_authorization_request_endpoint is not a URL")
            _require_secure_url(par, "pushed_authorization_request_endpoint")
        methods = document.get("token_endpoint_auth_methods_supported")
        if isinstance(methods, list) and "private_key_jwt" not in methods:
            raise OidcUnavailable(
                "the identity provider does not offer private_key_jwt client authentication"
            )
        challenges = document.get("code_challenge_methods_supported")
        if isinstance(challenges, list) and "S256" not in challenges:
            raise OidcUnavailable("the identity provider does not offer PKCE with S256")
        return document

    def _provider_keys(self, kid: str | None) -> KeySet:
        """The provider's signing keys, fetched again once when a token names an unknown key
        (the provider rotated its keys)."""
        with self._lock:
            keys = self._jwks
            stale = abs(self._clock() - self._jwks_at) >= JWKS_REFRESH_SECONDS
        if keys is not None and (_has_key(keys, kid) or not stale):
            return keys
        jwks_uri = str(self.metadata()["jwks_uri"])
        document = self._get_json(jwks_uri, "signing keys (jwks_uri)")
        try:
            keys = KeySet.import_key_set({"keys": list(document.get("keys", []))})
        except (JoseError, ValueError, TypeError) as exc:
            raise OidcUnavailable("the identity provider's signing keys cannot be read") from exc
        with self._lock:
            self._jwks = keys
            self._jwks_at = self._clock()
        return keys

    def _client_authentication(self) -> dict[str, str]:
        """A fresh `private_key_jwt` client assertion (RFC 7523): one-time `jti`, 60 s lifetime,
        audience the issuer (HelseID requires the STS itself as audience)."""
        metadata = self._metadata or {}
        offered = metadata.get("token_endpoint_auth_signing_alg_values_supported")
        algorithm = next(
            (a for a in self._key.algorithms if not isinstance(offered, list) or a in offered),
            None,
        )
        if algorithm is None:
            raise OidcUnavailable(
                "the identity provider accepts none of the algorithms the client key can sign "
                f"with ({', '.join(self._key.algorithms)})"
            )
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.issuer,
            "jti": str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + ASSERTION_SECONDS,
        }
        header = {"alg": algorithm, "kid": self._key.key.kid or ""}
        assertion = jwt.encode(header, claims, self._key.key, algorithms=[algorithm])
        return {"client_assertion_type": CLIENT_ASSERTION_TYPE, "client_assertion": assertion}

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = self._http.get(url)
        except httpx.HTTPError as exc:
            raise OidcUnavailable(
                f"the identity provider cannot be reached for its {what}: {_describe(exc)}"
            ) from exc
        if response.status_code != 200:
            raise OidcUnavailable(
                f"the identity provider answered {response.status_code} for its {what} ({url})"
            )
        return _json_object(response, what)

    def _post(self, url: str, form: dict[str, str], what: str) -> dict[str, Any]:
        try:
            response = self._http.post(url, data=form)
        except httpx.HTTPError as exc:
            raise OidcUnavailable(
                f"the identity provider cannot be reached for the {what}: {_describe(exc)}"
            ) from exc
        if response.status_code in (200, 201):
            return _json_object(response, what)
        error, description = _oauth_error(response)
        detail = f"{_quoted(error)}{': ' + _quoted(description) if description else ''}"
        if error == "invalid_client" or response.status_code == 401:
            raise OidcUnavailable(
                f"the identity provider refused the archive's client authentication in the {what} "
                f"({detail}); check oidc_client_id and that the public key of "
                "oidc_private_key_file is registered for the client"
            )
        if error == "invalid_grant":
            raise OidcError(
                "the identity provider did not accept the sign-in code (already used, expired, or "
                f"issued to another sign-in) ({detail}); start the sign-in again"
            )
        raise OidcUnavailable(
            f"the identity provider refused the {what} with {response.status_code} ({detail})"
        )


def record_failure(audit: AuditLog, settings: Settings, address: str, error: OidcError) -> None:
    """Audit a sign-in through the provider that failed before an account was looked up.

    Failures after that (no account, disabled account) are audited by `authenticate_external`.
    A stale or cancelled sign-in is a minor failure; an answer that does not validate may be an
    attack and is a serious one.
    """
    minor = isinstance(error, OidcLoginExpired | OidcCancelled)
    audit.record(
        Event(
            EventType.USER_AUTHENTICATION,
            "E",
            Actor(name="oidc", kind="user", county=settings.county.value, address=address),
            outcome=Outcome.MINOR_FAILURE if minor else Outcome.SERIOUS_FAILURE,
            outcome_description=str(error)[:500],
            details={"subtype": "110122 Login", "method": "oidc", "issuer": settings.oidc_issuer},
        )
    )


def public_jwks(key_file: Path, client_id: str = "") -> dict[str, Any]:
    """The public JWK Set of a client key file, for registering the client at the provider."""
    return _public_jwks(_load_client_key(key_file, client_id))


def _public_jwks(key: _ClientKey) -> dict[str, Any]:
    public = dict(key.key.as_dict(private=False))
    return {"keys": [{**public, "use": "sig", "alg": key.algorithms[0]}]}


# -- helpers ---------------------------------------------------------------------------------------


def _load_client_key(path: Path, client_id: str) -> _ClientKey:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise OidcUnavailable(f"cannot read oidc_private_key_file {path}: {exc.strerror}") from exc
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise OidcUnavailable(
            f"oidc_private_key_file {path} is not an unencrypted PEM private key"
        ) from exc
    key: RSAKey | ECKey | OKPKey
    algorithms: tuple[str, ...]
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < 2048:
            raise OidcUnavailable(f"oidc_private_key_file {path}: RSA keys need 2048 bits or more")
        key, algorithms = RSAKey.import_key(private), ("PS256", "RS256")
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if private.curve.name not in by_curve:
            raise OidcUnavailable(f"oidc_private_key_file {path}: unsupported curve")
        key, algorithms = ECKey.import_key(private), (by_curve[private.curve.name],)
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        key, algorithms = OKPKey.import_key(private), ("EdDSA",)
    else:
        raise OidcUnavailable(f"oidc_private_key_file {path}: use an RSA, EC or Ed25519 key")
    key.ensure_kid()
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    seal_key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=hashlib.sha256(client_id.encode()).digest(),
        info=_SEAL_INFO,
    ).derive(der)
    return _ClientKey(key=key, algorithms=algorithms, seal_key=seal_key)


def _tls_context(ca_file: str) -> ssl.SSLContext:
    """TLS 1.2 or newer (HelseID's profile); the configured CA bundle, else the system's."""
    try:
        context = ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise OidcUnavailable(f"cannot load oidc_ca_file {ca_file}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _require_secure_url(url: str, name: str) -> None:
    """Only HTTPS, except plain HTTP to a loopback address (a provider on the same machine)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return
    raise OidcUnavailable(f"{name} must be an https URL, not {_quoted(url)}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _has_key(keys: KeySet, kid: str | None) -> bool:
    if kid is None:
        return len(keys.keys) == 1
    return any(key.kid == kid for key in keys.keys)


def _numeric(value: object) -> float | None:
    """A NumericDate claim as a number; None when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _text_claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int):
        text = str(value).strip()
        return text or None
    return None


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError as exc:
        raise OidcUnavailable(f"the identity provider's {what} is not JSON") from exc
    if not isinstance(document, dict):
        raise OidcUnavailable(f"the identity provider's {what} is not a JSON object")
    return document


def _oauth_error(response: httpx.Response) -> tuple[str, str]:
    try:
        document = response.json()
    except ValueError:
        return f"HTTP {response.status_code}", ""
    if not isinstance(document, dict):
        return f"HTTP {response.status_code}", ""
    return str(document.get("error", f"HTTP {response.status_code}")), str(
        document.get("error_description", "")
    )


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]


def _quoted(text: str) -> str:
    """Provider-supplied text, shortened and stripped of control characters before a user or the
    log sees it."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned[:200]
