"""Local accounts, sign-in and web sessions.

Passwords are stored as argon2id hashes. Failed sign-ins slow an attacker down twice over: an
account locks for a growing time after a few consecutive failures (kept in the database, so every
web node sees it), and an address that fails many times within a few minutes is refused for a
while whichever names it tries. Every sign-in, failed or not, is an audit event.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from arkiv.audit import Actor, AuditLog, Event, EventType, Outcome
from arkiv.clock import iso, iso_in, now_iso, utc_now
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.errors import AuthenticationFailed, Forbidden, TooManyAttempts
from storage.index import Index
from storage.records import UserAccount, WebSession


class Role(StrEnum):
    CLINICIAN = "clinician"
    """Reads the images of the patients their county owns (others only by breaking the glass)."""
    AUDITOR = "auditor"
    """Reads their county's audit log (personvernombud)."""
    JOINT_AUDITOR = "joint-auditor"
    """Reads the audit log of all three counties (the joint data protection officer)."""
    ADMIN = "admin"
    """Manages users, peers and configuration; no access to images."""
    SERVICE = "service"
    """A DICOMweb client (another system) limited to its scopes and its county."""


SERVICE_SCOPES = frozenset({"search", "retrieve", "store"})
"""What a service account may be granted: QIDO-RS searches, WADO-RS reads, STOW-RS stores."""


DICOM_AE = "dicom-ae"
"""`Principal.auth_method` of a configured DICOM peer: known by its AE title, address and (on a
TLS port) certificate, acting as a service account of its county with the scopes its configured
services give it."""


@dataclass(frozen=True)
class Principal:
    """A signed-in user as the services see them, with the address the request came from."""

    username: str
    role: Role
    county: County
    address: str = ""
    scopes: frozenset[str] = frozenset()
    auth_method: str = "password"
    hpr_number: str = ""

    def actor(self) -> Actor:
        kind = "user"
        if self.auth_method == DICOM_AE:
            kind = "dicom-ae"
        elif self.role is Role.SERVICE:
            kind = "service"
        return Actor(
            name=self.username,
            kind=kind,
            county=self.county.value,
            address=self.address,
            role=self.role.value,
        )

    def at(self, address: str) -> Principal:
        return replace(self, address=address)


@dataclass(frozen=True)
class SessionState:
    """What a valid session cookie stands for: who, and the token its forms must carry."""

    principal: Principal
    csrf_token: str
    auth_method: str


def _principal(account: UserAccount, address: str, auth_method: str = "password") -> Principal:
    return Principal(
        username=account.username,
        role=Role(account.role),
        county=County(account.county),
        address=address,
        scopes=frozenset(account.scopes),
        auth_method=auth_method,
        hpr_number=account.hpr_number or "",
    )


def pid_digest(pid: str) -> str:
    """A user's national ID is kept only as this digest, enough to link an OIDC sign-in."""
    return hashlib.sha256(f"arkiv-user-pid\0{pid.strip()}".encode()).hexdigest()


_ADDRESS_WINDOW = 300.0
_ADDRESS_LIMIT = 20
_BASIC_CACHE_SECONDS = 60.0
_MAX_LOCK_SECONDS = 3600
_TOUCH_SECONDS = 15.0


