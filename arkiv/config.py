"""Settings in one place: defaults, then a TOML file, then `ARKIV_*` environment variables, then
command-line flags. With nothing given, the embedded default runs: SQLite and files under
`./arkiv-data`, DICOM on 11112, web on 8000.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from arkiv.counties import County, parse_county


class ConfigError(ValueError):
    """A setting has a value the archive cannot use; the message names the setting."""


DICOM_SERVICES = frozenset({"echo", "store", "find", "move", "get", "commit"})
"""What a configured DICOM peer may be allowed to do."""


@dataclass(frozen=True)
class Peer:
    """A DICOM node the archive knows: who it is, where it is, which county owns what it sends.

    `host` is the address associations from this AE must come from (empty: any address); `port`
    is where the archive reaches it for C-MOVE and storage commitment; `certificate_cn`, on a TLS
    port with a CA, the common name its client certificate must carry (empty: any the CA signed).
    """

    ae_title: str
    county: County
    host: str = ""
    port: int = 0
    services: frozenset[str] = frozenset({"echo", "store"})
    certificate_cn: str = ""

    def allows(self, service: str) -> bool:
        return service in self.services


DEFAULT_BREAK_GLASS_REASONS: dict[str, str] = {
    "akutt": "Akutt behandling",
    "henvisning": "Pasienten er henvist til oss fra en annen fylkeskommune",
    "flytting": "Pasienten har flyttet og behandles nå hos oss",
    "vurdering": "Faglig vurdering på forespørsel fra behandlende tannlege",
}
"""Break-the-glass reason templates (code → the text a patient is shown), as in Helse Vest's
beslutningsmaler: a fixed reason the auditor and the patient can read, plus optional free text."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("arkiv-data")
    database_url: str = ""
    host: str = "127.0.0.1"
    http_port: int = 8000
    dicom_port: int = 11112
    ae_title: str = "ARKIV"
    county: County = County.VESTFOLD
    """Owner of objects from senders with no configured county (the embedded default's one site)."""
    max_pdu_size: int = 262144
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 120.0
    max_associations: int = 16
    health_port: int = 0
    """HTTP port of /healthz, /readyz and /metrics on a node running `arkiv dicom` alone, for
    its load balancer and monitoring (0: none; with the web app they are on http_port)."""
    drain_token_file: str = ""
    """A file holding the bearer token that `POST /node/drain` needs (the operator's rolling
    restart has it); empty: draining over HTTP is off."""
    dicom_workers: int = 0
    """Processes accepting DICOM associations on one port; 0 means two per core, up to 4."""
    session_hours: float = 8.0
    """Absolute lifetime of a web session."""
    session_idle_minutes: float = 30.0
    """A session unused this long ends."""
    secure_cookies: bool = True
    """Session cookies as `__Host-` with Secure (browsers accept that on loopback too); switch off
    only for plain-HTTP test clients that are not browsers."""
    web_tls_cert: str = ""
    web_tls_key: str = ""
    """PEM files: with both set the web app speaks HTTPS only and sends HSTS."""
    ohif_dir: str = ""
    """A built OHIF Viewer v3 (its `dist` directory, built for PUBLIC_URL `/ohif/`) that the web
    app serves at /ohif/, same-origin, so the viewer reads DICOMweb with the signed-in session."""
    cors_origins: tuple[str, ...] = ()
    """Web origins (`https://viewer.example`) whose pages may call DICOMweb with the browser's
    credentials; empty sends no CORS headers, so only same-origin pages (OHIF at /ohif/) can."""
    stow_max_bytes: int = 2 * 1024**3
    """The largest STOW-RS request body; beyond it the request is refused with 413."""
    photo_max_bytes: int = 60 * 1024**2
    """The largest photo file taken (a 48-megapixel phone HEIC or JPEG is 10–25 MB)."""
    video_max_bytes: int = 400 * 1024**2
    """The largest video file taken (a few minutes of 1080p from a phone)."""
    video_max_seconds: int = 600
    photo_max_pixels: int = 50_000_000
    """Largest width×height of a photo, checked from its header before any decoding: below
    Pillow's own bomb limit (89 megapixels), above the 48-megapixel phone cameras."""
    photo_workers: int = 2
    """Worker processes decoding uploaded photos (`arkiv.sandbox`)."""
    photo_decode_seconds: float = 30.0
    """A photo whose decoding takes longer is refused and its worker killed."""
    photo_worker_memory_mb: int = 2048
    """Address-space limit of each decoding worker (and of ffmpeg for video)."""
    break_glass_minutes: int = 240
    break_glass_reasons: dict[str, str] = field(
        default_factory=lambda: dict(DEFAULT_BREAK_GLASS_REASONS)
    )
    oidc_issuer: str = ""
    """OpenID Connect sign-in (HelseID or another provider) is offered when this is set."""
    oidc_client_id: str = ""
    oidc_private_key_file: str = ""
    """PEM private key for `private_key_jwt` client authentication."""
    oidc_redirect_uri: str = ""
    oidc_scopes: str = (
        "openid profile helseid://scopes/identity/pid helseid://scopes/hpr/hpr_number"
    )
    oidc_pid_claim: str = "helseid://claims/identity/pid"
    oidc_hpr_claim: str = "helseid://claims/hpr/hpr_number"
    oidc_ca_file: str = ""
    """CA bundle trusted for the provider's TLS certificate (empty: the system's)."""
    audit_group_seconds: int = 60
    """Frame and thumbnail reads of one series by one user are one audit event per this window."""
    audit_checkpoint_minutes: float = 60.0
    audit_duties_retry_seconds: float = 10.0
    """How often a node without the audit duties (checkpoint signing, syslog forwarding; one node
    per index does them) tries to take them over, and the holder checks it still has them."""
    audit_signing_key_file: str = ""
    """Ed25519 key that signs audit checkpoints; empty means `audit-signing-key.pem` in data_dir.
    Scale-out: every node that may hold the audit duties signs with this key, so all nodes sharing
    an index must point at the same key file (a copy of it, mode 0600, on each machine). Left
    empty, each node would create a key of its own in its data_dir, and checkpoints signed after a
    failover would not verify with the key the auditors were given."""
    audit_syslog_host: str = ""
    """Forward every audit event to this syslog receiver (RFC 5424 over TLS, RFC 5425)."""
    audit_syslog_port: int = 6514
    audit_syslog_ca_file: str = ""
    audit_syslog_cert_file: str = ""
    audit_syslog_key_file: str = ""
    review_volume_threshold: int = 50
    """A user who opens more distinct patients than this in a day is listed for review."""
    peers: tuple[Peer, ...] = ()
    dicom_require_known_peers: bool = False
    """Production: refuse associations from AEs not in `peers` (embedded default: accept any)."""
    dicom_find_max_results: int = 10_000
    """A C-FIND that matches more than this is ended with 0xA700 and a comment asking to narrow
    it, so one careless query cannot stream the whole index to a workstation."""
    commitment_report_attempts: int = 5
    commitment_report_backoff_seconds: float = 2.0
    """Storage commitment: how often the N-EVENT-REPORT is tried on a new association to a
    modality that closed the first one, waiting backoff, 2×backoff, … between tries; then the
    archive gives up (logged and audited) and the modality asks again."""
    dicom_tls_cert: str = ""
    dicom_tls_key: str = ""
    dicom_tls_ca: str = ""
    """With cert and key the DICOM port speaks TLS only; with a CA, peers must show certificates."""
    login_max_failures: int = 5
    login_lockout_seconds: int = 30
    max_pixels: int = 1 << 28
    """Largest Rows×Columns×Samples×Frames accepted at ingest (a guard against absurd headers)."""
    s3_endpoint: str = ""
    """host:port of an S3 server: when set, objects are kept in its bucket instead of under
    data_dir (any plain S3 server: MinIO, Ceph RGW, SeaweedFS, AIStor)."""
    s3_bucket: str = "arkiv"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = ""
    s3_secure: bool = True
    """HTTPS to the S3 server; off only for a server on loopback or a private test network."""
    s3_ca_file: str = ""
    """CA bundle trusted for the S3 server's certificate (empty: the system's)."""
    s3_object_lock_mode: str = ""
    """GOVERNANCE or COMPLIANCE: objects cannot be deleted or overwritten for s3_object_lock_days
    (the bucket must be created by the archive, with object lock, for this to apply)."""
    s3_object_lock_days: int = 0
    s3_part_size_mb: int = 64
    """Objects larger than this go up in parts of this size (multipart upload)."""
    s3_timeout_seconds: float = 10.0
    s3_retries: int = 3
    """Attempts after the first for a failed request, with exponential backoff."""

    @property
    def index_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'index.sqlite3'}"

    @property
    def dicom_process_count(self) -> int:
        if self.dicom_workers > 0:
            return self.dicom_workers
        return max(1, min(2 * (os.cpu_count() or 1), 4))

    def as_environment(self) -> dict[str, str]:
        """These settings as `ARKIV_*` variables, so a child process loads exactly the same."""
        return {
            f"{_ENV_PREFIX}{f.name.upper()}": _env_text(getattr(self, f.name)) for f in fields(self)
        }

    @property
    def uses_s3(self) -> bool:
        return bool(self.s3_endpoint)

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def signing_key_path(self) -> Path:
        return Path(self.audit_signing_key_file or self.data_dir / "audit-signing-key.pem")

    @property
    def web_tls(self) -> bool:
        return bool(self.web_tls_cert and self.web_tls_key)

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer)

    def peer(self, ae_title: str) -> Peer | None:
        """The configured peer with this AE title (compared without padding), if any."""
        wanted = ae_title.strip()
        return next((p for p in self.peers if p.ae_title == wanted), None)


