"""`arkiv import PATH…` as the operator runs it, on real files: a county's old image store (a
nested folder tree with files with and without extensions, a dataset written without file
meta, a text file, a truncated object), a CD made by DCMTK's dcmmkdir, zip archives (one a zip
bomb) and a photo manifest. What the operator and the auditor rely on is checked: the counts,
the JSON and readable reports, each object's source in the index and in its audit event, that a
second run imports nothing twice, that a different object under a stored SOP Instance UID is
reported and the first kept, and that a run stopped half-way reports so and continues.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from arkiv.audit import Actor
from arkiv.cli import main
from arkiv.config import Settings
from arkiv.services import Archive
from storage.blobs import FileBlobStore, StoredBlob
from storage.database import create_index_engine
from storage.errors import StorageError
from storage.records import AuditQuery, PhotoQuery
from tests import media_factory as media
from tests.conftest import require_tool
from tests.dicom_factory import Spec, dataset_bytes, encode, make_dataset, synthetic_national_id

PATIENT = synthetic_national_id(date(1979, 3, 8), 211)
OTHER_PATIENT = synthetic_national_id(date(1991, 11, 23), 305)


@dataclass
class Result:
    code: int
    out: str
    err: str
    report: dict[str, Any]


class Importer:
    """`arkiv import …` through `arkiv.cli.main`, against one archive (embedded, or PostgreSQL
    and MinIO through the ARKIV_* environment, as an operator's shell would have it)."""

    def __init__(self, tmp_path: Path, backend: dict[str, Any], capsys: Any, monkeypatch: Any):
        self.data = tmp_path / "data"
        self.settings = Settings(data_dir=self.data, **backend)
        self.reports = tmp_path / "reports"
        self.reports.mkdir()
        self._capsys = capsys
        self._runs = 0
        for name, value in backend.items():
            monkeypatch.setenv(f"ARKIV_{name.upper()}", str(value))

    def __call__(self, *args: str) -> Result:
        self._runs += 1
        report = self.reports / f"run{self._runs}.json"
        self._capsys.readouterr()
        try:
            code = main(["import", *args, "--data", str(self.data), "--report", str(report)])
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = self._capsys.readouterr()
        document = json.loads(report.read_text("utf-8")) if report.exists() else {}
        return Result(code, captured.out, captured.err, document)

    def open(self) -> Archive:
        return Archive(self.settings)

    def instances(self) -> dict[str, dict[str, str]]:
        """SOP Instance UID → the index row's source, county and SHA-256."""
        engine = create_index_engine(self.settings.index_url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    text("SELECT sop_uid, source, county, sha256 FROM instances")
                ).all()
        finally:
            engine.dispose()
        return {r[0]: {"source": r[1], "county": r[2], "sha256": r[3]} for r in rows}

    def import_events(self) -> dict[str, list[dict[str, Any]]]:
        """SOP Instance UID → the details of each store event about it."""
        archive = self.open()
        try:
            events = archive.index.find_audit_events(AuditQuery(action="C", limit=1000))
        finally:
            archive.close()
        found: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            uid = event.details.get("sop_instance_uid")
            if uid:
                found.setdefault(uid, []).append(event.details)
        return found


@pytest.fixture
def importer(
    tmp_path: Path,
    backend: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Importer]:
    monkeypatch.delenv("ARKIV_DATA_DIR", raising=False)
    yield Importer(tmp_path, backend, capsys, monkeypatch)


def xray(seed: int, patient: str = PATIENT, **spec: Any) -> tuple[str, bytes]:
    """(SOP Instance UID, Part 10 bytes) of a small intra-oral image."""
    ds = make_dataset(Spec(patient_id=patient, seed=seed, **spec))
    return str(ds.SOPInstanceUID), encode(ds)


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- a folder tree ---------------------------------------------------------------------------------


@pytest.mark.both_backends
def test_a_folder_tree_imports_with_bad_files_reported(importer: Importer, tmp_path: Path) -> None:
    store = tmp_path / "old-store"
    expected: dict[str, str] = {}  # SOP Instance UID → its origin
    for seed, relative in ((1, "2019/kari/IMG0001.dcm"), (2, "2019/kari/bw/IMG0002")):
        uid, data = xray(seed)
        expected[uid] = f"file:{put(store / relative, data)}"
    raw_uid, raw = xray(3)
    expected[raw_uid] = f"file:{put(store / '2020/ola/deep/er/RAW0003', dataset_bytes(raw))}"
    # A name copied from a Windows share in Latin-1: not UTF-8, named exactly with an escape.
    latin_uid, latin = xray(6)
    (store / "2020").mkdir(parents=True, exist_ok=True)
    with open(os.fsencode(store / "2020") + b"/R\xf8ntgen.dcm", "wb") as handle:
        handle.write(latin)
    expected[latin_uid] = f"file:{store}/2020/R\\xf8ntgen.dcm"
    put(store / "2020/ola/notes.txt", b"kontroll om 6 mnd\n")
    _, whole = xray(4)
    truncated = put(store / "2020/ola/IMG0004.dcm", whole[: len(whole) // 2])
    put(store / ".thumbnails/IMG0005.dcm", xray(5)[1])  # hidden: not part of the store

    first = importer(str(store), "--county", "telemark")

    assert first.code == 1, first.out + first.err  # the truncated file was refused
    report = first.report
    assert (report["imported"], report["duplicates"], report["differing"]) == (4, 0, [])
    assert report["county"] == "telemark" and report["operator"].startswith("cli:")
    assert [r["origin"] for r in report["refused"]] == [f"file:{truncated}"]
    assert "truncated" in report["refused"][0]["reason"]
    assert report["not_dicom"] == [f"file:{store / '2020/ola/notes.txt'}"]
    assert ".thumbnails" not in json.dumps(report)
    assert report["finished_at"] and report["stopped"] == ""
    assert "imported 4" in first.out and "refused 1" in first.out
    assert f"refused  file:{truncated}" in first.out
    assert "not DICOM (skipped) 1" in first.out

    instances = importer.instances()
    assert set(instances) == set(expected)
    events = importer.import_events()
    for uid, origin in expected.items():
        assert instances[uid]["source"] == f"import:{origin}"
        assert instances[uid]["county"] == "telemark"
        assert [e["source"] for e in events[uid]] == [origin]

    again = importer(str(store), "--county", "telemark")

    assert again.code == 1
    assert (again.report["imported"], again.report["duplicates"]) == (0, 4)
    assert len(again.report["refused"]) == 1
    assert "imported 0" in again.out and "already stored 4" in again.out
    assert len(importer.instances()) == 4


def test_files_without_preamble_are_stored_with_their_own_bytes(
    importer: Importer, tmp_path: Path
) -> None:
    """A dataset written without preamble and file meta is given both, and a file meta group
    written without the preamble is given one; their own bytes follow unchanged."""
    raw_uid, part10 = xray(11)
    raw = put(tmp_path / "export" / "0001", dataset_bytes(part10)).read_bytes()
    bare_uid, other = xray(12)
    bare = put(tmp_path / "export" / "0002", other[132:]).read_bytes()

    result = importer(str(tmp_path / "export"), "--county", "vestfold")

    assert result.code == 0, result.out + result.err
    assert result.report["imported"] == 2
    rows = importer.instances()
    archive = importer.open()
    try:
        for uid, original in ((raw_uid, raw), (bare_uid, bare)):
            key = next(k for k in archive.blobs.keys() if uid in k)
            stored = archive.blobs.read(key)
            assert hashlib.sha256(stored).hexdigest() == rows[uid]["sha256"]
            assert stored[128:132] == b"DICM" and stored.endswith(original)
    finally:
        archive.close()
    assert archive_bytes_equal(other, bare_uid, importer)


def archive_bytes_equal(part10: bytes, uid: str, importer: Importer) -> bool:
    """The object given only its preamble back is the very Part 10 file it was cut from."""
    return importer.instances()[uid]["sha256"] == hashlib.sha256(part10).hexdigest()


# -- DICOMDIR media --------------------------------------------------------------------------------


def test_dicomdir_media_made_by_dcmmkdir(importer: Importer, tmp_path: Path) -> None:
    media_dir = tmp_path / "cd"
    uids = {}
    for n in range(3):
        uid, data = xray(20 + n)
        uids[f"IMAGES/P1/IM{n}"] = uid
        put(media_dir / "IMAGES" / "P1" / f"IM{n}", data)
    made = subprocess.run(
        [require_tool("dcmmkdir"), "--recurse", "IMAGES"],
        cwd=media_dir, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    dicomdir = media_dir / "DICOMDIR"
    assert dicomdir.is_file()
    (media_dir / "IMAGES" / "P1" / "IM2").unlink()  # copied off the disc incompletely

    result = importer(str(media_dir), "--county", "buskerud")

    assert result.code == 1, result.out + result.err
    # Read through the DICOMDIR only, never a second time by walking the folder.
    assert (result.report["imported"], result.report["duplicates"]) == (2, 0)
    assert [r["origin"] for r in result.report["refused"]] == [f"dicomdir:{dicomdir}!IMAGES/P1/IM2"]
    assert "not on the media" in result.report["refused"][0]["reason"]
    assert result.report["not_dicom"] == []  # the DICOMDIR itself is the index, not a stray file
    instances = importer.instances()
    events = importer.import_events()
    for file_id in ("IMAGES/P1/IM0", "IMAGES/P1/IM1"):
        uid = uids[file_id]
        assert instances[uid]["source"] == f"import:dicomdir:{dicomdir}!{file_id}"
        assert [e["source"] for e in events[uid]] == [f"dicomdir:{dicomdir}!{file_id}"]

    by_file = importer(str(dicomdir), "--county", "buskerud")
    assert (by_file.report["imported"], by_file.report["duplicates"]) == (0, 2)


# -- zip archives ----------------------------------------------------------------------------------


def test_zip_members_at_any_depth_oversized_and_bombs(importer: Importer, tmp_path: Path) -> None:
    archive_path = tmp_path / "telemark-2018.zip"
    uids = {}
    big_uid, big = xray(32, rows=800, columns=800)  # 1.28 MB: above the bound given below
    with zipfile.ZipFile(archive_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for seed, member in ((30, "2018/P1/IMG1.DCM"), (31, "2018/P2/deeper/IMG2")):
            uid, data = xray(seed)
            uids[member] = uid
            zf.writestr(member, data)
        zf.writestr("2018/index.html", "<html>old viewer</html>")
        zf.writestr("2018/P3/BIG.DCM", big)
        zf.writestr("__MACOSX/2018/._IMG1.DCM", b"resource fork")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("IMG1.DCM", xray(33)[1])
        zf.writestr("zeros.dcm", bytes(80 * 1024 * 1024))

    result = importer(str(archive_path), str(bomb), "--county", "telemark", "--max-object-mb", "1")

    assert result.code == 1
    report = result.report
    assert report["imported"] == 2
    refused = {r["origin"]: r["reason"] for r in report["refused"]}
    assert set(refused) == {f"zip:{archive_path}!2018/P3/BIG.DCM", f"zip:{bomb}"}
    assert "more than the 1 MB" in refused[f"zip:{archive_path}!2018/P3/BIG.DCM"]
    assert "zip bomb" in refused[f"zip:{bomb}"]
    assert report["not_dicom"] == [f"zip:{archive_path}!2018/index.html"]
    instances = importer.instances()
    assert big_uid not in instances and len(instances) == 2  # nothing from the bomb either
    for member, uid in uids.items():
        assert instances[uid]["source"] == f"import:zip:{archive_path}!{member}"
    assert f"refused  zip:{bomb}" in result.out


# -- the same SOP Instance UID with other content ------------------------------------------------


def test_a_different_object_under_a_stored_uid_is_reported_and_the_first_kept(
    importer: Importer, tmp_path: Path
) -> None:
    spec = {"sop_uid": "1.2.826.0.1.3680043.8.498.4242", "study_uid": "1.2.3.4.42"}
    _, first = xray(40, **spec)
    _, second = xray(41, **spec)  # other pixels, same UIDs: another system's export
    assert first != second
    original = put(tmp_path / "county-a" / "IMG1.dcm", first)
    other = put(tmp_path / "county-b" / "IMG1.dcm", second)
    assert importer(str(original.parent), "--county", "vestfold").code == 0

    result = importer(str(other.parent), "--county", "vestfold")

    assert result.code == 1
    assert result.report["imported"] == 0
    [differs] = result.report["differing"]
    assert differs["origin"] == f"file:{other}"
    assert differs["sop_instance_uid"] == spec["sop_uid"]
    assert "first object is kept" in differs["reason"]
    assert f"differs  file:{other}" in result.out
    row = importer.instances()[spec["sop_uid"]]
    assert row["sha256"] == hashlib.sha256(first).hexdigest()
    assert row["source"] == f"import:file:{original}"


# -- stopped half-way ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "stopped"),
    [
        (StorageError("no space left on device"), "the archive became unavailable"),
        (KeyboardInterrupt(), "interrupted (Ctrl-C)"),
    ],
)
def test_a_stopped_run_writes_its_report_and_the_next_run_continues(
    importer: Importer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    failure: BaseException,
    stopped: str,
) -> None:
    store = tmp_path / "store"
    for n in range(6):
        put(store / f"IMG{n}", xray(50 + n)[1])
    real_put = FileBlobStore.put
    calls = {"n": 0}

    def failing_put(self: FileBlobStore, key: str, data: bytes, sha256: str) -> StoredBlob:
        calls["n"] += 1
        if calls["n"] == 3:
            raise failure
        return real_put(self, key, data, sha256)

    monkeypatch.setattr(FileBlobStore, "put", failing_put)
    half = importer(str(store), "--county", "vestfold", "--workers", "1")

    assert half.code == 1
    assert half.report["stopped"].startswith(stopped)
    # The two before the failure, and at most the one already under way beside it.
    done = half.report["imported"]
    assert done in (2, 3)
    assert "STOPPED" in half.out

    monkeypatch.setattr(FileBlobStore, "put", real_put)
    rest = importer(str(store), "--county", "vestfold")
    assert rest.code == 0, rest.out + rest.err
    assert (rest.report["imported"], rest.report["duplicates"]) == (6 - done, done)
    assert len(importer.instances()) == 6


# -- photos from a manifest ------------------------------------------------------------------------


def known_patient(importer: Importer, patient_id: str, county: str) -> None:
    """An X-ray of the patient in `county`, so that the archive knows them there."""
    archive = importer.open()
    try:
        actor = Actor(name="SENSOR", kind="dicom-ae", county=county, address="127.0.0.1")
        archive.ingest.ingest_dicom(xray(90 + len(county), patient=patient_id)[1], actor)
    finally:
        archive.close()


def test_photos_from_a_manifest(importer: Importer, tmp_path: Path) -> None:
    known_patient(importer, PATIENT, "vestfold")
    known_patient(importer, PATIENT, "buskerud")
    folder = tmp_path / "fotoarkiv"
    put(folder / "2019" / "IMG_0001.JPG", media.jpeg(seed=81, gps=False))
    put(folder / "2019" / "IMG_0002.JPG", media.jpeg(seed=82, gps=False))
    put(folder / "2019" / "IMG_0003.JPG", media.jpeg(seed=83, gps=False))
    put(folder / "2019" / "notes.txt", b"not a photo")
    manifest = folder / "manifest.csv"
    manifest.write_text(
        "file,national_id,date,category,teeth,county\n"
        f"2019/IMG_0001.JPG,{PATIENT},2019-03-14,before-treatment,11 21,\n"
        f"2019/IMG_0002.JPG,{PATIENT},2019-06-01T10:15:00,after-treatment,46,buskerud\n"
        f"2019/IMG_0003.JPG,{OTHER_PATIENT},2019-06-01,intraoral,,\n"
        f"2019/missing.jpg,{PATIENT},2019-06-01,intraoral,,\n"
        f"2019/notes.txt,{PATIENT},2019-06-01,intraoral,,\n"
        f"2019/IMG_0003.JPG,{PATIENT},14.03.2019,intraoral,,\n"
        f"2019/IMG_0003.JPG,{PATIENT},2019-06-01,intraoral,19,\n"
        f"../../etc/passwd,{PATIENT},2019-06-01,intraoral,,\n",
        encoding="utf-8",
    )

    result = importer("--manifest", str(manifest), "--county", "vestfold")

    assert result.code == 1, result.out + result.err
    photos = result.report["photos"]
    assert (photos["imported"], photos["duplicates"]) == (2, 0)
    refused = {r["row"]: r["reason"] for r in photos["refused"]}
    assert set(refused) == {"4", "5", "6", "7", "8", "9"}
    assert "no patient" in refused["4"]
    assert "cannot read" in refused["5"]
    assert "not a photo" in refused["6"]
    assert "not YYYY-MM-DD" in refused["7"]
    assert "19" in refused["8"]  # no tooth 19 in FDI numbering
    assert "inside it" in refused["9"]
    assert "row 4 2019/IMG_0003.JPG" in result.out
    archive = importer.open()
    try:
        patient = archive.index.photos.patient_by_national_id(PATIENT)
        assert patient is not None
        stored = archive.index.photos.find(PhotoQuery(patient_pk=patient.pk))
    finally:
        archive.close()
    assert sorted((p.county, p.facts.category, p.facts.teeth) for p in stored) == [
        ("buskerud", "after-treatment", (46,)),
        ("vestfold", "before-treatment", (11, 21)),
    ]
    assert {p.facts.taken_at[:10] for p in stored} == {"2019-03-14", "2019-06-01"}
    archive = importer.open()
    try:
        events = archive.index.find_audit_events(AuditQuery(action="C", limit=1000))
    finally:
        archive.close()
    origins = sorted(e.details["source"] for e in events if "photo_id" in e.details)
    assert origins == [
        f"manifest:{manifest.resolve()}#row2:2019/IMG_0001.JPG",
        f"manifest:{manifest.resolve()}#row3:2019/IMG_0002.JPG",
    ], "each imported photo is traced to its manifest row"

    again = importer("--manifest", str(manifest), "--county", "vestfold")
    assert (again.report["photos"]["imported"], again.report["photos"]["duplicates"]) == (0, 2)


# -- usage -----------------------------------------------------------------------------------------


def test_usage_errors_import_nothing(importer: Importer, tmp_path: Path) -> None:
    missing = importer(str(tmp_path / "nowhere"), "--county", "vestfold")
    assert missing.code == 2 and "does not exist" in missing.err
    nothing = importer("--county", "vestfold")
    assert nothing.code == 2 and "give a PATH" in nothing.err
    bad_manifest = put(tmp_path / "m.csv", b"fil,fnr\nx.jpg,1\n")
    header = importer("--manifest", str(bad_manifest), "--county", "vestfold")
    assert header.code == 2 and "national_id" in header.err
    county = importer(str(tmp_path), "--county", "oslo")
    assert county.code == 2
    assert not any(r.report for r in (missing, nothing, header, county))


def test_the_report_goes_to_the_current_folder_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    put(tmp_path / "store" / "IMG1", xray(60)[1])
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code = main(
        ["import", str(tmp_path / "store"), "--county", "vestfold", "--data", str(tmp_path / "d")]
    )
    assert code == 0
    [written] = list(work.glob("arkiv-import-*.json"))
    assert json.loads(written.read_text("utf-8"))["imported"] == 1
    assert written.stat().st_mode & 0o077 == 0  # it names patients' files: the operator's only
    assert f"report: {written.name}" in capsys.readouterr().out


# -- patients --------------------------------------------------------------------------------------


def test_the_report_lists_the_patient_conflicts_the_import_made(
    importer: Importer, tmp_path: Path
) -> None:
    vestfold, telemark = tmp_path / "vestfold", tmp_path / "telemark"
    kari = {"patient_name": "Nordmann^Kari", "birth_date": "19790308"}  # as her ID says
    put(vestfold / "IMG1", xray(11, **kari)[1])
    put(telemark / "IMG1", xray(12, **{**kari, "patient_name": "Nordmann^Karianne"})[1])
    ola = {"patient_name": "Hansen^Ola", "birth_date": "19911123"}
    put(telemark / "IMG2", xray(13, patient=OTHER_PATIENT, **ola)[1])

    first = importer(str(vestfold), "--county", "vestfold")
    assert first.code == 0 and first.report["patient_conflicts"] == []

    second = importer(str(telemark), "--county", "telemark")

    assert second.code == 0, second.out + second.err  # a conflict is listed, not a refusal
    [conflict] = second.report["patient_conflicts"]
    assert conflict["kind"] == "identity" and PATIENT in conflict["summary"]
    assert "Karianne" in json.dumps(conflict), "both names are shown for the admin to decide"
    assert "patient conflicts 1" in second.out and "conflict identity" in second.out
    instances = importer.instances()
    assert len(instances) == 3, "nothing merged away or refused: both are kept"
