"""Photo upload benchmark: camera JPEGs of about 5 MB into arkiv, and the time to a thumbnail.

Run from the project root::

    .venv/bin/python -m bench.photos                      # 40 photos, 1 and 4 clients, 3 reps
    .venv/bin/python -m bench.photos --photos 8 --repeat 1 --peers embedded

Each photo is a 4000×3000 JPEG at quality 94 (about 5 MB) with camera EXIF (capture time,
GPS), like a clinic's camera writes it, each one different. Clients upload them through
``POST /api/photos`` (HTTP Basic), each photo on its own request; right after its 201, the
client asks for its thumbnail. Per peer and number of clients the benchmark prints photos/s and
MB/s over the wall time, the median and 90th percentile of the upload, and the median time from
starting the upload to having the thumbnail ("time to first thumbnail").

The peers (``--peers``, default every one that is installed):

* ``embedded``: ``arkiv serve`` on SQLite and files;
* ``scaleout``: ``arkiv serve`` on a PostgreSQL and a MinIO the benchmark starts;
* ``orthanc``: Orthanc given the same photos as DICOM VL Photographic Images (the archive's own
  wrapper of each JPEG) through ``POST /instances``, its thumbnail being ``/instances/…/preview``.
  Orthanc keeps no photo as a photo (no metadata removal, no renditions kept), so the ratio says
  what arkiv's photo handling costs over storing the same bytes as DICOM.

Every run gets a fresh patient (photos of another patient are new photos), so repetitions on one
server never meet their own duplicates.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from arkiv.accounts import Role
from arkiv.audit import Actor
from arkiv.config import Settings
from arkiv.counties import County
from arkiv.photo_dicom import PhotoContext, PhotoPatient, wrap_jpeg
from arkiv.services import Archive
from bench.peers import LOCALHOST, ArkivPeer, OrthancPeer, Peer, PeerError, stop_all
from bench.scaleout import ScaleoutBackend, ScaleoutPeer
from tests.dicom_factory import Spec, encode, make_dataset, synthetic_national_id
from tests.media_factory import camera_exif

console = Console(width=150)
USER, PASSWORD = "bench-assistent", "bench-password-1"
ORTHANC = Path("/usr/sbin/Orthanc")


class BenchPhotoError(RuntimeError):
    """The benchmark could not be set up or a server answered wrongly."""


def camera_photos(count: int, width: int, height: int, quality: int) -> list[bytes]:
    """`count` different camera JPEGs: one noisy picture, a different patch in each."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([120 + 80 * x / width, 60 + 90 * y / height, 100 + 0 * x], -1)
    base = np.clip(base + rng.normal(0, 9, base.shape), 0, 255).astype("uint8")
    exif = camera_exif().tobytes()
    photos = []
    for n in range(count):
        picture = base.copy()
        picture[n % height, :, :] = 255 - picture[n % height, :, :]
        out = io.BytesIO()
        Image.fromarray(picture, "RGB").save(out, "JPEG", quality=quality, exif=exif)
        photos.append(out.getvalue())
    return photos


def patient_ids(runs: int) -> list[str]:
    """A patient per run: a person born on a different day each, with a synthetic national ID."""
    return [synthetic_national_id(date(1980, 1, 1) + timedelta(days=n), 100) for n in range(runs)]


def prepare_archive(settings: Settings, patients: list[str]) -> None:
    """An account to upload with, and an X-ray for each patient so that the archive knows them."""
    archive = Archive(settings)
    try:
        archive.accounts.add_user(USER, PASSWORD, Role.CLINICIAN, County.VESTFOLD)
        actor = Actor(name="BENCH", kind="dicom-ae", county=County.VESTFOLD.value)
        for patient in patients:
            archive.ingest.ingest_dicom(encode(make_dataset(Spec(patient_id=patient))), actor)
    finally:
        archive.close()


class PhotoArkivPeer(ArkivPeer):
    def __init__(self, executable: Path, patients: list[str], timeout: float) -> None:
        super().__init__(executable, timeout, name="embedded")
        self.patients = patients

    def prepare(self, run_dir: Path) -> None:
        prepare_archive(Settings(data_dir=run_dir / "data"), self.patients)


class PhotoScaleoutPeer(ScaleoutPeer):
    def __init__(
        self, executable: Path, backend: ScaleoutBackend, patients: list[str], timeout: float
    ) -> None:
        super().__init__(executable, backend, timeout, name="scaleout")
        self.patients = patients

    def prepare(self, run_dir: Path) -> None:
        super().prepare(run_dir)
        prepare_archive(self.archive_settings(run_dir), self.patients)


