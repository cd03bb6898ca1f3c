"""DICOM over TLS (PS3.15 Annex B): the server side context and the handshake of each connection.

With `dicom_tls_cert` and `dicom_tls_key` set, the DICOM port speaks TLS only; with `dicom_tls_ca`
as well, a peer must present a client certificate that CA signed (mutual TLS), which is what turns
an AE title — sent in clear and chosen by the sender — into something bound to a key the county
issued. The profile follows BCP 195 as RFC 9325 has it (and DCMTK's "BCP 195 RFC 8996" profiles):
TLS 1.2 or newer, ephemeral ECDH with AEAD ciphers only, no compression, no renegotiation.

The handshake runs in the connection's own thread with a deadline, never in the thread that
accepts: a client that connects and then says nothing, or speaks plain DICOM to the TLS port,
must cost one thread for a while, not the whole node.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from arkiv.config import ConfigError, Settings

log = logging.getLogger(__name__)

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
"""TLS 1.2 suites of RFC 9325 4.2: ECDHE key exchange, AES-GCM or ChaCha20-Poly1305. (TLS 1.3
suites are all AEAD and are left at OpenSSL's defaults.) Finite-field DHE is left out, as RFC 9325
4.1 advises."""

CERTIFICATE_REASONS = frozenset(
    {
        "CERTIFICATE_VERIFY_FAILED",
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "NO_CERTIFICATE_RETURNED",
        "CERTIFICATE_REQUIRED",
    }
)
"""OpenSSL reasons for a handshake refused because of the client's certificate (none, expired,
signed by another CA …). These are node authentication failures and go to the audit log; other
failures (a plain-TCP client, a port scanner, a peer that distrusts our certificate) are only
logged, so a monitoring probe cannot fill the audit log."""


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for the DICOM port, or None when the node speaks plain DICOM.

    A half-configured TLS setup (a key without a certificate, a CA without either) is an error,
    not a silent fall-back to plain TCP.
    """
    cert, key, ca = settings.dicom_tls_cert, settings.dicom_tls_key, settings.dicom_tls_ca
    if not cert and not key:
        if ca:
            raise ConfigError("setting 'dicom_tls_ca' needs 'dicom_tls_cert' and 'dicom_tls_key'")
        return None
    if not cert or not key:
        raise ConfigError("settings 'dicom_tls_cert' and 'dicom_tls_key' must be set together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
        | ssl.OP_NO_RENEGOTIATION
    )
    try:
        context.load_cert_chain(certfile=cert, keyfile=key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"settings 'dicom_tls_cert'/'dicom_tls_key': cannot load {cert} and {key}: {exc}"
        ) from exc
    if ca:
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"setting 'dicom_tls_ca': cannot load {ca}: {exc}") from exc
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def peer_subject(sock: socket.socket | None) -> str:
    """The subject of the client certificate a TLS connection verified ("CN=…,O=…"), or ""."""
    if not isinstance(sock, ssl.SSLSocket):
        return ""
    try:
        cert = sock.getpeercert()
    except (ValueError, OSError):
        return ""
    if not cert:
        return ""
    parts: list[str] = []
    for rdn in cert.get("subject", ()):
        for attribute in rdn:
            name, value = str(attribute[0]), str(attribute[1])
            parts.append(f"{_SHORT_NAMES.get(name, name)}={value}")
    return ",".join(parts)


_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
}


_PLAIN_WORDS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client presented no certificate",
    "NO_CERTIFICATE_RETURNED": "the client presented no certificate",
    "WRONG_VERSION_NUMBER": "the client does not speak TLS (plain DICOM?)",
    "HTTP_REQUEST": "the client sent HTTP, not TLS",
    "UNEXPECTED_EOF_WHILE_READING": "the client closed the connection during the handshake",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust the archive's certificate",
    "UNSUPPORTED_PROTOCOL": "the client offers only TLS versions older than 1.2",
    "NO_SHARED_CIPHER": "the client offers no cipher suite of the profile",
}
"""OpenSSL's reason codes in words an operator reading the log or the audit trail can act on."""


@dataclass(frozen=True)
class HandshakeFailure:
    """Why a TLS handshake failed, as the log and the audit event tell it."""

    address: str
    reason: str
    certificate_problem: bool
    """True when the client's certificate was missing or not trusted (node authentication)."""


class TlsGate:
    """Turns an accepted TCP connection into a TLS connection, or closes it.

    `on_failure` is told about every failed handshake (the node audits the certificate ones);
    an exception it raises is logged and the connection still closed.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        timeout: float,
        on_failure: Callable[[HandshakeFailure], None] | None = None,
    ) -> None:
        self.context = context
        self.timeout = timeout
        self._on_failure = on_failure

    def secure(self, connection: socket.socket, address: str) -> ssl.SSLSocket | None:
        """Handshake within the deadline; None (connection closed) if that fails."""
        try:
            tls = self.context.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        except (OSError, ValueError) as exc:
            connection.close()
            self._failed(HandshakeFailure(address, f"cannot start TLS: {exc}", False))
            return None
        try:
            tls.settimeout(self.timeout)
            tls.do_handshake()
            tls.settimeout(None)
        except ssl.SSLError as exc:
            _close(tls)
            code = str(exc.reason or exc)
            problem = isinstance(exc, ssl.SSLCertVerificationError) or code in CERTIFICATE_REASONS
            verified = getattr(exc, "verify_message", "")
            detail = f"certificate not trusted: {verified}" if verified else code
            detail = _PLAIN_WORDS.get(code, detail)
            self._failed(HandshakeFailure(address, f"TLS handshake failed: {detail}", problem))
            return None
        except (OSError, ValueError) as exc:  # timeout, reset, closed before the handshake
            _close(tls)
            what = "timed out" if isinstance(exc, TimeoutError) else f"failed: {exc}"
            self._failed(HandshakeFailure(address, f"TLS handshake {what}", False))
            return None
        return tls

    def _failed(self, failure: HandshakeFailure) -> None:
        # A probe that connects and leaves (monitoring, port scans) is not worth a warning.
        quiet = "closed the connection" in failure.reason or "timed out" in failure.reason
        log.log(
            logging.INFO if quiet else logging.WARNING,
            "DICOM TLS connection from %s refused: %s",
            failure.address,
            failure.reason,
        )
        if self._on_failure is None:
            return
        try:
            self._on_failure(failure)
        except Exception:  # the connection is closed either way
            log.exception("could not report the failed TLS handshake from %s", failure.address)


def _close(sock: ssl.SSLSocket) -> None:
    try:
        sock.close()
    except OSError:
        log.debug("closing a failed TLS connection", exc_info=True)
