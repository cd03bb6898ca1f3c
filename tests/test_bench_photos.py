"""The photo upload benchmark at toy size, so that it cannot rot between the runs that matter:
a few small photos into arkiv (embedded) and Orthanc, each client count once. No timing is
checked (the machine is shared); what is checked is that it printed figures for both and that
every photo was stored."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import photos

pytestmark = pytest.mark.timeout(300)


def test_camera_photos_are_different_camera_jpegs() -> None:
    made = photos.camera_photos(3, 400, 300, 92)
    assert len(set(made)) == 3
    assert all(p[:2] == b"\xff\xd8" and b"Exif" in p[:200] for p in made)


def test_benchmark_prints_figures_for_arkiv_and_orthanc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not photos.ORTHANC.exists():
        pytest.fail("Orthanc is missing: run .ci/install-system-packages")
    arkiv = Path(sys.executable).parent / "arkiv"
    assert arkiv.exists(), "the project is not installed in this venv (pip install -e .)"
    out = tmp_path / "photos.json"
    argv = [
        "--photos", "3", "--repeat", "1", "--clients", "1,2", "--width", "800",
        "--height", "600", "--peers", "embedded,orthanc", "--tmp-dir", str(tmp_path),
        "--arkiv-bin", str(arkiv), "--json", str(out),
    ]  # fmt: skip
    code = photos.main(argv)
    printed = capsys.readouterr().out
    assert code == 0, printed
    rows = json.loads(out.read_text())["rows"]
    assert {(r["peer"], r["clients"]) for r in rows} == {
        ("embedded", 1),
        ("embedded", 2),
        ("orthanc", 1),
        ("orthanc", 2),
    }
    assert all(r["photos"] == 3 and r["photos_per_s"] > 0 for r in rows)
    assert all("ratio_vs_orthanc" in r for r in rows if r["peer"] == "embedded")
    assert "first thumbnail" in printed
