"""Synthetic dental DICOM data set for the ingest benchmark.

Intra-oral images (Digital Intra-Oral X-Ray Image Storage - For Presentation, modality IO,
1024x768) and panoramic images (Digital X-Ray Image Storage - For Presentation, modality PX,
2800x1400), 16 bits allocated / 12 stored, MONOCHROME2, Explicit VR Little Endian, written as
Part 10 files.  Patients get one study each with an IO series and a PX series.  Pixel data are
noisy gradients with a few bright "teeth", so the files do not compress to nothing.

Everything is deterministic for a given :class:`DatasetSpec` (UIDs included), and a generated set
is cached under ``$XDG_CACHE_HOME/arkiv-bench`` (``~/.cache/arkiv-bench``) so later runs reuse it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DigitalIntraOralXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from arkiv.identity import make_synthetic_national_id

#: Bump when the generated content changes, so stale caches are not reused.
FORMAT_VERSION = 1

IO_SOP_CLASS = str(DigitalIntraOralXRayImageStorageForPresentation)
PX_SOP_CLASS = str(DigitalXRayImageStorageForPresentation)
IO_SHAPE = (768, 1024)  # rows, columns
PX_SHAPE = (1400, 2800)

_FAMILY_NAMES = [
    "Nordmann", "Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen", "Nilsen",
    "Kristiansen", "Jensen", "Karlsen", "Johnsen", "Pettersen", "Eriksen", "Berg", "Haugen",
    "Hagen", "Ødegård", "Sæther", "Aasland",
]  # fmt: skip
_GIVEN_NAMES = {
    "F": ["Kari", "Åse", "Ingrid", "Solveig", "Sigrid", "Astrid", "Ragnhild", "Liv", "Marit"],
    "M": ["Ola", "Bjørn", "Håkon", "Øystein", "Lars", "Eirik", "Torbjørn", "Jørgen", "Even"],
}


@dataclass(frozen=True)
class DatasetSpec:
    """What to generate."""

    intraoral: int = 200
    panoramic: int = 20
    patients: int = 20
    seed: int = 20240601

    @property
    def key(self) -> str:
        return (
            f"v{FORMAT_VERSION}-io{self.intraoral}-px{self.panoramic}-p{self.patients}-s{self.seed}"
        )


@dataclass(frozen=True)
class BenchFile:
    """One generated Part 10 file; ``path`` is relative to the data set root."""

    path: str
    size: int
    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str


@dataclass(frozen=True)
class BenchDataset:
    """A generated data set on disk."""

    root: Path
    spec: DatasetSpec
    files: tuple[BenchFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def sop_classes(self) -> list[str]:
        return sorted({f.sop_class_uid for f in self.files})

    @property
    def patient_count(self) -> int:
        return len({f.patient_id for f in self.files})

    @property
    def study_count(self) -> int:
        return len({f.study_instance_uid for f in self.files})

    @property
    def series_count(self) -> int:
        return len({f.series_instance_uid for f in self.files})

    def abspath(self, f: BenchFile) -> Path:
        return self.root / f.path

    def summary(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "spec": asdict(self.spec),
            "instances": len(self.files),
            "intraoral": sum(1 for f in self.files if f.modality == "IO"),
            "panoramic": sum(1 for f in self.files if f.modality == "PX"),
            "patients": self.patient_count,
            "studies": self.study_count,
            "series": self.series_count,
            "total_bytes": self.total_bytes,
            "sop_classes": self.sop_classes,
            "transfer_syntax": str(ExplicitVRLittleEndian),
        }


# --------------------------------------------------------------------------------------------
# Identities


def _make_synthetic_id(birth: dt.date, individual: int) -> str | None:
    try:
        return make_synthetic_national_id(birth, individual)
    except ValueError:  # not issuable (check digit 10)
        return None


def synthetic_national_id(rng: random.Random) -> tuple[str, dt.date, str]:
    """A synthetic Norwegian national identity number (11 digits) with valid check digits.

    Synthetic test numbers have 80 added to the month, so they can never be a real person's.
    Returns ``(id, birth_date, sex)``; sex is only for the DICOM header.
    """
    while True:
        birth = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(0, 80 * 365))
        # Individual numbers 000-499 mean 1900-1999, 500-999 with year < 40 mean 2000-2039.
        individual = rng.randrange(0, 500) if birth.year < 2000 else rng.randrange(500, 1000)
        nid = _make_synthetic_id(birth, individual)
        if nid is not None:
            return nid, birth, "M" if individual % 2 else "F"


# --------------------------------------------------------------------------------------------
# Pixel data


def make_pixels(shape: tuple[int, int], n_blobs: int, seed: list[int]) -> npt.NDArray[np.uint16]:
    """A 12-bit noisy gradient with ``n_blobs`` bright ellipses ("teeth")."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    y = np.linspace(0.0, 1.0, rows, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, cols, dtype=np.float32)[None, :]
    gx, gy = rng.uniform(0.3, 1.0, size=2)
    img = np.float32(400.0) + np.float32(1400.0) * (np.float32(gx) * x + np.float32(gy) * y)
    for i in range(n_blobs):
        cx = (i + 0.5) / n_blobs + rng.uniform(-0.02, 0.02)
        cy = rng.uniform(0.35, 0.65)
        sx = rng.uniform(0.15, 0.35) / n_blobs
        sy = rng.uniform(0.12, 0.25)
        amp = rng.uniform(900.0, 1600.0)
        # Separable Gaussian: outer product of two 1-D profiles (cheap even for 2800x1400).
        prof_x = np.exp(-(((x - np.float32(cx)) / np.float32(sx)) ** 2))
        prof_y = np.exp(-(((y - np.float32(cy)) / np.float32(sy)) ** 2))
        img = img + np.float32(amp) * prof_y * prof_x
    img += rng.standard_normal(size=shape, dtype=np.float32) * np.float32(55.0)
    out: npt.NDArray[np.uint16] = np.clip(img, 0, 4095).astype(np.uint16)
    return out


