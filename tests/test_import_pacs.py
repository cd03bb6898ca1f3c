"""`arkiv import --from-pacs`: a county's archive pulled out of a running Orthanc.

Orthanc (Debian package) is loaded through its REST API with a synthetic county archive: four
patients, twelve dated studies over ten years with two series each, one study compressed
(RLE Lossless), one without StudyDate. What the operator and the auditor rely on:
- every instance Orthanc holds arrives over C-GET and over C-MOVE, its dataset byte-identical
  to Orthanc's file, in its stored transfer syntax, and the index and the audit log name the
  PACS (AE, host, port) and the study it came from;
- a run interrupted part-way resumes without retrieving a completed study again;
- a second run retrieves nothing; studies added afterwards (or grown) are all a third retrieves;
- windows that answer too many studies are split, and still every study arrives;
- an unreachable PACS, or one that does not know the calling AE, is a clear error and nothing
  is imported.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import RLELossless, generate_uid

from arkiv.audit import Actor
from arkiv.errors import ArchiveUnavailable
from arkiv.importing.pacs_state import PullState
from arkiv.importing.run import Disposition, ImportReport, ImportRun, SourceObject
from arkiv.services import Archive
from dicom_node.contexts import accepted_transfer_syntaxes
from dicom_node.pacs_pull import (
    PacsAddress,
    PacsError,
    PacsUnreachable,
    PullOptions,
    PullResult,
    get_storage_contexts,
    pull,
)
from storage.records import AuditQuery, StudyQuery
from tests.conftest import free_port
from tests.dicom_factory import (
    DX_PRESENTATION,
    INTRAORAL,
    Spec,
    dataset_bytes,
    encode,
    make_dataset,
    synthetic_national_id,
)
from tests.servers import OrthancServer, ServerUnavailable

HOST = "127.0.0.1"
IMPORTER = "ARKIVIMPORT"
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class County:
    """What was loaded into the source PACS."""

    files: dict[str, bytes] = field(default_factory=dict)
    """SOP Instance UID → the Part 10 file as posted."""
    studies: dict[str, list[str]] = field(default_factory=dict)
    """Study Instance UID → its SOP Instance UIDs."""
    compressed: set[str] = field(default_factory=set)
    undated: str = ""


def _post(orthanc: OrthancServer, data: bytes) -> None:
    request = urllib.request.Request(
        f"http://{HOST}:{orthanc.http_port}/instances", data=data, method="POST"
    )
    request.add_header("Content-Type", "application/dicom")
    with _HTTP.open(request, timeout=30) as response:
        assert json.loads(response.read())["Status"] in ("Success", "AlreadyStored")


def add_study(
    orthanc: OrthancServer,
    county: County,
    patient: int,
    study_date: str,
    series: int = 2,
    per_series: int = 2,
    compress: bool = False,
    study_uid: str | None = None,
) -> str:
    """One study (IO bitewings and a DX panoramic series) posted to Orthanc."""
    study_uid = study_uid or generate_uid()
    birth = date(1960 + patient * 7, 3, 1 + patient)
    patient_id = synthetic_national_id(birth, 100 + patient)
    for series_number in range(series):
        series_uid = generate_uid()
        for number in range(per_series):
            panoramic = series_number == 1
            spec = Spec(
                patient_id=patient_id,
                patient_name=f"Pasient^{patient}",
                birth_date=f"{birth:%Y%m%d}",
                study_uid=study_uid,
                series_uid=series_uid,
                study_date=study_date,
                accession=f"A{len(county.studies):04d}",
                modality="PX" if panoramic else "IO",
                sop_class=DX_PRESENTATION if panoramic else INTRAORAL,
                seed=len(county.files) + 1,
            )
            ds = make_dataset(spec)
            ds.SeriesNumber = series_number + 1
            ds.InstanceNumber = number + 1
            if not study_date:
                del ds.StudyDate
            if compress:
                ds.compress(RLELossless, generate_instance_uid=False)
                county.compressed.add(spec.sop_uid)
            data = encode(ds)
            _post(orthanc, data)
            county.files[spec.sop_uid] = data
            county.studies.setdefault(study_uid, []).append(spec.sop_uid)
    return study_uid


def load_county(orthanc: OrthancServer) -> County:
    county = County()
    for n in range(12):
        year = 2015 + (n * 10) // 12
        add_study(
            orthanc, county, patient=n % 4, study_date=f"{year}{1 + n % 12:02d}15", compress=n == 5
        )
    county.undated = add_study(orthanc, county, patient=1, study_date="", series=1)
    return county


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    try:
        server = OrthancServer.start(tmp_path / "orthanc")
    except ServerUnavailable as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


def new_run(archive: Archive, observe: object = None) -> ImportRun:
    actor = Actor(name="cli:operator", kind="system", county="vestfold")
    report = ImportReport(county="vestfold", operator="cli:operator")
    return ImportRun(archive.ingest, actor, report, observe)  # type: ignore[arg-type]


def address(orthanc: OrthancServer) -> PacsAddress:
    return PacsAddress(orthanc.aet, HOST, orthanc.dicom_port)


def options(**overrides: object) -> PullOptions:
    values: dict[str, object] = {
        "since": date(2010, 1, 1),
        "until": date(2026, 12, 31),
        "window_days": 365,
        "listen_host": HOST,
        "timeout": 30.0,
    }
    values.update(overrides)
    return PullOptions(**values)  # type: ignore[arg-type]


def pull_once(
    orthanc: OrthancServer,
    archive: Archive,
    state_file: Path,
    run: ImportRun | None = None,
    **overrides: object,
) -> tuple[PullResult, ImportRun]:
    run = run or new_run(archive)
    state = PullState(state_file, str(address(orthanc)))
    return pull(address(orthanc), options(**overrides), run, state), run


def index_rows(archive: Archive) -> dict[str, tuple[str, str, str, str]]:
    """SOP Instance UID → (source, sha256, blob key, transfer syntax) as the index holds them."""
    db = archive.settings.data_dir / "index.sqlite3"
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT sop_uid, source, sha256, blob_key, transfer_syntax_uid FROM instances"
        ).fetchall()
    return {row[0]: (row[1], row[2], row[3], row[4]) for row in rows}


def assert_all_imported(orthanc: OrthancServer, archive: Archive, county: County) -> None:
    """Every instance Orthanc holds is in the index, the dataset byte-identical to Orthanc's
    file, the blob matching the index's digest, the source naming the PACS and the study."""
    held = orthanc.instance_files()
    rows = index_rows(archive)
    assert set(rows) == set(held) == set(county.files)
    pacs = address(orthanc)
    for sop_uid, orthanc_file in held.items():
        source, sha256, key, syntax = rows[sop_uid]
        found = archive.index.find_instances(StudyQuery(sop_uids=(sop_uid,)))
        assert len(found) == 1
        instance = found[0]
        study_uid = instance.study_uid
        assert source == f"import:pacs:{pacs}/study/{study_uid}"
        assert sop_uid in county.studies[study_uid]
        blob = archive.blobs.read(key)
        assert hashlib.sha256(blob).hexdigest() == sha256
        assert (
            hashlib.sha256(dataset_bytes(blob)).hexdigest()
            == hashlib.sha256(dataset_bytes(orthanc_file)).hexdigest()
        ), f"{sop_uid} differs from Orthanc's file"
        meta = pydicom.dcmread(BytesIO(orthanc_file), stop_before_pixels=True).file_meta
        assert syntax == str(meta.TransferSyntaxUID)
        if sop_uid in county.compressed:
            assert syntax == str(RLELossless)


