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
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from arkiv.audit import Actor, AuditLog, Event, EventType, Outcome
from arkiv.clock import iso, iso_in, now_iso, utc_now
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.errors import AuthenticationFailed, TooManyAttempts
from storage.index import Index
from storage.records import UserAccount, WebSession


class Role(StrEnum):
    CLINICIAN = "clinician"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """A signed-in user as the services see them, with the address the request came from."""

    username: str
    role: Role
    county: County
    address: str = ""

    def actor(self) -> Actor:
        return Actor(
            name=self.username,
            kind="user",
            county=self.county.value,
            address=self.address,
            role=self.role.value,
        )


_ADDRESS_WINDOW = 300.0
_ADDRESS_LIMIT = 20
_BASIC_CACHE_SECONDS = 60.0
_MAX_LOCK_SECONDS = 3600


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

    def add_user(self, username: str, password: str, role: Role, county: County) -> None:
        if not username or len(username) > 64 or not username.isprintable() or " " in username:
            raise ValueError("user name must be 1 to 64 printable characters without spaces")
        if len(password) < 10:
            raise ValueError("password must be at least 10 characters")
        account = UserAccount(
            username=username,
            password_hash=self._hasher.hash(password),
            role=role.value,
            county=county.value,
            failed_logins=0,
            locked_until=None,
        )
        with self._index.transaction() as tx:
            if not tx.add_user(account, now_iso()):
                raise ValueError(f"user {username!r} already exists")

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
        return Principal(account.username, Role(account.role), County(account.county), address)

    def authenticate_basic(self, username: str, password: str, address: str) -> Principal:
        """HTTP Basic for API clients: the full check once a minute per credential, not per call."""
        key = hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._basic_cache.get(key)
        if cached is not None and now - cached[0] < _BASIC_CACHE_SECONDS:
            p = cached[1]
            return Principal(p.username, p.role, p.county, address)
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

    def _audit_login(self, actor: Actor, outcome: int, description: str) -> None:
        self._audit.record(
            Event(
                EventType.USER_AUTHENTICATION,
                "E",
                actor,
                outcome=outcome,
                outcome_description=description,
                details={"subtype": "110122 Login"},
            )
        )

    # -- sessions --------------------------------------------------------------------------------

    def open_session(self, principal: Principal) -> str:
        """A new random session token; only its hash is stored."""
        token = secrets.token_urlsafe(32)
        hours = self._settings.session_hours
        with self._index.transaction() as tx:
            tx.purge_sessions(now_iso())
            tx.add_session(
                WebSession(
                    token_hash=_token_hash(token),
                    username=principal.username,
                    created_at=now_iso(),
                    expires_at=iso(utc_now() + timedelta(hours=hours)),
                )
            )
        return token

    def session_principal(self, token: str, address: str) -> Principal | None:
        session = self._index.get_session(_token_hash(token), now_iso())
        if session is None:
            return None
        account = self._index.get_user(session.username)
        if account is None:
            return None
        return Principal(account.username, Role(account.role), County(account.county), address)

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


def _seconds_until(moment: str) -> int:
    target = datetime.strptime(moment, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=utc_now().tzinfo)
    return max(1, int((target - utc_now()).total_seconds()) + 1)