# --------------------------------------------------------------------------------------------
# Data sets


def _uid(spec: DatasetSpec, *parts: object) -> str:
    return str(generate_uid(entropy_srcs=["arkiv-bench", str(spec.seed), *map(str, parts)]))


def _base_dataset(
    *,
    sop_class: str,
    sop_instance: str,
    modality: str,
    patient: dict[str, str],
    study: dict[str, str],
    series_uid: str,
    series_number: int,
    series_description: str,
    instance_number: int,
    pixels: npt.NDArray[np.uint16],
    pixel_spacing: str,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "ARKIV_BENCH_1"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyDate = study["date"]
    ds.SeriesDate = study["date"]
    ds.ContentDate = study["date"]
    ds.StudyTime = study["time"]
    ds.SeriesTime = study["time"]
    ds.ContentTime = study["time"]
    ds.AccessionNumber = study["accession"]
    ds.Modality = modality
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "arkiv-bench"
    ds.InstitutionName = "Syntetisk Tannklinikk"
    ds.ReferringPhysicianName = ""
    ds.StationName = "BENCH01"
    ds.StudyDescription = "Bitewing og panorama"
    ds.SeriesDescription = series_description
    ds.ManufacturerModelName = "Synthetic sensor"
    ds.PatientName = patient["name"]
    ds.PatientID = patient["id"]
    ds.IssuerOfPatientID = "NO-FNR-SYNTHETIC"
    ds.PatientBirthDate = patient["birth_date"]
    ds.PatientSex = patient["sex"]
    ds.BodyPartExamined = "JAW"
    ds.KVP = "60" if modality == "IO" else "70"
    ds.DetectorType = "SCINTILLATOR"
    ds.ImagerPixelSpacing = pixel_spacing
    ds.SoftwareVersions = "arkiv-bench 1"
    ds.StudyInstanceUID = study["uid"]
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study["id"]
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ""
    if modality == "IO":
        ds.ImageLaterality = "R" if instance_number % 2 else "L"
        ds.PositionerType = "NONE"
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def generate(
    spec: DatasetSpec,
    root: Path,
    progress: Callable[[int, int], None] | None = None,
) -> BenchDataset:
    """Write the data set described by ``spec`` into ``root`` (created) and its manifest."""
    if spec.intraoral < 0 or spec.panoramic < 0 or spec.intraoral + spec.panoramic == 0:
        raise ValueError("need at least one image")
    n_patients = max(1, min(spec.patients, max(spec.intraoral, spec.panoramic)))
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(spec.seed)
    total = spec.intraoral + spec.panoramic
    done = 0
    files: list[BenchFile] = []
    first_day = dt.date(2024, 1, 8)
    seen_ids: set[str] = set()
    for p in range(n_patients):
        while True:
            pid, birth, sex = synthetic_national_id(rng)
            if pid not in seen_ids:
                seen_ids.add(pid)
                break
        family = _FAMILY_NAMES[p % len(_FAMILY_NAMES)]
        given = _GIVEN_NAMES[sex][(p * 7) % len(_GIVEN_NAMES[sex])]
        patient = {
            "id": pid,
            "name": f"{family}^{given}",
            "birth_date": birth.strftime("%Y%m%d"),
            "sex": sex,
        }
        study_date = first_day + dt.timedelta(days=p)
        study = {
            "uid": _uid(spec, "study", p),
            "date": study_date.strftime("%Y%m%d"),
            "time": f"{8 + p % 9:02d}{(p * 13) % 60:02d}00",
            "accession": f"ACC{spec.seed % 10000:04d}{p + 1:05d}",
            "id": f"{p + 1}",
        }
        pdir = root / f"patient{p + 1:03d}"
        pdir.mkdir(exist_ok=True)
        kinds: list[tuple[str, int, str, tuple[int, int], int, str, str]] = [
            ("IO", spec.intraoral, IO_SOP_CLASS, IO_SHAPE, 6, "0.0185\\0.0185", "Bitewing"),
            ("PX", spec.panoramic, PX_SOP_CLASS, PX_SHAPE, 16, "0.1\\0.1", "Panorama"),
        ]
        for series_number, (modality, count, sop_class, shape, blobs, spacing, desc) in enumerate(
            kinds, start=1
        ):
            indices = range(p, count, n_patients)
            if not indices:
                continue
            series_uid = _uid(spec, "series", p, modality)
            for instance_number, index in enumerate(indices, start=1):
                sop_instance = _uid(spec, "instance", modality, index)
                pixels = make_pixels(shape, blobs, [spec.seed, series_number, index])
                ds = _base_dataset(
                    sop_class=sop_class,
                    sop_instance=sop_instance,
                    modality=modality,
                    patient=patient,
                    study=study,
                    series_uid=series_uid,
                    series_number=series_number,
                    series_description=desc,
                    instance_number=instance_number,
                    pixels=pixels,
                    pixel_spacing=spacing,
                )
                rel = f"{pdir.name}/{modality}_{instance_number:04d}.dcm"
                dcmwrite(root / rel, ds, enforce_file_format=True)
                files.append(
                    BenchFile(
                        path=rel,
                        size=(root / rel).stat().st_size,
                        sop_class_uid=sop_class,
                        sop_instance_uid=sop_instance,
                        modality=modality,
                        patient_id=pid,
                        study_instance_uid=study["uid"],
                        series_instance_uid=series_uid,
                    )
                )
                done += 1
                if progress is not None:
                    progress(done, total)
    dataset = BenchDataset(root=root, spec=spec, files=tuple(files))
    manifest = {
        "format_version": FORMAT_VERSION,
        "spec": asdict(spec),
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "files": [asdict(f) for f in files],
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return dataset


def load(root: Path, spec: DatasetSpec) -> BenchDataset | None:
    """The cached data set at ``root`` if it is complete and matches ``spec``, else None."""
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("format_version") != FORMAT_VERSION:
            return None
        if DatasetSpec(**manifest["spec"]) != spec:
            return None
        files = tuple(BenchFile(**f) for f in manifest["files"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    for f in files:
        try:
            if (root / f.path).stat().st_size != f.size:
                return None
        except OSError:
            return None
    if len(files) != spec.intraoral + spec.panoramic:
        return None
    return BenchDataset(root=root, spec=spec, files=files)


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "arkiv-bench"


def ensure(
    spec: DatasetSpec,
    cache_root: Path,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[BenchDataset, bool]:
    """Load the data set from ``cache_root/<key>`` or generate it there.

    Generation goes to a temporary sibling directory that is renamed into place only when
    complete, so an interrupted run never leaves a half-written set that looks valid.
    Returns ``(dataset, reused)``.
    """
    final = cache_root / spec.key
    cached = load(final, spec)
    if cached is not None:
        return cached, True
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = cache_root / f".tmp-{spec.key}-{os.getpid()}-{int(time.time())}"
    try:
        generate(spec, staging, progress)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    loaded = load(final, spec)
    if loaded is None:  # pragma: no cover - would be a bug in generate()
        raise RuntimeError(f"generated data set at {final} does not validate")
    return loaded, False