def audit_sources(archive: Archive) -> dict[str, str]:
    """SOP Instance UID → details.source of its stored event."""
    events = archive.index.find_audit_events(AuditQuery(event_id="110104", limit=10_000))
    return {
        str(e.details["sop_instance_uid"]): str(e.details.get("source", ""))
        for e in events
        if e.outcome == 0 and "sop_instance_uid" in e.details and not e.outcome_description
    }


def test_pacs_address_is_parsed_with_a_clear_error() -> None:
    assert PacsAddress.parse("OLDPACS@10.20.0.5:104") == PacsAddress("OLDPACS", "10.20.0.5", 104)
    assert str(PacsAddress.parse("ORTHANC@localhost:4242")) == "ORTHANC@localhost:4242"
    for bad in ("OLDPACS:104", "OLDPACS@host", "@host:104", "OLDPACS@host:0", "A" * 17 + "@h:1"):
        with pytest.raises(PacsError, match=r"AE|port"):
            PacsAddress.parse(bad)
    with pytest.raises(PacsError, match="--listen-port"):
        PullOptions(retrieve="move").check()


def test_get_contexts_fit_one_association_and_offer_every_stored_syntax() -> None:
    """128 presentation contexts at most, one taken by C-GET: the study's SOP classes get a
    context per transfer syntax (the last holding the rest), so the PACS can send each object
    as stored; without SOPClassesInStudy, pynetdicom's common storage classes, one each."""
    every = accepted_transfer_syntaxes()
    two = get_storage_contexts((INTRAORAL, DX_PRESENTATION), 127)
    assert len(two) <= 127
    for sop_class in (INTRAORAL, DX_PRESENTATION):
        mine = [cx for cx in two if cx.abstract_syntax == sop_class]
        offered = [ts for cx in mine for ts in cx.transfer_syntax]
        assert sorted(offered) == sorted(every)
        assert all(cx.scp_role and not cx.scu_role for cx in mine)
        assert str(RLELossless) in [
            cx.transfer_syntax[0] for cx in mine if len(cx.transfer_syntax) == 1
        ]
    unknown = get_storage_contexts((), 127)
    assert 100 <= len(unknown) <= 127
    assert all(sorted(cx.transfer_syntax) == sorted(every) for cx in unknown)