def _env_text(value: Any) -> str:
    """Scalars as text; peers and reason templates as JSON, which `_coerce` reads back."""
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple):
        items = [_peer_document(v) if isinstance(v, Peer) else str(v) for v in value]
        return json.dumps(items, ensure_ascii=False)
    return str(value)


def _peer_document(peer: Peer) -> dict[str, Any]:
    return {
        "ae_title": peer.ae_title,
        "county": peer.county.value,
        "host": peer.host,
        "port": peer.port,
        "services": sorted(peer.services),
        "certificate_cn": peer.certificate_cn,
    }


def parse_peers(raw: Any) -> tuple[Peer, ...]:
    """Peers from TOML (`[[arkiv.peers]]` tables) or JSON text (environment)."""
    if isinstance(raw, str):
        raw = json.loads(raw) if raw.strip() else []
    if not isinstance(raw, list):
        raise ValueError("peers must be a list of tables with ae_title and county")
    peers: list[Peer] = []
    for entry in raw:
        if not isinstance(entry, dict) or "ae_title" not in entry or "county" not in entry:
            raise ValueError("each peer needs ae_title and county")
        ae_title = str(entry["ae_title"]).strip()
        if not 0 < len(ae_title) <= 16:
            raise ValueError(f"peer AE title {ae_title!r} must be 1 to 16 characters")
        services = frozenset(str(s) for s in entry.get("services", ["echo", "store"]))
        unknown = services - DICOM_SERVICES
        if unknown:
            raise ValueError(
                f"peer {ae_title}: unknown services {sorted(unknown)}; use {sorted(DICOM_SERVICES)}"
            )
        peers.append(
            Peer(
                ae_title=ae_title,
                county=parse_county(str(entry["county"])),
                host=str(entry.get("host", "")),
                port=int(entry.get("port", 0)),
                services=services,
                certificate_cn=str(entry.get("certificate_cn", "")),
            )
        )
    titles = [p.ae_title for p in peers]
    if len(set(titles)) != len(titles):
        raise ValueError("each peer AE title may be configured once")
    return tuple(peers)


