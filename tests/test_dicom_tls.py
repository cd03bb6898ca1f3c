"""DICOM over TLS with client certificates, with DCMTK's echoscu and storescu (`+tls`) as peers.

A test PKI is made per module with `cryptography`: a county CA, the archive's server certificate,
a modality's client certificate, and a second CA with a client certificate of its own.

What holds: with `dicom_tls_cert`/`dicom_tls_key` the port speaks TLS only (TLS 1.2 or newer,
BCP 195 cipher suites); with `dicom_tls_ca` only clients with a certificate from that CA get an
association. A client without a certificate, with one from another CA, or without TLS at all is
turned away — the certificate failures audited — and the node keeps serving everyone else,
including while a client sits on a connection without ever starting its handshake.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from arkiv.config import ConfigError, Peer, Settings
from arkiv.counties import County
from arkiv.services import Archive
from dicom_node.server import TLS_CLIENT, DicomNode
from dicom_node.tls import server_context
from storage.records import StudyQuery
from tests.pki import Authority, Issued
from tests.test_dicom_peers import (
    AE_TITLE,
    HOST,
    INSTANCES_TRANSFERRED,
    NODE_AUTHENTICATION,
    SECURITY_ALERT,
    arkiv_dicom,
    assert_rejected_as_unknown_caller,
    dicom_node,
    echoscu,
    events_in,
    image,
    node_settings,
    storescu,
    study_of,
)

MODALITY = "BUSK_SENSOR"
ELSEWHERE = Peer("TELEMARK_PAN", County.TELEMARK, host="127.0.0.2")


# -- a test PKI ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Issued
    client: Issued
    stranger: Issued
    """A client certificate signed by another CA."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    county, other = Authority(directory, "county"), Authority(directory, "other")
    return Pki(
        county.pem,
        county.issue("arkiv", server=True),
        county.issue(MODALITY, server=False),
        other.issue("STRANGER", server=False),
    )


def tls_settings(tmp_path: Path, pki: Pki, *, with_ca: bool = True, **changes: object) -> Settings:
    return node_settings(
        tmp_path,
        dicom_tls_cert=str(pki.server.cert),
        dicom_tls_key=str(pki.server.key),
        dicom_tls_ca=str(pki.ca) if with_ca else "",
        **changes,
    )


def with_certificate(pki: Pki, credential: Issued) -> tuple[str, ...]:
    """storescu/echoscu options: TLS with this key and certificate, trusting the county CA."""
    return ("+tls", str(credential.key), str(credential.cert), "+cf", str(pki.ca))


def without_certificate(pki: Pki) -> tuple[str, ...]:
    return ("+tla", "+cf", str(pki.ca))


# -- 1. storing over TLS ---------------------------------------------------------------------------


def test_storescu_over_tls_with_a_client_certificate_stores_and_indexes(
    tmp_path: Path, pki: Pki
) -> None:
    peers = (Peer(MODALITY, County.BUSKERUD, host=HOST), ELSEWHERE)
    settings = tls_settings(tmp_path, pki, peers=peers, dicom_require_known_peers=True)
    path = image(tmp_path, "bitewing")
    with dicom_node(settings) as node:
        assert echoscu(node.port, MODALITY, *with_certificate(pki, pki.client)).returncode == 0

        sent = storescu(node.port, MODALITY, path, options=with_certificate(pki, pki.client))
        assert sent.returncode == 0, sent.stderr
        assert "Received Store Response (Success)" in sent.stderr, sent.stderr
        assert node.archive.index.instance_count() == 1
        [study] = node.archive.index.find_studies(StudyQuery(county="buskerud"))
        assert study.study_uid == study_of(path)

        # TLS does not replace the peer rules: a configured title from another address is
        # still rejected, and the event names the certificate that was shown.
        rejected = echoscu(node.port, ELSEWHERE.ae_title, *with_certificate(pki, pki.client))
        assert_rejected_as_unknown_caller(rejected)
        [alert] = node.events(SECURITY_ALERT)
        assert alert.actor == ELSEWHERE.ae_title
        assert alert.details["tls_subject"] == f"O=arkiv test,CN={MODALITY}"