def test_get_imports_everything_then_only_what_is_new(
    orthanc: OrthancServer, archive: Archive, tmp_path: Path
) -> None:
    county = load_county(orthanc)
    orthanc.add_modality("importer", IMPORTER, HOST, free_port())
    state_file = tmp_path / "pull.state.json"

    result, run = pull_once(orthanc, archive, state_file, concurrency=3)

    assert run.report.refused == [] and run.report.differing == []
    assert run.report.imported == len(county.files)
    assert result.studies_found == len(county.studies) == 13
    assert sorted(result.retrieve_requests) == sorted(county.studies)
    assert_all_imported(orthanc, archive, county)
    sources = audit_sources(archive)
    pacs = address(orthanc)
    for study_uid, sops in county.studies.items():
        for sop_uid in sops:
            assert sources[sop_uid] == f"pacs:{pacs}/study/{study_uid}"
    saved = json.loads(state_file.read_text())
    assert saved["run"] is None and set(saved["studies"]) == set(county.studies)
    assert saved["studies"][county.undated]["instances"] == 2

    # A second run asks every window again and retrieves nothing.
    again, second = pull_once(orthanc, archive, state_file)
    assert again.retrieve_requests == []
    assert again.studies_found == 13 and again.studies_skipped == 13
    assert second.report.imported == 0 and second.report.duplicates == 0

    # New studies, and one more image in an old study: all the third run retrieves.
    grown = next(uid for uid in county.studies if uid != county.undated)
    before = set(county.files)
    new_a = add_study(orthanc, county, patient=2, study_date="20251201")
    new_b = add_study(orthanc, county, patient=3, study_date="", series=1, per_series=1)
    add_study(orthanc, county, patient=0, study_date=_date_of(grown, archive), series=1,
              per_series=1, study_uid=grown)  # fmt: skip
    third, run3 = pull_once(orthanc, archive, state_file)
    assert sorted(third.retrieve_requests) == sorted([new_a, new_b, grown])
    assert run3.report.imported == len(set(county.files) - before) == 2 * 2 + 1 + 1
    assert run3.report.duplicates == 4  # the grown study's old objects, skipped by ingest
    assert_all_imported(orthanc, archive, county)


