"""The ingest benchmark at toy size, so that its scale-out peers cannot rot between the runs that
matter.

One repetition of a five-instance data set over two associations against the embedded peer, the
scale-out peer (`arkiv serve` on PostgreSQL + MinIO, which the benchmark starts itself) and the
two-node scale-out peer (two `arkiv dicom` nodes, one association each). No timings are checked
(the machine is shared); what is checked is that every run stored every instance — counted in
the data directory, in PostgreSQL and in the bucket — and that both backends are printed and
saved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import ingest
from bench.load import split
from tests.conftest import require_tool
from tests.servers import ServerUnavailable, minio_binary, postgres_bin

pytestmark = pytest.mark.timeout(180)


def test_split_balances_bytes_between_associations(tmp_path: Path) -> None:
    files = [(tmp_path / f"{n}.dcm", size) for n, size in enumerate([5, 1, 1, 3, 2])]
    groups = split(files, 2)
    assert sorted(p for g in groups for p in g) == sorted(p for p, _ in files)
    assert [sum(dict(files)[p] for p in g) for g in groups] == [6, 6]


def test_scaleout_peers_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for tool in ("storescu", "echoscu"):
        require_tool(tool)
    try:
        postgres_bin("initdb")
        minio_binary()
    except ServerUnavailable as exc:
        pytest.fail(str(exc))
    arkiv = Path(sys.executable).parent / "arkiv"
    assert arkiv.exists(), "the project is not installed in this venv (pip install -e .)"
    out = tmp_path / "ingest.json"
    argv = [
        "--peers", "embedded,scaleout,scaleout-2nodes",
        "--intraoral", "4", "--panoramic", "1", "--patients", "2",
        "--repeat", "1", "--associations", "2",
        "--dicom-workers", "1", "--node-workers", "1",
        "--no-cache", "--tmp-dir", str(tmp_path / "tmp"),
        "--arkiv-bin", str(arkiv), "--startup-timeout", "60", "--timeout", "60",
        "--json", str(out),
    ]  # fmt: skip
    code = ingest.main(argv)
    printed = capsys.readouterr().out
    assert code == 0, printed

    doc = json.loads(out.read_text())
    runs = {r["server"]: r for r in doc["runs"]}
    assert set(runs) == {"embedded", "scaleout", "scaleout-2nodes"}
    for name, run in runs.items():
        assert run["ok"], (name, run["error"])
        assert run["stored"] == run["instances"] == 5, (name, run["stored_check"])
        assert run["instances_per_s"] > 0
    assert runs["embedded"]["stored_how"] == "*.dcm files under --data"
    assert runs["scaleout"]["stored_how"] == (
        "PostgreSQL instances rows 5, S3 objects under dicom/ 5"
    )
    assert runs["scaleout-2nodes"]["stored_how"] == runs["scaleout"]["stored_how"]
    assert runs["embedded"]["backend_cpu_s"] is None
    assert set(runs["scaleout"]["backend_cpu_s"]) == {"postgresql", "minio"}
    assert runs["scaleout"]["associations_per_node"] == [2]
    assert runs["scaleout-2nodes"]["associations_per_node"] == [1, 1]  # one to each node
    servers = doc["servers"]
    assert servers["scaleout-2nodes"]["nodes"] == 2
    assert "PostgreSQL" in servers["scaleout"]["backend"]
    ratio = doc["ratios_instances_per_s"]["scaleout"]["2"]["vs_embedded"]
    assert ratio is not None and ratio > 0
    assert {row["server"] for row in doc["summary"]} == set(runs)

    # both backends in the printed tables, with the scale-out peer's ratio to the embedded one
    assert "Side by side" in printed and "scaleout / embedded" in printed
    for name in runs:
        assert name in printed
    # the work directory (data directories, logs, data set) is removed
    assert not any((tmp_path / "tmp").iterdir())