@dataclass
class Run:
    peer: str
    clients: int
    wall_s: float
    upload_s: list[float]
    thumbnail_s: list[float]
    bytes_sent: int

    def row(self) -> dict[str, Any]:
        ordered = sorted(self.upload_s)
        return {
            "peer": self.peer,
            "clients": self.clients,
            "photos": len(self.upload_s),
            "photos_per_s": len(self.upload_s) / self.wall_s,
            "mb_per_s": self.bytes_sent / 1e6 / self.wall_s,
            "upload_median_ms": statistics.median(ordered) * 1000,
            "upload_p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1000,
            "first_thumbnail_median_ms": statistics.median(self.thumbnail_s) * 1000,
        }


def upload_arkiv(client: httpx.Client, jpeg: bytes, patient: str) -> tuple[float, float]:
    started = time.monotonic()
    answer = client.post(
        "/api/photos",
        data={"patient_id": patient, "category": "intraoral"},
        files=[("file", ("IMG.JPG", jpeg, "image/jpeg"))],
    )
    uploaded = time.monotonic()
    if answer.status_code != 201:
        raise BenchPhotoError(f"upload answered {answer.status_code}: {answer.text[:300]}")
    thumbnail = client.get(answer.json()["photos"][0]["links"]["thumbnail"])
    if thumbnail.status_code != 200:
        raise BenchPhotoError(f"thumbnail answered {thumbnail.status_code}")
    return uploaded - started, time.monotonic() - started


def upload_orthanc(client: httpx.Client, dicom: bytes, _patient: str) -> tuple[float, float]:
    started = time.monotonic()
    answer = client.post("/instances", content=dicom, headers={"Content-Type": "application/dicom"})
    uploaded = time.monotonic()
    if answer.status_code != 200:
        raise BenchPhotoError(f"Orthanc answered {answer.status_code}: {answer.text[:300]}")
    preview = client.get(f"/instances/{answer.json()['ID']}/preview")
    if preview.status_code != 200:
        raise BenchPhotoError(f"Orthanc preview answered {preview.status_code}")
    return uploaded - started, time.monotonic() - started


def measure(peer: Peer, payloads: list[bytes], clients: int, patient: str) -> Run:
    """Upload every payload (JPEGs to arkiv, DICOM wrappers to Orthanc) with `clients`
    clients at once."""
    orthanc = isinstance(peer, OrthancPeer)
    auth = None if orthanc else (USER, PASSWORD)
    base = f"http://{LOCALHOST}:{peer.http_port}"
    with (
        httpx.Client(base_url=base, auth=auth, timeout=120) as client,
        ThreadPoolExecutor(clients) as pool,
    ):
        started = time.monotonic()
        upload = upload_orthanc if orthanc else upload_arkiv
        futures = [pool.submit(upload, client, payload, patient) for payload in payloads]
        timings = [f.result() for f in futures]
        wall = time.monotonic() - started
    sent = sum(len(p) for p in payloads)
    return Run(peer.name, clients, wall, [t[0] for t in timings], [t[1] for t in timings], sent)


def wrapped(jpegs: list[bytes], run: int) -> list[bytes]:
    """Each JPEG in the DICOM wrapper Orthanc is given instead, with UIDs of its own per run
    (an instance Orthanc already holds would cost it nothing)."""
    person = PhotoPatient("01017012345", "Nordmann^Kari", "19700101", "F")
    photos = []
    for n, jpeg in enumerate(jpegs):
        context = PhotoContext(
            study_uid=f"2.25.{(run + 1) * 10**7 + 1 * 10**6 + n // 10}",
            series_uid=f"2.25.{(run + 1) * 10**7 + 2 * 10**6 + n // 10}",
            sop_uid=f"2.25.{(run + 1) * 10**7 + 3 * 10**6 + n}",
            instance_number=n + 1,
            taken_at=datetime(2026, 11, 20, 10, 15),
            category="intraoral",
            teeth=(),
            note="",
            county="vestfold",
            operator="bench",
            study_description="Kliniske foto",
            series_description="Kliniske foto",
        )
        photos.append(wrap_jpeg(jpeg, person, context, recompressed=False))
    return photos