def _date_of(study_uid: str, archive: Archive) -> str:
    found = archive.index.find_instances(StudyQuery(study_uids=(study_uid,)))
    metadata = json.loads(found[0].metadata_json)
    return str(metadata["00080020"]["Value"][0])


class Interrupt(KeyboardInterrupt):
    """What the operator's Ctrl-C raises, here from inside the ingest of the Nth object."""


def test_move_interrupted_then_resumed_retrieves_no_study_twice(
    orthanc: OrthancServer, archive: Archive, tmp_path: Path
) -> None:
    county = load_county(orthanc)
    listen_port = free_port()
    orthanc.add_modality("importer", IMPORTER, HOST, listen_port)
    state_file = tmp_path / "pull.state.json"
    seen: Counter[str] = Counter()

    def stop_after_ten(found: SourceObject, _disposition: Disposition) -> None:
        seen[found.origin] += 1
        if sum(seen.values()) == 10:
            raise Interrupt()

    move: dict[str, Any] = {"retrieve": "move", "listen_port": listen_port, "concurrency": 2}
    first = new_run(archive, stop_after_ten)
    state = PullState(state_file, str(address(orthanc)))
    with pytest.raises(KeyboardInterrupt):
        pull(address(orthanc), options(**move), first, state)
    completed = set(json.loads(state_file.read_text())["studies"])
    assert completed, "no study completed before the interruption"
    assert len(completed) < len(county.studies)
    assert json.loads(state_file.read_text())["run"] is not None

    result, second = pull_once(orthanc, archive, state_file, **move)
    assert result.resumed
    assert not completed & set(result.retrieve_requests), "a completed study was retrieved again"
    assert completed | set(result.retrieve_requests) == set(county.studies)
    assert first.report.imported + second.report.imported == len(county.files)
    # Only objects of studies cut off by the interruption can come back as duplicates.
    interrupted = {o.rsplit("/", 1)[1] for o in seen} - completed
    assert second.report.duplicates <= sum(len(county.studies[s]) for s in interrupted)
    assert second.report.refused == []
    assert_all_imported(orthanc, archive, county)

    # Over C-MOVE a second run retrieves nothing either.
    again, third = pull_once(orthanc, archive, state_file, **move)
    assert again.retrieve_requests == [] and third.report.imported == 0


def test_windows_that_answer_too_many_are_split(
    orthanc: OrthancServer, archive: Archive, tmp_path: Path
) -> None:
    county = load_county(orthanc)
    busy_day = [add_study(orthanc, county, patient=p, study_date="20200102") for p in (0, 1, 2)]
    orthanc.add_modality("importer", IMPORTER, HOST, free_port())
    result, run = pull_once(
        orthanc, archive, tmp_path / "s.json", window_days=20 * 366, max_per_query=2
    )
    # One window of 20 years, plus the undated query and its follow-up by UID, would be 3
    # queries; every answer of 2 or more studies makes two halves.
    assert result.windows_split >= 6
    assert result.queries > 3 + result.windows_split
    assert run.report.imported == len(county.files)
    assert sorted(result.retrieve_requests) == sorted(county.studies)
    # A single day cannot be split: asked for without a limit, all three arrive, and the
    # operator is told that day reached the limit.
    assert set(busy_day) <= set(result.retrieve_requests)
    assert [w for w in result.warnings if w.startswith("2020-01-02: 3 studies")]


def test_archive_unavailable_stops_the_pull_and_the_next_run_continues(
    orthanc: OrthancServer, archive: Archive, tmp_path: Path
) -> None:
    county = load_county(orthanc)
    orthanc.add_modality("importer", IMPORTER, HOST, free_port())
    state_file = tmp_path / "s.json"
    received: list[str] = []

    def storage_fails(found: SourceObject, _disposition: Disposition) -> None:
        received.append(found.origin)
        if len(received) == 6:
            raise ArchiveUnavailable("the blob store is full")

    with pytest.raises(ArchiveUnavailable, match="full"):
        pull_once(orthanc, archive, state_file, run=new_run(archive, storage_fails))
    done = set(json.loads(state_file.read_text())["studies"])
    assert 0 < len(done) < len(county.studies)

    result, run = pull_once(orthanc, archive, state_file)
    assert not done & set(result.retrieve_requests)
    assert len(index_rows(archive)) == len(county.files)
    assert run.report.refused == []


