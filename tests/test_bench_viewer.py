"""The viewer benchmark at toy size, so that it cannot rot between the runs that matter: one
round on the embedded archive. No timing is checked (the machine is shared); what is checked is
that it printed figures for both studies and for the window drag, and wrote them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import viewer

pytestmark = pytest.mark.timeout(300)


def test_benchmark_prints_figures_for_the_full_mouth_series_and_the_panoramic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arkiv = Path(sys.executable).parent / "arkiv"
    assert arkiv.exists(), "the project is not installed in this venv (pip install -e .)"
    out = tmp_path / "viewer.json"
    argv = [
        "--rounds", "1", "--peers", "embedded", "--moves", "30", "--tmp-dir", str(tmp_path),
        "--arkiv-bin", str(arkiv), "--json", str(out),
    ]  # fmt: skip
    code = viewer.main(argv)
    printed = capsys.readouterr().out
    assert code == 0, printed
    doc = json.loads(out.read_text())
    opening = {(r["peer"], r["study"]): r for r in doc["opening"]}
    assert set(opening) == {
        ("embedded", "fmx"),
        ("embedded", "panoramic"),
        ("embedded", "fmx (cached)"),
        ("embedded", "panoramic (cached)"),
    }
    assert all(0 < r["first_full_median_ms"] < 60_000 for r in opening.values())
    assert all(r["thumbnail_median_ms"] > 0 for r in opening.values())
    [drag] = doc["window"]
    assert drag["renders"] > 0 and drag["renders_per_s"] > 0 and drag["ms_per_render_median"] > 0
    assert "first full median ms" in printed and "renders/s" in printed