def test_a_peer_bound_to_its_certificate_is_refused_with_another_one(
    tmp_path: Path, pki: Pki
) -> None:
    bound = Peer(MODALITY, County.BUSKERUD, host=HOST, certificate_cn="PANO_DRAMMEN")
    settings = tls_settings(tmp_path, pki, peers=(bound,), dicom_require_known_peers=True)
    with dicom_node(settings) as node:
        refused = echoscu(node.port, MODALITY, *with_certificate(pki, pki.client))
        assert_rejected_as_unknown_caller(refused)
        [alert] = node.events(SECURITY_ALERT)
        assert "PANO_DRAMMEN" in alert.details["reason"]
    rightly_bound = Peer(MODALITY, County.BUSKERUD, host=HOST, certificate_cn=MODALITY)
    settings = tls_settings(
        tmp_path / "again", pki, peers=(rightly_bound,), dicom_require_known_peers=True
    )
    with dicom_node(settings) as node:
        assert echoscu(node.port, MODALITY, *with_certificate(pki, pki.client)).returncode == 0


def test_tls_without_a_ca_accepts_clients_without_certificates(tmp_path: Path, pki: Pki) -> None:
    settings = tls_settings(tmp_path, pki, with_ca=False)
    with dicom_node(settings) as node:
        sent = storescu(
            node.port, MODALITY, image(tmp_path, "pan"), options=without_certificate(pki)
        )
        assert sent.returncode == 0, sent.stderr
        assert node.archive.index.instance_count() == 1
        plain = echoscu(node.port, MODALITY)
        assert plain.returncode != 0, "plain TCP to a TLS-only port"


# -- 2. who is turned away, and the node serving on ------------------------------------------------


def test_clients_without_a_trusted_certificate_are_refused_and_the_node_serves_on(
    tmp_path: Path, pki: Pki
) -> None:
    settings = tls_settings(tmp_path, pki)
    good = with_certificate(pki, pki.client)
    with dicom_node(settings) as node:
        attempts: dict[str, Callable[[], subprocess.CompletedProcess[str]]] = {
            "no certificate": lambda: echoscu(node.port, MODALITY, *without_certificate(pki)),
            "another CA": lambda: echoscu(
                node.port, "STRANGER", *with_certificate(pki, pki.stranger)
            ),
            "plain TCP": lambda: echoscu(node.port, MODALITY),
            "stores without certificate": lambda: storescu(
                node.port, MODALITY, image(tmp_path, "a"), options=without_certificate(pki)
            ),
            "stores with another CA": lambda: storescu(
                node.port,
                "STRANGER",
                image(tmp_path, "b"),
                options=with_certificate(pki, pki.stranger),
            ),
        }
        for what, attempt in attempts.items():
            result = attempt()
            assert result.returncode != 0, f"{what}: {result.stderr}"
            assert "Association Accepted" not in result.stderr, what
            assert echoscu(node.port, MODALITY, *good).returncode == 0, f"after {what}"

        # A client that connects and leaves, or says nothing, costs nothing to the others.
        with socket.create_connection((HOST, node.port)):
            pass
        with socket.create_connection((HOST, node.port)):
            assert echoscu(node.port, MODALITY, *good).returncode == 0

        assert node.archive.index.instance_count() == 0
        alerts = node.events(SECURITY_ALERT)
        reasons = sorted(str(e.details["reason"]) for e in alerts)
        assert len(alerts) == 4, reasons  # certificate failures only; plain TCP is just logged
        for event in alerts:
            assert event.actor == TLS_CLIENT
            assert event.source_address == HOST
            assert event.outcome == 4
            assert event.details["subtype"] == NODE_AUTHENTICATION
            assert event.details["transport"] == "tls"
        assert sum("no certificate" in r for r in reasons) == 2, reasons
        assert sum("not trusted" in r for r in reasons) == 2, reasons
        assert node.archive.audit.verify().ok


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_a_client_offering_only_old_tls_is_refused(tmp_path: Path, pki: Pki) -> None:
    """The server answers a TLS 1.0/1.1 ClientHello with a protocol_version alert; a TLS 1.2
    client gets an ECDHE suite with an AEAD cipher (RFC 9325)."""
    settings = tls_settings(tmp_path, pki, with_ca=False)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cafile=str(pki.ca))
    client.minimum_version = ssl.TLSVersion.TLSv1
    client.maximum_version = ssl.TLSVersion.TLSv1_1
    client.set_ciphers("ALL:@SECLEVEL=0")
    modern = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    modern.load_verify_locations(cafile=str(pki.ca))
    modern.maximum_version = ssl.TLSVersion.TLSv1_2
    with dicom_node(settings) as node:
        with (
            socket.create_connection((HOST, node.port), timeout=10) as raw,
            pytest.raises(ssl.SSLError, match="ALERT_PROTOCOL_VERSION"),
            client.wrap_socket(raw, server_hostname=HOST),
        ):
            pass
        with (
            socket.create_connection((HOST, node.port), timeout=10) as raw,
            modern.wrap_socket(raw, server_hostname=HOST) as tls,
        ):
            assert tls.version() == "TLSv1.2"
            cipher = tls.cipher()
            assert cipher is not None and cipher[0].startswith("ECDHE-"), cipher
            assert "GCM" in cipher[0] or "CHACHA20" in cipher[0], cipher


