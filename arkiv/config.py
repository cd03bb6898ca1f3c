"""Settings in one place: defaults, then a TOML file, then `ARKIV_*` environment variables, then
command-line flags. With nothing given, the embedded default runs: SQLite and files under
`./arkiv-data`, DICOM on 11112, web on 8000.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from arkiv.counties import County, parse_county


class ConfigError(ValueError):
    """A setting has a value the archive cannot use; the message names the setting."""


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
    dicom_workers: int = 0
    """Processes accepting DICOM associations on one port; 0 means two per core, up to 4."""
    session_hours: float = 8.0
    login_max_failures: int = 5
    login_lockout_seconds: int = 30
    max_pixels: int = 1 << 28
    """Largest Rows×Columns×Samples×Frames accepted at ingest (a guard against absurd headers)."""

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
        return {f"{_ENV_PREFIX}{f.name.upper()}": str(getattr(self, f.name)) for f in fields(self)}

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"


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


def _coerce(values: dict[str, Any]) -> Settings:
    settings = Settings()
    by_name = {f.name: f for f in fields(Settings)}
    changes: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in by_name:
            raise ConfigError(f"unknown setting {name!r}")
        default = getattr(settings, name)
        try:
            if isinstance(default, County):
                changes[name] = parse_county(str(raw))
            elif isinstance(default, Path):
                changes[name] = Path(str(raw))
            elif isinstance(default, bool):
                changes[name] = str(raw).lower() in ("1", "true", "yes", "on")
            elif isinstance(default, int):
                changes[name] = int(raw)
            elif isinstance(default, float):
                changes[name] = float(raw)
            else:
                changes[name] = str(raw)
        except ValueError as exc:
            raise ConfigError(f"setting {name!r}: {exc}") from exc
    result = replace(settings, **changes)
    if len(result.ae_title) > 16 or not result.ae_title.strip():
        raise ConfigError("setting 'ae_title' must be 1 to 16 characters")
    return result
