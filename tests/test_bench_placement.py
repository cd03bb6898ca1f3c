"""The placement benchmark at toy size, so that it cannot rot between the runs that matter: the
shipped deployment once and a small generated pool once. No timing is checked (the machine is
shared); what is checked is that it printed figures for both and that the plans held N+1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import placement


def test_benchmark_prints_figures_for_both_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "placement.json"
    argv = ["--runs", "1", "--big-runs", "1", "--hosts", "12", "--vms", "80",
            "--time-limit", "20", "--fresh-runs", "0", "--json", str(out)]  # fmt: skip
    assert placement.main(argv) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [(r["hosts"], r["vms"]) for r in rows] == [(4, 20), (12, 80)]
    assert all(r["median_s"] > 0 and r["n_plus_one_verified"] for r in rows)
    assert rows[0]["status"] == "optimal"
    assert "placement solve time" in printed