# -- 3. configuration ------------------------------------------------------------------------------


def test_a_half_or_broken_tls_configuration_stops_the_node_from_starting(
    tmp_path: Path, pki: Pki
) -> None:
    broken = [
        Settings(dicom_tls_cert=str(pki.server.cert)),
        Settings(dicom_tls_key=str(pki.server.key)),
        Settings(dicom_tls_ca=str(pki.ca)),
        Settings(dicom_tls_cert=str(pki.server.cert), dicom_tls_key=str(tmp_path / "missing")),
        Settings(
            dicom_tls_cert=str(pki.server.cert),
            dicom_tls_key=str(pki.server.key),
            dicom_tls_ca=str(tmp_path / "missing-ca.crt"),
        ),
        Settings(dicom_tls_cert=str(pki.server.cert), dicom_tls_key=str(pki.client.key)),
    ]
    for settings in broken:
        with pytest.raises(ConfigError, match="dicom_tls"):
            server_context(settings)
    archive = Archive(Settings(data_dir=tmp_path / "data", dicom_tls_cert=str(pki.server.cert)))
    try:
        with pytest.raises(ConfigError):
            DicomNode(archive)
    finally:
        archive.close()

    context = server_context(tls_settings(tmp_path, pki))
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    for suite in context.get_ciphers():
        if suite["protocol"] == "TLSv1.2":
            assert suite["kea"] == "kx-ecdhe" and suite["aead"], suite


# -- 4. the worker processes of `arkiv dicom` speak TLS as well ------------------------------------


def test_arkiv_dicom_workers_speak_tls_with_settings_from_a_configuration_file(
    tmp_path: Path, pki: Pki
) -> None:
    """Settings given in TOML reach the worker processes only through the main process
    (`Settings.as_environment`), peers and TLS alike."""
    config = tmp_path / "arkiv.toml"
    config.write_text(
        "[arkiv]\n"
        "dicom_require_known_peers = true\n"
        f'dicom_tls_cert = "{pki.server.cert}"\n'
        f'dicom_tls_key = "{pki.server.key}"\n'
        f'dicom_tls_ca = "{pki.ca}"\n'
        "\n[[arkiv.peers]]\n"
        f'ae_title = "{MODALITY}"\n'
        'county = "buskerud"\n'
        f'host = "{HOST}"\n'
    )
    good = with_certificate(pki, pki.client)
    attempts = 6
    files = [image(tmp_path, f"tls{n}", seed=n) for n in range(attempts)]
    ready = [*good, "-aet", MODALITY, "-aec", AE_TITLE]
    with arkiv_dicom(tmp_path, {}, ready, "--config", str(config)) as served:
        for path in files:
            assert echoscu(served.dicom_port, MODALITY).returncode != 0, "plain TCP"
            refused = echoscu(served.dicom_port, "STRANGER", *with_certificate(pki, pki.stranger))
            assert refused.returncode != 0
            assert_rejected_as_unknown_caller(echoscu(served.dicom_port, "INTRUDER", *good))
            sent = storescu(served.dicom_port, MODALITY, path, options=good)
            assert "Store Response (Success)" in sent.stderr, sent.stderr

    alerts = events_in(served.data, SECURITY_ALERT)
    assert len(alerts) == 2 * attempts
    assert {e.actor for e in alerts} == {TLS_CLIENT, "INTRUDER"}
    stored = events_in(served.data, INSTANCES_TRANSFERRED)
    assert {(e.actor, e.county) for e in stored} == {(MODALITY, "buskerud")}
    assert len(stored) == attempts