class AccountService:
    def __init__(self, index: Index, audit: AuditLog, settings: Settings) -> None:
        self._index = index
        self._audit = audit
        self._settings = settings
        self._hasher = PasswordHasher()
        self._dummy_hash: str | None = None
        self._lock = threading.Lock()
        self._address_failures: dict[str, list[float]] = {}
        self._basic_cache: dict[str, tuple[float, Principal]] = {}

    # -- accounts --------------------------------------------------------------------------------

    def add_user(
        self,
        username: str,
        password: str | None,
        role: Role,
        county: County,
        *,
        display_name: str = "",
        hpr_number: str | None = None,
        pid: str | None = None,
        scopes: frozenset[str] = frozenset(),
    ) -> None:
        """Create an account. Without a password it can only sign in through OpenID Connect."""
        if not username or len(username) > 64 or not username.isprintable() or " " in username:
            raise ValueError("user name must be 1 to 64 printable characters without spaces")
        if password is not None and len(password) < 10:
            raise ValueError("password must be at least 10 characters")
        if password is None and not (hpr_number or pid):
            raise ValueError("an account without a password needs an HPR number or national ID")
        if hpr_number is not None and not (hpr_number.isdigit() and 1 <= len(hpr_number) <= 16):
            raise ValueError("HPR number must be digits only")
        unknown = set(scopes) - SERVICE_SCOPES
        if unknown:
            raise ValueError(f"unknown scopes {sorted(unknown)}; use {sorted(SERVICE_SCOPES)}")
        if scopes and role is not Role.SERVICE:
            raise ValueError("only service accounts have scopes")
        if role is Role.SERVICE and not scopes:
            raise ValueError("a service account needs at least one scope")
        account = UserAccount(
            username=username,
            password_hash=self._hasher.hash(password) if password is not None else "!",
            role=role.value,
            county=county.value,
            failed_logins=0,
            locked_until=None,
            display_name=display_name,
            hpr_number=hpr_number or None,
            pid_sha256=pid_digest(pid) if pid else None,
            scopes=tuple(sorted(scopes)),
        )
        with self._index.transaction() as tx:
            if not tx.add_user(account, now_iso()):
                raise ValueError(
                    f"user {username!r}, or an account with that HPR number or national ID, "
                    "already exists"
                )

    def disable_user(self, username: str, by: Principal | None = None) -> None:
        """Disable an account and end all its sessions at once."""
        with self._index.transaction() as tx:
            if not tx.set_disabled(username, True):
                raise ValueError(f"no user {username!r}")
        self._basic_cache.clear()
        if by is not None:
            self._audit.record(
                Event(
                    EventType.SECURITY_ALERT,
                    "U",
                    by.actor(),
                    details={"subtype": "user disabled", "user": username},
                )
            )

    # -- sign-in ---------------------------------------------------------------------------------

    def authenticate(self, username: str, password: str, address: str) -> Principal:
        """Check a password; audit the attempt; raise AuthenticationFailed or TooManyAttempts."""
        self._check_address(address)
        account = self._index.get_user(username)
        county = account.county if account else self._settings.county.value
        actor = Actor(
            name=username[:128],
            kind="user",
            county=county,
            address=address,
            role=account.role if account else "",
        )
        if account is not None and account.disabled:
            self._burn_verification(password)
            self._audit_login(actor, Outcome.SERIOUS_FAILURE, "account is disabled")
            raise AuthenticationFailed("wrong user name or password")
        if account is not None and account.locked_until and account.locked_until > now_iso():
            wait = _seconds_until(account.locked_until)
            self._audit_login(actor, Outcome.SERIOUS_FAILURE, "account locked after failures")
            raise TooManyAttempts(
                f"too many failed sign-ins; try again in {wait} seconds", retry_after=wait
            )
        if account is None:
            self._burn_verification(password)  # unknown names take as long as wrong passwords
        if account is None or not self._password_matches(account, password):
            self._note_address_failure(address)
            if account is not None:
                self._record_failure(account)
            self._audit_login(actor, Outcome.MINOR_FAILURE, "wrong user name or password")
            raise AuthenticationFailed("wrong user name or password")
        with self._index.transaction() as tx:
            tx.record_login_success(account.username)
            if self._hasher.check_needs_rehash(account.password_hash):
                tx.set_password(account.username, self._hasher.hash(password))
        self._audit_login(actor, Outcome.SUCCESS, "")
        return _principal(account, address)

    def authenticate_external(
        self,
        hpr_number: str | None,
        pid: str | None,
        address: str,
        details: dict[str, str],
    ) -> Principal:
        """An OpenID Connect sign-in: the provider vouched for the person, we pick the account.

        The account is found by HPR number, else by national ID; the person must have been given
        an account (role and county) by an administrator. `details` (issuer, subject, token id,
        client) go into the audit event, never the national ID itself.
        """
        account = self._index.find_user_by_identity(hpr_number, pid_digest(pid) if pid else None)
        name = account.username if account else (f"hpr:{hpr_number}" if hpr_number else "oidc")
        actor = Actor(
            name=name,
            kind="user",
            county=account.county if account else self._settings.county.value,
            address=address,
            role=account.role if account else "",
        )
        audit_details = {**details, "method": "oidc", "hpr_number": hpr_number or ""}
        if account is None or account.disabled:
            why = "no account for this identity" if account is None else "account is disabled"
            self._audit_login(actor, Outcome.SERIOUS_FAILURE, why, audit_details)
            raise Forbidden(f"signed in at the identity provider, but {why} in the archive")
        self._audit_login(actor, Outcome.SUCCESS, "", audit_details)
        return _principal(account, address, auth_method="oidc")

    def authenticate_basic(self, username: str, password: str, address: str) -> Principal:
        """HTTP Basic for API clients: the full check once a minute per credential, not per call."""
        key = hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._basic_cache.get(key)
        if cached is not None and now - cached[0] < _BASIC_CACHE_SECONDS:
            return cached[1].at(address)
        principal = self.authenticate(username, password, address)
        with self._lock:
            self._basic_cache[key] = (now, principal)
        return principal

    def _burn_verification(self, password: str) -> None:
        if self._dummy_hash is None:  # made on first need: DICOM workers never sign anyone in
            self._dummy_hash = self._hasher.hash(secrets.token_hex(16))
        with contextlib.suppress(VerifyMismatchError, VerificationError, InvalidHashError):
            self._hasher.verify(self._dummy_hash, password)

    def _password_matches(self, account: UserAccount, password: str) -> bool:
        try:
            return self._hasher.verify(account.password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _record_failure(self, account: UserAccount) -> None:
        failures = account.failed_logins + 1
        locked_until = None
        over = failures - self._settings.login_max_failures
        if over >= 0:
            seconds = min(
                self._settings.login_lockout_seconds * (2 ** min(over, 10)), _MAX_LOCK_SECONDS
            )
            locked_until = iso_in(timedelta(seconds=seconds))
        with self._index.transaction() as tx:
            tx.record_login_failure(account.username, locked_until)

    def _check_address(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            recent = [
                t for t in self._address_failures.get(address, []) if now - t < _ADDRESS_WINDOW
            ]
            self._address_failures[address] = recent
            if len(recent) >= _ADDRESS_LIMIT:
                wait = int(_ADDRESS_WINDOW - (now - recent[0])) + 1
                raise TooManyAttempts(
                    f"too many failed sign-ins from this address; try again in {wait} seconds",
                    retry_after=wait,
                )

    def _note_address_failure(self, address: str) -> None:
        with self._lock:
            self._address_failures.setdefault(address, []).append(time.monotonic())

    def _audit_login(
        self,
        actor: Actor,
        outcome: int,
        description: str,
        details: dict[str, str] | None = None,
    ) -> None:
        self._audit.record(
            Event(
                EventType.USER_AUTHENTICATION,
                "E",
                actor,
                outcome=outcome,
                outcome_description=description,
                details={"subtype": "110122 Login", **(details or {})},
            )
        )

    # -- sessions --------------------------------------------------------------------------------

    def open_session(self, principal: Principal) -> str:
        """A new random session token (a fresh one at every sign-in); only its hash is stored."""
        token = secrets.token_urlsafe(32)
        now = utc_now()
        with self._index.transaction() as tx:
            tx.purge_sessions(now_iso())
            tx.add_session(
                WebSession(
                    token_hash=_token_hash(token),
                    username=principal.username,
                    created_at=iso(now),
                    expires_at=iso(now + timedelta(hours=self._settings.session_hours)),
                    last_seen_at=iso(now),
                    csrf_token=secrets.token_urlsafe(32),
                    auth_method=principal.auth_method,
                )
            )
        return token

    def session(self, token: str, address: str) -> SessionState | None:
        """The session behind a cookie, if it is alive: not expired, not idle, account enabled.

        Each use moves the idle deadline on (written at most every `_TOUCH_SECONDS`).
        """
        token_hash = _token_hash(token)
        now = utc_now()
        session = self._index.get_session(token_hash, iso(now))
        if session is None:
            return None
        idle = timedelta(minutes=self._settings.session_idle_minutes)
        last_seen = _parse(session.last_seen_at or session.created_at)
        if now - last_seen > idle:
            with self._index.transaction() as tx:
                tx.delete_session(token_hash)
            return None
        account = self._index.get_user(session.username)
        if account is None or account.disabled:
            return None
        if (now - last_seen).total_seconds() > _TOUCH_SECONDS:
            with self._index.transaction() as tx:
                tx.touch_session(token_hash, iso(now))
        return SessionState(
            _principal(account, address, session.auth_method),
            session.csrf_token,
            session.auth_method,
        )

    def session_principal(self, token: str, address: str) -> Principal | None:
        state = self.session(token, address)
        return None if state is None else state.principal

    def end_session(self, token: str) -> None:
        """Forget a session without an audit event (a replaced cookie at a new sign-in)."""
        with self._index.transaction() as tx:
            tx.delete_session(_token_hash(token))

    def close_session(self, token: str, principal: Principal) -> None:
        with self._index.transaction() as tx:
            tx.delete_session(_token_hash(token))
        self._audit.record(
            Event(
                EventType.USER_AUTHENTICATION,
                "E",
                principal.actor(),
                details={"subtype": "110123 Logout"},
            )
        )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _parse(moment: str) -> datetime:
    return datetime.strptime(moment, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=utc_now().tzinfo)


def _seconds_until(moment: str) -> int:
    return max(1, int((_parse(moment) - utc_now()).total_seconds()) + 1)