def test_rate_limits_how_fast_studies_are_started(
    orthanc: OrthancServer, archive: Archive, tmp_path: Path
) -> None:
    county = County()
    for n in range(4):
        add_study(orthanc, county, patient=n, study_date=f"2020010{n + 1}", series=1, per_series=1)
    orthanc.add_modality("importer", IMPORTER, HOST, free_port())
    started = time.monotonic()
    result, run = pull_once(orthanc, archive, tmp_path / "s.json", rate=120.0, concurrency=4)
    assert time.monotonic() - started >= 3 * 0.5
    assert run.report.imported == 4 and len(result.retrieve_requests) == 4


def test_unreachable_pacs_and_unknown_calling_ae_import_nothing(
    orthanc: OrthancServer, archive: Archive, tmp_path: Path
) -> None:
    load_county(orthanc)
    nowhere = PacsAddress("OLDPACS", HOST, free_port())
    run = new_run(archive)
    with pytest.raises(PacsUnreachable, match=f"no DICOM association with OLDPACS@{HOST}"):
        pull(nowhere, options(), run, PullState(tmp_path / "a.json", str(nowhere)))
    assert run.report.imported == 0

    # Orthanc does not know the calling AE title STRANGER: it drops the association.
    with pytest.raises(PacsUnreachable, match="calling AE title 'STRANGER'"):
        pull_once(orthanc, archive, tmp_path / "b.json", run=run, calling_ae="STRANGER")
    assert run.report.imported == 0
    assert index_rows(archive) == {}

    # C-MOVE to a destination Orthanc does not know: refused, named, nothing imported.
    orthanc.add_modality("importer", IMPORTER, HOST, free_port())
    with pytest.raises(PacsError, match="does not know the move destination 'NOTKNOWN'"):
        pull_once(
            orthanc,
            archive,
            tmp_path / "c.json",
            run=run,
            retrieve="move",
            listen_ae="NOTKNOWN",
            listen_port=free_port(),
        )
    assert index_rows(archive) == {}


def test_arkiv_import_from_pacs_on_the_command_line(
    orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from arkiv.cli import main
    from arkiv.config import Settings

    county = load_county(orthanc)
    orthanc.add_modality("importer", IMPORTER, HOST, free_port())
    data, state, report = tmp_path / "data", tmp_path / "s.json", tmp_path / "report.json"
    pacs = str(address(orthanc))
    command = ["import", "--from-pacs", pacs, "--county", "telemark", "--data", str(data)]
    command += ["--state", str(state), "--since", "2014-01-01", "--window-days", "400"]

    assert main([*command, "--report", str(report), "--concurrency", "2"]) == 0
    document = json.loads(report.read_text())
    assert document["imported"] == len(county.files) and document["refused"] == []
    assert f"pacs:{pacs}" in document["sources"]
    assert "13 studies found, 13 retrieved" in capsys.readouterr().err.replace("\n", " ")

    assert main([*command, "--report", str(report)]) == 0
    assert json.loads(report.read_text())["imported"] == 0

    archive = Archive(Settings(data_dir=data))
    try:
        rows = index_rows(archive)
        assert set(rows) == set(county.files)
        instances = archive.index.find_instances(StudyQuery(sop_uids=tuple(rows)))
        assert {i.county for i in instances} == {"telemark"}
    finally:
        archive.close()

    # A malformed address is a usage error: nothing starts, no report is written.
    bad = ["import", "--from-pacs", "ORTHANC:104", "--county", "telemark", "--data", str(data)]
    report.unlink()
    assert main([*bad, "--report", str(report)]) == 2
    assert "AE@host:port" in capsys.readouterr().err
    assert not report.exists()
