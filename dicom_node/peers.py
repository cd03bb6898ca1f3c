"""Which DICOM nodes may associate, from where, and what each may do.

Peers are configured (`[[arkiv.peers]]` or `ARKIV_PEERS`): AE title, county, source address and
allowed services. An AE title is not authentication — it is sent in clear and the sender picks
it — so a configured peer is bound to the address it must call from (an IP address, a network in
CIDR notation, or a host name whose addresses are looked up per association), and on a TLS port
with a CA every caller must first show a certificate that CA signed (`dicom_node.tls`).

A peer with `certificate_cn` is also bound to its certificate: on a TLS port it must show a
verified client certificate with exactly that common name. Without it, any certificate the CA
signed may carry the peer's AE title, so issue certificates per site and set the name.

What a known peer stores is owned by the peer's county; what an unknown AE stores (allowed only
when `dicom_require_known_peers` is off, the embedded default) by the archive's own county.

Every refusal is audited as a Security Alert (PS3.15 110113): association rejections and failed
client certificates as 110126 Node Authentication, services a peer may not use as 110132 Use of
Restricted Function. If the audit event cannot be written the refusal stands: failing to record
a "no" never turns it into a "yes".
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from arkiv.accounts import DICOM_AE, Principal, Role
from arkiv.audit import Actor, Event, EventType, Outcome
from arkiv.config import Peer, Settings
from arkiv.counties import County
from arkiv.services import Archive

log = logging.getLogger(__name__)

ECHO = "echo"
STORE = "store"
FIND = "find"
MOVE = "move"
GET = "get"
COMMIT = "commit"

SERVICE_SCOPES = {FIND: "search", MOVE: "retrieve", GET: "retrieve", COMMIT: "commit"}
"""The access path's scope each DICOM service needs (`arkiv.authorization`)."""

UNKNOWN_PEER_SERVICES = frozenset({ECHO, STORE})
"""What an AE that is not configured may do when unknown AEs are admitted at all: verify and send
images, as a modality does. Queries and retrievals are for configured peers only (DESIGN)."""

PEER_ONLY_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Q/R FIND
        "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root Q/R MOVE
        "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root Q/R GET
        "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Q/R FIND
        "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root Q/R MOVE
        "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root Q/R GET
        "1.2.840.10008.1.20.1",  # Storage Commitment Push Model
    }
)
"""SOP classes an unknown AE may not even propose: an association offering them is rejected."""

NODE_AUTHENTICATION = "110126 Node Authentication"
USE_OF_RESTRICTED_FUNCTION = "110132 Use of Restricted Function"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Caller:
    """Who opened an association: the calling AE title and the address it came from."""

    ae_title: str
    address: str
    tls_subject: str = ""
    """Subject of the verified client certificate, when the port speaks TLS with a CA."""


