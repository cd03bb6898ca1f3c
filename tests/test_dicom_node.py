"""The DICOM node as modalities meet it: real DCMTK tools (echoscu, storescu) and pynetdicom as
senders; the archive's WADO-RS, QIDO-RS, index, blob store, audit log and CLI as witnesses of what
was kept.

What a modality relies on: an image acknowledged is an image kept, byte for byte in the encoding it
was sent in; a refused image gets a reason and leaves nothing behind; a dropped connection or a
crashed server never leaves a half object visible; every stored image is audited.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from email.message import Message
from io import BytesIO
from pathlib import Path
from unittest import mock

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from arkiv.identity import make_synthetic_national_id
from storage.records import AuditQuery
from tests.conftest import PASSWORD, RunningArchive, free_port, require_tool
from tests.dicom_factory import (
    DX_PRESENTATION,
    INTRAORAL,
    Spec,
    dataset_bytes,
    encode,
    make_dataset,
    write,
)

pytestmark = pytest.mark.both_backends

AE_TITLE = "ARKIV"
MODALITY = "MODALITY1"
HOST = "127.0.0.1"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}

DUPLICATE_SOP_INSTANCE = 0x0111
SOP_CLASS_NOT_SUPPORTED = 0x0122
CANNOT_UNDERSTAND = 0xC000
ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03
"""Presentation context result "abstract syntax not supported" (PS3.8 9.3.3.2)."""

UNKNOWN_SOP_CLASS = "1.2.826.0.1.3680043.9.9999.1"
INSTANCES_TRANSFERRED = "110104"

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
"""pydicom's bundled test files only: nothing that pydicom would fetch from the internet."""

BUNDLED = [
    "CT_small.dcm",  # explicit VR little endian, 16-bit CT
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "rtplan.dcm",  # implicit VR little endian, no pixel data
    "SC_rgb_rle.dcm",  # RLE lossless
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "JPEG-lossy.dcm",  # JPEG extended (12-bit)
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless SV1
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "J2K_pixelrep_mismatch.dcm",  # JPEG 2000 lossless
    "JPEG2000.dcm",  # JPEG 2000
    "examples_ybr_color.dcm",  # multi-frame (30 frames), JPEG baseline
]
NEW_INSTANCE_UID = {"SC_rgb_jpeg_gdcm.dcm", "MR_small_jpeg_ls_lossless.dcm"}
"""Files sharing a SOP Instance UID with another file above get a fresh one (dcmodify -gin)."""

PROPOSE = {
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
}
"""storescu's option that proposes a file's own transfer syntax, so it is sent unconverted."""


# -- senders ---------------------------------------------------------------------------------------


def dcmtk(tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool(tool), *args],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def echoscu(port: int, called: str = AE_TITLE) -> subprocess.CompletedProcess[str]:
    return dcmtk("echoscu", "-aet", MODALITY, "-aec", called, HOST, str(port))