def print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="photo upload (medians over repetitions)")
    for column in ("peer", "clients", "photos/s", "MB/s", "upload median ms", "upload p90 ms",
                   "first thumbnail median ms", "× orthanc (photos/s)"):  # fmt: skip
        table.add_column(column, justify="right")
    for row in rows:
        ratio = row.get("ratio_vs_orthanc")
        table.add_row(
            row["peer"], str(row["clients"]), f"{row['photos_per_s']:.2f}",
            f"{row['mb_per_s']:.1f}", f"{row['upload_median_ms']:.0f}",
            f"{row['upload_p90_ms']:.0f}", f"{row['first_thumbnail_median_ms']:.0f}",
            "" if ratio is None else f"{ratio:.2f}",
        )  # fmt: skip
    console.print(table)


def summarise(runs: list[Run]) -> list[dict[str, Any]]:
    """The median of each figure over the repetitions of one peer and client count."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run.peer, run.clients), []).append(run.row())
    rows = []
    for (peer, clients), items in groups.items():
        row: dict[str, Any] = {"peer": peer, "clients": clients, "photos": items[0]["photos"]}
        for key in ("photos_per_s", "mb_per_s", "upload_median_ms", "upload_p90_ms",
                    "first_thumbnail_median_ms"):  # fmt: skip
            row[key] = statistics.median(item[key] for item in items)
        rows.append(row)
    for row in rows:
        reference = next(
            (r for r in rows if r["peer"] == "orthanc" and r["clients"] == row["clients"]), None
        )
        if reference is not None and row["peer"] != "orthanc":
            row["ratio_vs_orthanc"] = row["photos_per_s"] / reference["photos_per_s"]
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.photos", description=__doc__)
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--clients", default="1,4", help="client counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--peers", default="embedded,scaleout,orthanc")
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--quality", type=int, default=94)
    parser.add_argument("--arkiv-bin", type=Path, default=Path(sys.executable).parent / "arkiv")
    parser.add_argument("--startup-timeout", type=float, default=90.0)
    parser.add_argument("--tmp-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args(argv)


def make_peers(args: argparse.Namespace, patients: list[str]) -> list[Peer]:
    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    peers: list[Peer] = []
    for name in wanted:
        if name == "embedded":
            peers.append(PhotoArkivPeer(args.arkiv_bin, patients, args.startup_timeout))
        elif name == "scaleout":
            missing = ScaleoutBackend.missing()
            if missing:
                console.print(f"[yellow]scaleout left out: {missing}")
                continue
            peers.append(
                PhotoScaleoutPeer(args.arkiv_bin, ScaleoutBackend(), patients, args.startup_timeout)
            )
        elif name == "orthanc":
            if not ORTHANC.exists():
                console.print("[yellow]orthanc left out: /usr/sbin/Orthanc is not installed")
                continue
            peers.append(OrthancPeer(ORTHANC, args.startup_timeout))
        else:
            raise BenchPhotoError(f"unknown peer {name!r}")
    return peers


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    runs_per_peer = len(clients) * args.repeat
    patients = patient_ids(runs_per_peer)
    work = Path(tempfile.mkdtemp(prefix="arkiv-bench-photos-", dir=args.tmp_dir))
    started = time.monotonic()
    jpegs = camera_photos(args.photos, args.width, args.height, args.quality)
    console.print(
        f"{len(jpegs)} camera JPEGs of {args.width}×{args.height}, median "
        f"{statistics.median(len(j) for j in jpegs) / 1e6:.1f} MB, made in "
        f"{time.monotonic() - started:.0f} s"
    )
    runs: list[Run] = []
    peers: list[Peer] = []
    try:
        peers = make_peers(args, patients)
        for peer in peers:
            peer.start(work / peer.name)
            try:
                run_index = 0
                for _ in range(args.repeat):
                    for count in clients:
                        is_orthanc = isinstance(peer, OrthancPeer)
                        payloads = wrapped(jpegs, run_index) if is_orthanc else jpegs
                        runs.append(measure(peer, payloads, count, patients[run_index]))
                        run_index += 1
            finally:
                peer.stop()
        rows = summarise(runs)
        print_table(rows)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            doc = {"photos": len(jpegs), "width": args.width, "height": args.height,
                   "repeat": args.repeat, "rows": rows}  # fmt: skip
            args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        return 0
    except (BenchPhotoError, PeerError) as exc:
        console.print(f"[red]bench.photos: {exc}")
        for peer in peers:
            console.print(f"--- {peer.name} log ---\n{peer.log_tail()}")
        return 1
    finally:
        for peer in peers:
            peer.stop()
        for peer in peers:
            if isinstance(peer, ScaleoutPeer):
                peer.backend.stop()
        stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