class PeerPolicy:
    """The decisions about peers, made the same way for every association and service."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @property
    def settings(self) -> Settings:
        return self._settings

    def peer(self, ae_title: str) -> Peer | None:
        return self._settings.peer(ae_title)

    def refuse_association(
        self, caller: Caller, abstract_syntaxes: Iterable[str] = ()
    ) -> str | None:
        """Why this caller may not associate, or None if it may.

        Unknown AEs are refused in production (`dicom_require_known_peers`); a configured AE is
        refused from any address but its own even where unknown AEs are admitted, since taking
        a configured peer's title must not be a way to file images under its county. An
        unknown AE that proposes query/retrieve or storage commitment (`abstract_syntaxes`, the
        SOP classes of its proposed presentation contexts) is refused even where unknown AEs
        may store: those services read patient data, which only configured peers may.
        """
        peer = self.peer(caller.ae_title)
        if peer is None:
            if self._settings.dicom_require_known_peers:
                return f"calling AE title {caller.ae_title!r} is not a configured peer"
            asked = sorted(set(abstract_syntaxes) & PEER_ONLY_SOP_CLASSES)
            if asked:
                return (
                    f"calling AE title {caller.ae_title!r} is not a configured peer and "
                    f"proposed query/retrieve or storage commitment ({', '.join(asked)})"
                )
            return None
        if peer.host and not address_matches(peer.host, caller.address):
            return (
                f"calling AE title {peer.ae_title!r} is configured for host {peer.host!r}, "
                f"not {caller.address}"
            )
        if peer.certificate_cn and common_name(caller.tls_subject) != peer.certificate_cn:
            return (
                f"calling AE title {peer.ae_title!r} must show a certificate for "
                f"{peer.certificate_cn!r}"
            )
        return None

    def allows(self, ae_title: str, service: str) -> bool:
        """Whether the AE may use a service (echo, store, find, move, get, commit)."""
        peer = self.peer(ae_title)
        if peer is None:
            return service in UNKNOWN_PEER_SERVICES and not self._settings.dicom_require_known_peers
        return peer.allows(service)

    def principal(self, caller: Caller) -> Principal:
        """A configured peer as the access path sees it: a service account of its county whose
        scopes follow its DICOM services (find → search; move, get → retrieve; commit →
        commit). What it finds and retrieves is its county's, like a clinician there, and every
        read is audited under its AE title and address."""
        peer = self.peer(caller.ae_title)
        services = peer.services if peer is not None else frozenset()
        scopes = {SERVICE_SCOPES[s] for s in services if s in SERVICE_SCOPES}
        return Principal(
            username=caller.ae_title,
            role=Role.SERVICE,
            county=self.county(caller.ae_title),
            address=caller.address,
            scopes=frozenset(scopes),
            auth_method=DICOM_AE,
        )

    def county(self, ae_title: str) -> County:
        """The county that owns what this AE sends: the peer's, or the archive's own."""
        peer = self.peer(ae_title)
        return peer.county if peer is not None else self._settings.county


def common_name(subject: str) -> str:
    """The CN of a verified certificate subject as `dicom_node.tls.peer_subject` writes it."""
    for part in subject.split(","):
        name, _, value = part.partition("=")
        if name == "CN":
            return value
    return ""


def address_matches(host: str, address: str) -> bool:
    """Whether `address` (the connection's source) is `host`: an IP address, a network in CIDR
    notation, or a name whose resolved addresses include it. A name that does not resolve
    matches nothing (fail closed)."""
    source = _ip(address)
    if source is None:
        return False
    if "/" in host:
        try:
            return source in ipaddress.ip_network(host, strict=False)
        except ValueError:
            return False
    literal = _ip(host)
    if literal is not None:
        return source == literal
    return source in set(_resolve(host))


def _ip(text: str) -> IpAddress | None:
    """An address, with IPv4-mapped IPv6 (a dual-stack listener's view of IPv4) as IPv4."""
    try:
        value = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(value, ipaddress.IPv6Address) and value.ipv4_mapped is not None:
        return value.ipv4_mapped
    return value


def _resolve(host: str) -> Iterable[IpAddress]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        log.warning("peer host %r does not resolve; associations from it are refused", host)
        return []
    found = (_ip(str(info[4][0])) for info in infos)
    return [ip for ip in found if ip is not None]


def record_security_alert(
    archive: Archive,
    caller: Caller,
    subtype: str,
    reason: str,
    details: dict[str, Any] | None = None,
    peer: Peer | None = None,
) -> None:
    """Audit a refusal (PS3.15 110113, outcome 4). Never raises: the refusal stands regardless.

    The actor is the caller, in the archive's county (a caller is not trusted to be who it
    says); when it used a configured peer's title, that peer's county is named as concerned
    too, so the county's own auditors see attempts made in its name.
    """
    settings = archive.settings
    event_details: dict[str, Any] = {"subtype": subtype, "reason": reason, **(details or {})}
    if caller.tls_subject:
        event_details["tls_subject"] = caller.tls_subject
    event = Event(
        EventType.SECURITY_ALERT,
        "E",
        Actor(
            name=caller.ae_title,
            kind="dicom-ae",
            county=settings.county.value,
            address=caller.address,
        ),
        outcome=Outcome.MINOR_FAILURE,
        outcome_description=reason,
        details=event_details,
        counties=(peer.county.value,) if peer is not None else (),
    )
    try:
        archive.audit.record(event)
    except Exception:
        log.exception("could not audit the refusal of %s from %s", caller.ae_title, caller.address)