def transfer_syntax(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def storescu_args(port: int, path: Path) -> list[str]:
    """Propose only the file's own transfer syntax (-R plus the matching -x option)."""
    proposal = ["-R", PROPOSE[transfer_syntax(path)]]
    return ["-v", *proposal, "-aet", MODALITY, "-aec", AE_TITLE, HOST, str(port)]


def storescu(port: int, *files: Path) -> list[subprocess.CompletedProcess[str]]:
    """Send as a modality does: one association per transfer syntax, files sent as encoded."""
    groups: dict[str, list[Path]] = {}
    for path in files:
        groups.setdefault(transfer_syntax(path), []).append(path)
    return [
        dcmtk("storescu", *storescu_args(port, group[0]), *map(str, group))
        for group in groups.values()
    ]


def send(port: int, *files: Path) -> None:
    """storescu the files; each must be acknowledged with Success (not a warning)."""
    results = storescu(port, *files)
    for result in results:
        assert result.returncode == 0, f"storescu failed:\n{result.stderr}"
    acknowledged = sum(r.stderr.count("Received Store Response (Success)") for r in results)
    assert acknowledged == len(files), "\n".join(r.stderr for r in results)


@contextmanager
def association(port: int, *sop_classes: str) -> Iterator[Association]:
    """A pynetdicom association as MODALITY1, explicit VR little endian only."""
    ae = AE(ae_title=MODALITY)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class in sop_classes or (INTRAORAL, DX_PRESENTATION):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate(HOST, port, ae_title=AE_TITLE)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def c_store(port: int, dataset: Dataset) -> Dataset:
    with association(port) as assoc:
        assert assoc.is_established
        return assoc.send_c_store(dataset)


def c_store_bytes(port: int, part10: bytes, tmp_path: Path) -> Dataset:
    """Send a Part 10 object's dataset bytes exactly as given (pynetdicom reads the file meta for
    the command and streams the rest unparsed), as a broken modality would put them on the wire."""
    path = tmp_path / "raw.dcm"
    path.write_bytes(part10)
    with (
        mock.patch.object(_config, "STORE_SEND_CHUNKED_DATASET", True),
        association(port) as assoc,
    ):
        assert assoc.is_established
        return assoc.send_c_store(path)


def assert_refused(status: Dataset, code: int) -> None:
    """The exact status, with a reason the modality can show in its log."""
    assert status.get("Status") == code, f"status {status.get('Status')!r}, expected {code:#06x}"
    comment = str(status.get("ErrorComment", "")).strip()
    assert comment, "no Error Comment"
    assert len(comment) <= 64, comment


def assert_comment_in_default_repertoire(status: Dataset) -> None:
    """Error Comment (0000,0902) is LO in the command set, which has no Specific Character Set:
    the default repertoire, ASCII (PS3.7 6.3.1, PS3.5 6.1.2.1). A modality shows other bytes as
    garbage, and characters outside Latin-1 do not even reach it."""
    comment = str(status.get("ErrorComment", ""))
    assert comment.isascii(), f"Error Comment is not in the default repertoire: {comment!r}"


# -- witnesses -------------------------------------------------------------------------------------


def uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def multipart_parts(response: httpx.Response) -> list[bytes]:
    """The bodies of a multipart/related response (RFC 2046), byte-exact."""
    header = Message()
    header["Content-Type"] = response.headers["content-type"]
    assert header.get_content_type() == "multipart/related", header
    boundary = header.get_param("boundary")
    assert isinstance(boundary, str)
    delimiter = b"\r\n--" + boundary.encode("ascii")
    sections = (b"\r\n" + response.content).split(delimiter)
    assert sections[0] == b"" and sections[-1].startswith(b"--"), "malformed multipart body"
    parts = []
    for section in sections[1:-1]:
        _headers, separator, body = section.partition(b"\r\n\r\n")
        assert separator, "a part without a header block"
        parts.append(body)
    return parts


def retrieve(client: httpx.Client, study: str, series: str, sop: str) -> bytes:
    """WADO-RS retrieve of one instance as stored (`transfer-syntax=*`): the one part."""
    response = client.get(
        f"/dicom-web/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert response.status_code == 200, response.text
    parts = multipart_parts(response)
    assert len(parts) == 1
    return parts[0]


def search_studies(client: httpx.Client, study: str) -> list[object]:
    response = client.get("/dicom-web/studies", params={"StudyInstanceUID": study})
    assert response.status_code == 200, response.text
    found = response.json()
    assert isinstance(found, list)
    return found


def blob_files(data_dir: Path) -> set[Path]:
    """Every file of the blob store, finished or temporary."""
    return {path for path in (data_dir / "blobs").rglob("*") if path.is_file()}


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


def no_associations() -> bool:
    """True when no association (client or server side) of this process is alive."""
    return not any(isinstance(t, Association) and t.is_alive() for t in threading.enumerate())


# -- objects ---------------------------------------------------------------------------------------


def patient(individual: int) -> str:
    return make_synthetic_national_id(datetime.date(1984, 6, 15), individual)


def dental_files(directory: Path) -> list[Path]:
    """An intra-oral bitewing and a panoramic image, 16-bit, as a dental sensor sends them."""
    intraoral = Spec(patient_id=patient(101), modality="IO", sop_class=INTRAORAL, seed=3)
    panoramic = Spec(
        patient_id=patient(102),
        modality="PX",
        sop_class=DX_PRESENTATION,
        rows=320,
        columns=640,
        seed=4,
    )
    return [
        write(make_dataset(intraoral), directory / "intraoral.dcm"),
        write(make_dataset(panoramic), directory / "panoramic.dcm"),
    ]


def bundled_files(directory: Path) -> list[Path]:
    """pydicom's test files as storescu puts them on the wire.

    storescu leaves out Data Set Trailing Padding (CT_small.dcm has some), so each file is first
    passed through `dcmconv -p`; what is compared afterwards is exactly what was sent.
    """
    files = []
    for name in BUNDLED:
        source = PYDICOM_FILES / name
        assert source.is_file(), f"pydicom no longer bundles {name}"
        ds = pydicom.dcmread(source, stop_before_pixels=True)
        assert str(ds.get("PatientID", "")).strip(), f"{name} has no Patient ID"
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            assert UID(str(ds.get(keyword, ""))).is_valid, f"{name}: {keyword} is not valid"
        target = directory / name
        converted = dcmtk("dcmconv", "-p", str(source), str(target))
        assert converted.returncode == 0, converted.stderr
        if name in NEW_INSTANCE_UID:
            modified = dcmtk("dcmodify", "-nb", "-gin", str(target))
            assert modified.returncode == 0, modified.stderr
        files.append(target)
    sops = [uids(path)[2] for path in files]
    assert len(set(sops)) == len(sops), "two test files share a SOP Instance UID"
    return files


# -- 1. verification and the called AE title -------------------------------------------------------


def test_echo_answers_the_archive_ae_title_and_rejects_any_other(running: RunningArchive) -> None:
    assert echoscu(running.dicom_port).returncode == 0

    wrong = echoscu(running.dicom_port, called="WRONG")
    assert wrong.returncode != 0
    assert "Association Rejected" in wrong.stderr
    assert "Called AE Title Not Recognized" in wrong.stderr

    assert echoscu(running.dicom_port).returncode == 0


# -- 2. storage: every transfer syntax kept byte for byte ------------------------------------------


def test_storescu_objects_are_served_back_byte_for_byte_as_part10(
    running: RunningArchive, tmp_path: Path
) -> None:
    files = dental_files(tmp_path) + bundled_files(tmp_path)
    send(running.dicom_port, *files)
    assert running.archive.index.instance_count() == len(files)

    clinician = running.add_user("tannlege")
    served_dir = tmp_path / "served"
    served_dir.mkdir()
    served_files = []
    for path in files:
        sent = path.read_bytes()
        served = retrieve(clinician, *uids(path))
        assert served[128:132] == b"DICM", f"{path.name} is not served as a Part 10 file"
        assert transfer_syntax(path) == str(
            pydicom.dcmread(BytesIO(served), stop_before_pixels=True).file_meta.TransferSyntaxUID
        ), path.name
        assert dataset_bytes(served) == dataset_bytes(sent), f"{path.name} changed in the archive"
        served_files.append(served_dir / path.name)
        served_files[-1].write_bytes(served)

    check = dcmtk("dcmftest", *map(str, served_files))
    assert check.returncode == 0, check.stdout
    assert check.stdout.count("yes: ") == len(files), check.stdout


# -- 3. duplicates and conflicts -------------------------------------------------------------------


def test_same_object_sent_twice_is_one_instance_and_both_sends_succeed(
    running: RunningArchive, tmp_path: Path
) -> None:
    [image, _] = dental_files(tmp_path)

    send(running.dicom_port, image)
    send(running.dicom_port, image)

    assert running.archive.index.instance_count() == 1
    assert len(list(running.archive.blobs.keys())) == 1


def test_different_object_under_a_stored_sop_uid_is_refused_and_the_first_kept(
    running: RunningArchive, tmp_path: Path
) -> None:
    spec = Spec(patient_id=patient(103))
    first = write(make_dataset(spec), tmp_path / "first.dcm")
    send(running.dicom_port, first)

    status = c_store(running.dicom_port, make_dataset(replace(spec, seed=99)))

    assert_refused(status, DUPLICATE_SOP_INSTANCE)
    assert_comment_in_default_repertoire(status)
    assert running.archive.index.instance_count() == 1
    assert running.archive.index.conflict_count(spec.sop_uid) == 1
    served = retrieve(running.add_user("tannlege"), *uids(first))
    assert dataset_bytes(served) == dataset_bytes(first.read_bytes())


# -- 4. bad input ----------------------------------------------------------------------------------

Breaker = Callable[[Dataset], bytes]


def without(keyword: str) -> Breaker:
    def breaker(ds: Dataset) -> bytes:
        delattr(ds, keyword)
        return encode(ds)

    return breaker


def with_value(keyword: str, value: object) -> Breaker:
    def breaker(ds: Dataset) -> bytes:
        setattr(ds, keyword, value)
        return encode(ds)

    return breaker


def declaring(rows: int, columns: int) -> Breaker:
    """Image attributes that declare far more pixels than the Pixel Data holds."""

    def breaker(ds: Dataset) -> bytes:
        ds.Rows, ds.Columns = rows, columns
        return encode(ds)

    return breaker


def unlike_announced(keyword: str, value: str) -> Breaker:
    """The file meta, and so the C-STORE command, announce the object as made; the dataset then
    carries another value."""

    def breaker(ds: Dataset) -> bytes:
        announced = encode(ds)
        setattr(ds, keyword, value)
        meta = announced[: len(announced) - len(dataset_bytes(announced))]
        return meta + dataset_bytes(encode(ds))

    return breaker


def truncated_in_pixel_data(ds: Dataset) -> bytes:
    whole = encode(ds)
    return whole[: len(whole) - len(ds.PixelData) // 2]


BAD_OBJECTS = [
    pytest.param(without("SOPInstanceUID"), id="no-sop-instance-uid"),
    pytest.param(without("StudyInstanceUID"), id="no-study-instance-uid"),
    pytest.param(without("SeriesInstanceUID"), id="no-series-instance-uid"),
    pytest.param(with_value("SOPInstanceUID", "../../etc/passwd"), id="sop-uid-path"),
    pytest.param(with_value("StudyInstanceUID", "1.2.3/../4"), id="study-uid-path"),
    pytest.param(with_value("SeriesInstanceUID", "../../etc/passwd"), id="series-uid-path"),
    pytest.param(with_value("StudyInstanceUID", "1.2.840.abc.1"), id="study-uid-letters"),
    pytest.param(without("PatientID"), id="no-patient-id"),
    pytest.param(with_value("PatientID", "  "), id="blank-patient-id"),
    pytest.param(declaring(4000, 4000), id="image-larger-than-pixel-data"),
    pytest.param(truncated_in_pixel_data, id="truncated-in-pixel-data"),
    pytest.param(unlike_announced("SOPInstanceUID", generate_uid()), id="sop-uid-not-announced"),
]


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("breaker", BAD_OBJECTS)
def test_bad_object_is_refused_with_a_reason_and_leaves_nothing(
    running: RunningArchive, tmp_path: Path, breaker: Breaker
) -> None:
    send(running.dicom_port, dental_files(tmp_path)[0])
    blobs_before = blob_files(running.data_dir)

    status = c_store_bytes(running.dicom_port, breaker(make_dataset(Spec())), tmp_path)

    assert_refused(status, CANNOT_UNDERSTAND)
    assert running.archive.index.instance_count() == 1
    assert blob_files(running.data_dir) == blobs_before
    assert echoscu(running.dicom_port).returncode == 0
    assert_comment_in_default_repertoire(status)


def test_object_of_an_unknown_sop_class_is_refused_as_not_supported(
    running: RunningArchive, tmp_path: Path
) -> None:
    part10 = unlike_announced("SOPClassUID", UNKNOWN_SOP_CLASS)(make_dataset(Spec()))
    status = c_store_bytes(running.dicom_port, part10, tmp_path)

    assert_refused(status, SOP_CLASS_NOT_SUPPORTED)
    assert_comment_in_default_repertoire(status)
    assert running.archive.index.instance_count() == 0
    assert blob_files(running.data_dir) == set()


def test_unknown_sop_class_is_not_negotiated(running: RunningArchive) -> None:
    with association(running.dicom_port, UNKNOWN_SOP_CLASS) as assoc:
        rejected = [(str(cx.abstract_syntax), cx.result) for cx in assoc.rejected_contexts]
        assert assoc.accepted_contexts == []
        # pynetdicom, as requestor, aborts an association in which nothing was accepted.
        assert not assoc.is_established

    assert rejected == [(UNKNOWN_SOP_CLASS, ABSTRACT_SYNTAX_NOT_SUPPORTED)]
    assert running.archive.index.instance_count() == 0
    assert blob_files(running.data_dir) == set()
    assert echoscu(running.dicom_port).returncode == 0


# -- 5. a connection dropped in the middle of a transfer -------------------------------------------


def c_store_pdus(assoc: Association, ds: Dataset) -> bytes:
    """The P-DATA-TF PDUs of a whole C-STORE request (command and dataset), encoded."""
    context = assoc.accepted_contexts[0]
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = BytesIO(dataset_bytes(encode(ds)))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    max_pdu = assoc.acceptor.maximum_length
    assert context.context_id is not None and max_pdu is not None
    return b"".join(
        P_DATA_TF(p_data).encode() for p_data in message.encode_msg(context.context_id, max_pdu)
    )


def test_connection_dropped_mid_transfer_leaves_nothing_and_the_node_serves_on(
    running: RunningArchive, tmp_path: Path
) -> None:
    ds = make_dataset(Spec(patient_id=patient(104), rows=512, columns=512))
    with association(running.dicom_port) as assoc:
        assert assoc.is_established
        pdus = c_store_pdus(assoc, ds)
        transport = assoc.dul.socket
        assert transport is not None and transport.socket is not None
        raw = transport.socket
        # The whole command, then half of the dataset: a P-DATA-TF PDU whose announced length
        # never arrives. Then the connection goes, without A-RELEASE or A-ABORT.
        raw.sendall(pdus[: len(pdus) // 2])
        raw.shutdown(socket.SHUT_RDWR)
        wait_for(lambda: not assoc.is_established, "the client side sees the connection closed")

    wait_for(no_associations, "the node has let go of the broken association")
    assert running.archive.index.instance_count() == 0
    assert blob_files(running.data_dir) == set()

    [fresh, _] = dental_files(tmp_path)
    send(running.dicom_port, fresh)
    assert running.archive.index.instance_count() == 1


# -- 6. the server killed during a transfer --------------------------------------------------------


ARKIV = Path(sys.executable).with_name("arkiv")
"""The console script installed into the test environment (the project is installed editable)."""


class Server:
    """`arkiv serve` as an operator runs it, in its own process."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert ARKIV.is_file(), f"{ARKIV} is missing: install the project into the venv"
        ports = ["--dicom-port", str(self.dicom_port), "--http-port", str(self.http_port)]
        self.process = subprocess.Popen(
            [str(ARKIV), "serve", "--data", str(self.data_dir), "--host", HOST, *ports],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, "arkiv serve answers C-ECHO and HTTP", timeout=60)

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"arkiv serve exited with {self.process.returncode}")
        if echoscu(self.dicom_port).returncode != 0:
            return False
        try:
            return httpx.get(f"http://{HOST}:{self.http_port}/healthz", timeout=2).is_success
        except httpx.TransportError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ARKIV), *args, "--data", str(self.data_dir)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def client(self, user: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://{HOST}:{self.http_port}", auth=(user, PASSWORD), timeout=30
        )


def bytes_written(pid: int) -> int:
    """Bytes the process has written through write/send so far (Linux /proc/PID/io)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/PID/io")


@pytest.mark.slow
def test_server_killed_mid_transfer_shows_nothing_and_takes_the_resend(tmp_path: Path) -> None:
    large = write(
        make_dataset(Spec(patient_id=patient(105), rows=6000, columns=4000)), tmp_path / "cbct.dcm"
    )
    size = large.stat().st_size
    study, series, sop = uids(large)
    server = Server(tmp_path / "data")
    sender: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        sender = subprocess.Popen(
            [require_tool("storescu"), *storescu_args(server.dicom_port, large), str(large)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pid = sender.pid
        wait_for(
            lambda: sender.poll() is not None or bytes_written(pid) > size // 4,
            "storescu is a quarter through the transfer",
        )
        server.kill()
        assert sender.wait(timeout=30) != 0, "storescu finished before the server was killed"

        server.start()
        account = ["tannlege", "--role", "clinician", "--county", "vestfold"]
        added = server.cli("user", "add", *account, "--password-stdin", stdin=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr
        clinician = server.client("tannlege")
        assert search_studies(clinician, study) == []

        fsck = server.cli("fsck")
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        assert "MISSING" not in fsck.stdout
        verify = server.cli("audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr

        send(server.dicom_port, large)
        assert len(search_studies(clinician, study)) == 1
        served = retrieve(clinician, study, series, sop)
        assert dataset_bytes(served) == dataset_bytes(large.read_bytes())
    finally:
        if sender is not None and sender.poll() is None:
            sender.kill()
            sender.wait(timeout=10)
        server.kill()


# -- 7. audit --------------------------------------------------------------------------------------


def test_every_stored_object_is_audited_with_the_calling_ae_and_patient(
    running: RunningArchive, tmp_path: Path
) -> None:
    third = write(make_dataset(Spec(patient_id=patient(108), seed=7)), tmp_path / "third.dcm")
    files = [*dental_files(tmp_path), third]
    send(running.dicom_port, *files)

    events = running.archive.index.find_audit_events(AuditQuery(event_id=INSTANCES_TRANSFERRED))
    expected = {
        (str(ds.PatientID), str(ds.SOPInstanceUID))
        for ds in (pydicom.dcmread(path, stop_before_pixels=True) for path in files)
    }
    assert len(events) == len(files)
    assert {(e.patient_ids[0], e.details["sop_instance_uid"]) for e in events} == expected
    for event in events:
        assert event.actor == MODALITY
        assert event.actor_kind == "dicom-ae"
        assert event.outcome == 0
        assert len(event.patient_ids) == 1
    assert running.archive.audit.verify().ok
