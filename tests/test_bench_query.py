"""The query benchmark at toy size, so that it cannot rot between the runs that matter.

A 40-instance corpus in arkiv (imported in-process, then `arkiv serve`) and in Orthanc with its
DICOMweb plugin, each operation twice. No timings are checked (the machine is shared); what is
checked is that every measured operation printed figures for both servers, and that both servers
found the same studies for every query, which is what makes the comparison fair.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import query
from bench.corpus import generate

pytestmark = pytest.mark.timeout(300)


def test_corpus_spreads_patients_studies_and_norwegian_names(tmp_path: Path) -> None:
    corpus = generate(tmp_path, 400)
    assert len(corpus.instances) == 400
    assert 20 <= len(corpus.patient_ids) <= 100
    assert corpus.study_count > len(corpus.patient_ids)
    names = {i.patient_name for i in corpus.instances}
    assert any(ch in name for name in names for ch in "ÆØÅ")
    assert len({i.study_date[:4] for i in corpus.instances}) >= 5


@pytest.mark.slow
def test_benchmark_prints_every_operation_for_both_servers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for needed in (Path("/usr/sbin/Orthanc"), query.DICOMWEB_PLUGIN):
        if not needed.exists():
            pytest.fail(f"{needed} is missing: run .ci/install-system-packages")
    arkiv = Path(sys.executable).parent / "arkiv"
    assert arkiv.exists(), "the project is not installed in this venv (pip install -e .)"
    out = tmp_path / "query.json"
    argv = [
        "--instances", "40", "--repeat", "2", "--tmp-dir", str(tmp_path),
        "--arkiv-bin", str(arkiv), "--startup-timeout", "60", "--json", str(out),
    ]  # fmt: skip
    code = query.main(argv)
    printed = capsys.readouterr().out
    assert code == 0, printed

    doc = json.loads(out.read_text())
    assert doc["instances"] == 40
    assert doc["disagreements"] == []
    labels = [row["operation"] for row in doc["rows"]]
    assert len(labels) == 8
    for row in doc["rows"]:
        for server in ("arkiv", "orthanc"):
            assert row[server]["n"] == 2, row
            assert row[server]["median_ms"] > 0, row
        assert row["median_ratio_arkiv_over_orthanc"] > 0, row
        assert row["operation"] in printed
    assert [p for p in tmp_path.iterdir() if p.name.startswith("arkiv-bench-query-")] == []