def _boolean(raw: Any) -> bool:
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not true or false")


def parse_reasons(raw: Any) -> dict[str, str]:
    if isinstance(raw, str):
        raw = json.loads(raw)
    if not isinstance(raw, dict) or not raw:
        raise ValueError("break_glass_reasons must be a non-empty table of code = text")
    return {str(k): str(v) for k, v in raw.items()}


_ENV_PREFIX = "ARKIV_"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the layers; `overrides` are command-line values (None means unset)."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(_from_toml(config_file))
    values.update(_from_env(os.environ))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return _coerce(values)


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc
    section = document.get("arkiv", document)
    if not isinstance(section, dict):
        raise ConfigError(f"configuration file {path}: [arkiv] must be a table")
    return dict(section)


def _from_env(environ: os._Environ[str] | dict[str, str]) -> dict[str, Any]:
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    for key, value in environ.items():
        if key.startswith(_ENV_PREFIX):
            name = key[len(_ENV_PREFIX) :].lower()
            if name == "data":
                name = "data_dir"
            if name in known:
                values[name] = value
    return values


def _string_list(raw: Any) -> tuple[str, ...]:
    """A TOML list, the environment's comma-separated text, or the JSON list that
    `Settings.as_environment` writes for worker processes."""
    if isinstance(raw, str) and raw.strip().startswith("["):
        raw = json.loads(raw)
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _coerce(values: dict[str, Any]) -> Settings:
    settings = Settings()
    by_name = {f.name: f for f in fields(Settings)}
    changes: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in by_name:
            raise ConfigError(f"unknown setting {name!r}")
        default = getattr(settings, name)
        try:
            if name == "peers":
                changes[name] = parse_peers(raw)
            elif name == "break_glass_reasons":
                changes[name] = parse_reasons(raw)
            elif isinstance(default, tuple):
                changes[name] = _string_list(raw)
            elif isinstance(default, County):
                changes[name] = parse_county(str(raw))
            elif isinstance(default, Path):
                changes[name] = Path(str(raw))
            elif isinstance(default, bool):
                changes[name] = _boolean(raw)
            elif isinstance(default, int):
                changes[name] = int(raw)
            elif isinstance(default, float):
                changes[name] = float(raw)
            else:
                changes[name] = str(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"setting {name!r}: {exc}") from exc
    result = replace(settings, **changes)
    if len(result.ae_title) > 16 or not result.ae_title.strip():
        raise ConfigError("setting 'ae_title' must be 1 to 16 characters")
    _check_s3(result)
    return result


_OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")


def _check_s3(settings: Settings) -> None:
    if settings.s3_object_lock_mode and settings.s3_object_lock_mode not in _OBJECT_LOCK_MODES:
        raise ConfigError(
            f"setting 's3_object_lock_mode' must be one of {', '.join(_OBJECT_LOCK_MODES)} "
            f"or empty, not {settings.s3_object_lock_mode!r}"
        )
    if settings.s3_object_lock_mode and settings.s3_object_lock_days <= 0:
        raise ConfigError("setting 's3_object_lock_days' must be at least 1 when a mode is set")
    if settings.s3_part_size_mb < 5:
        raise ConfigError("setting 's3_part_size_mb' must be at least 5 (the S3 minimum part)")
    if settings.uses_s3 and not (settings.s3_access_key and settings.s3_secret_key):
        raise ConfigError(
            "settings 's3_access_key' and 's3_secret_key' are needed with 's3_endpoint'"
        )


def load_settings_file(path: Path) -> Settings:
    """Settings from a TOML file alone, without the `ARKIV_*` environment: for describing another
    archive than the one this process runs as (the target of `arkiv migrate`)."""
    return _coerce(_from_toml(path))
