"""Settings: the production example in the README loads, peers and reasons survive the trip
through the environment to worker processes, and bad values are refused by name."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from arkiv.config import ConfigError, Peer, Settings, load_settings
from arkiv.counties import County

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_toml(number: int = 0) -> str:
    """The README's TOML examples: the production one first, then the scale-out one."""
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) > number, "the README shows the configuration example"
    return str(blocks[number])


def test_the_readme_production_example_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("ARKIV_"):
            monkeypatch.delenv(key)
    path = tmp_path / "arkiv.toml"
    path.write_text(_readme_toml())
    settings = load_settings(path)
    assert settings.dicom_require_known_peers is True
    assert settings.web_tls and settings.oidc_enabled
    modality, workstation = settings.peers
    assert modality == Peer(
        "PANO_TONSBERG", County.VESTFOLD, "10.1.2.3", 104, frozenset({"echo", "store", "commit"})
    )
    assert workstation.port == 11112 and workstation.allows("move")
    assert not modality.allows("find")
    assert settings.peer("PANO_TONSBERG  ") == modality and settings.peer("OTHER") is None
    assert set(settings.break_glass_reasons) == {"akutt", "henvisning"}


def test_the_readme_scaleout_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("ARKIV_"):
            monkeypatch.delenv(key)
    path = tmp_path / "scaleout.toml"
    path.write_text(_readme_toml(1).replace("…", "x"))
    settings = load_settings(path)
    assert settings.uses_s3 and settings.s3_secure
    assert settings.index_url.startswith("postgresql://")
    assert (settings.s3_object_lock_mode, settings.s3_object_lock_days) == ("COMPLIANCE", 3650)


def test_scaleout_is_configured_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "ARKIV_DATABASE_URL": "postgresql://arkiv@db/arkiv",
        "ARKIV_S3_ENDPOINT": "minio1:9000",
        "ARKIV_S3_BUCKET": "tannbilder",
        "ARKIV_S3_ACCESS_KEY": "arkiv",
        "ARKIV_S3_SECRET_KEY": "hemmelig",
        "ARKIV_S3_SECURE": "false",
        "ARKIV_S3_PART_SIZE_MB": "16",
    }.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.index_url == "postgresql://arkiv@db/arkiv"
    assert (settings.s3_endpoint, settings.s3_bucket) == ("minio1:9000", "tannbilder")
    assert settings.s3_secure is False and settings.s3_part_size_mb == 16


def test_peers_and_reasons_survive_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        peers=(Peer("SENSOR1", County.BUSKERUD, "127.0.0.2", 104, frozenset({"store"})),),
        break_glass_reasons={"akutt": "Akutt behandling – æøå"},
        cors_origins=("https://viewer.example", "https://ohif.example:8443"),
    )
    for key, value in settings.as_environment().items():
        monkeypatch.setenv(key, value)
    again = load_settings()
    assert again.peers == settings.peers
    assert again.break_glass_reasons == settings.break_glass_reasons
    assert again.cors_origins == settings.cors_origins


def test_cors_origins_from_toml_or_comma_separated_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "arkiv.toml"
    path.write_text('[arkiv]\ncors_origins = ["https://viewer.example"]\n')
    assert load_settings(path).cors_origins == ("https://viewer.example",)
    monkeypatch.setenv("ARKIV_CORS_ORIGINS", "https://a.example, https://b.example")
    assert load_settings().cors_origins == ("https://a.example", "https://b.example")
    assert Settings().cors_origins == ()


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('peers = [{ ae_title = "X" }]', "peers"),
        ('peers = [{ ae_title = "X", county = "oslo" }]', "peers"),
        ('peers = [{ ae_title = "X", county = "vestfold", services = ["fly"] }]', "peers"),
        (
            'peers = [{ ae_title = "A", county = "vestfold" }, '
            '{ ae_title = "A", county = "telemark" }]',
            "peers",
        ),
        ("break_glass_reasons = {}", "break_glass_reasons"),
        ('dicom_require_known_peers = "maybe"', "dicom_require_known_peers"),
        ('session_idle_minutes = "lang"', "session_idle_minutes"),
        ('s3_object_lock_mode = "forever"', "s3_object_lock_mode"),
        ('s3_object_lock_mode = "COMPLIANCE"', "s3_object_lock_days"),
        ("s3_part_size_mb = 1", "s3_part_size_mb"),
        ('s3_endpoint = "minio:9000"', "s3_access_key"),
        ('s3_secure = "sometimes"', "s3_secure"),
    ],
)
def test_bad_settings_are_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, named: str
) -> None:
    for key in list(os.environ):
        if key.startswith("ARKIV_"):
            monkeypatch.delenv(key)
    path = tmp_path / "arkiv.toml"
    path.write_text(f"[arkiv]\n{toml}\n")
    with pytest.raises(ConfigError, match=named):
        load_settings(path)
