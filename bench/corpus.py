"""A synthetic dental corpus for the query benchmark: many small instances, spread like a clinic's.

Queries cost what the index costs, not what the pixels cost, so the images are tiny (64×64,
8 bits) and the spread is what matters: about one patient per twelve instances, one to four
studies per patient, one to ten instances per study, study dates over ten years, and Norwegian
names with æøå in UTF-8 (ISO_IR 192), so a name query exercises the character set too.  A fixed
seed makes the same corpus every time, which lets two servers be compared on identical data.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset as PydicomDataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from bench.dataset import synthetic_national_id

INTRAORAL = "1.2.840.10008.5.1.4.1.1.1.3"  # Digital Intra-Oral X-Ray Image – For Presentation
PANORAMIC = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image – For Presentation
UID_ROOT = "2.25."
FIRST_DATE = dt.date(2015, 1, 1)
DAYS = 10 * 365

FAMILY_NAMES = (
    "HANSEN", "JOHANSEN", "OLSEN", "LARSEN", "ANDERSEN", "PEDERSEN", "NILSEN", "KRISTIANSEN",
    "JENSEN", "KARLSEN", "JOHNSEN", "PETTERSEN", "ERIKSEN", "BERG", "HAUGEN", "HAGEN",
    "JOHANNESSEN", "ANDREASSEN", "JACOBSEN", "DAHL", "JØRGENSEN", "HALVORSEN", "LUND", "SØRENSEN",
    "SÆTHER", "STRØM", "ÅS", "BJØRKLUND", "GRØNLI", "LØKEN", "HANSSEN", "HANSTEEN",
)  # fmt: skip
GIVEN_NAMES = (
    "OLE", "KARI", "ÅSE", "BJØRN", "SIGRID", "HÅKON", "INGRID", "TORBJØRN", "SOLVEIG", "ØYSTEIN",
    "MARTE", "JØRGEN", "ASTRID", "ÆSE", "NILS", "LIV", "PÅL", "GRO", "ØRJAN", "HANS",
)  # fmt: skip


@dataclass(frozen=True)
class CorpusInstance:
    """What the benchmark needs to know about one file to query for it and fetch it."""

    path: Path
    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    sop_uid: str
    study_date: str


@dataclass(frozen=True)
class Corpus:
    instances: list[CorpusInstance]

    @property
    def patient_ids(self) -> list[str]:
        return sorted({i.patient_id for i in self.instances})

    @property
    def study_count(self) -> int:
        return len({i.study_uid for i in self.instances})

    @property
    def total_bytes(self) -> int:
        return sum(i.path.stat().st_size for i in self.instances)


def _uid(rng: random.Random) -> str:
    return UID_ROOT + str(rng.getrandbits(120))


def _dataset(
    inst: CorpusInstance, sop_class: str, sex: str, birth: dt.date, number: int
) -> PydicomDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(inst.sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.9.7433.1.1")
    ds = PydicomDataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = inst.sop_uid
    ds.StudyInstanceUID = inst.study_uid
    ds.SeriesInstanceUID = inst.series_uid
    ds.PatientID = inst.patient_id
    ds.PatientName = inst.patient_name
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = sex
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = inst.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber = inst.study_uid[-8:]
    ds.StudyID = "1"
    ds.StudyDescription = "Tannrøntgen"
    ds.ReferringPhysicianName = ""
    ds.Modality = "IO" if sop_class == INTRAORAL else "PX"
    ds.Manufacturer = "arkiv-bench"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PatientOrientation = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    if sop_class == INTRAORAL:
        ds.ImageLaterality = "R"
    pixels = (np.arange(64 * 64, dtype=np.uint32) * (number + 7) % 251).astype(np.uint8)
    ds.PixelData = pixels.tobytes()
    return ds


def generate(
    root: Path, count: int, seed: int = 5, tick: Callable[[int], None] | None = None
) -> Corpus:
    """Write ``count`` Part 10 files under ``root`` (one directory per patient)."""
    rng = random.Random(seed)
    instances: list[CorpusInstance] = []
    while len(instances) < count:
        patient_id, birth, sex = synthetic_national_id(rng)
        name = f"{rng.choice(FAMILY_NAMES)}^{rng.choice(GIVEN_NAMES)}"
        patient_dir = root / patient_id
        patient_dir.mkdir(parents=True, exist_ok=True)
        for _study in range(rng.randint(1, 4)):
            study_uid = _uid(rng)
            date = (FIRST_DATE + dt.timedelta(days=rng.randrange(DAYS))).strftime("%Y%m%d")
            sop_class = PANORAMIC if rng.random() < 0.15 else INTRAORAL
            series_uid = _uid(rng)
            per_study = 1 if sop_class == PANORAMIC else rng.randint(1, 10)
            for number in range(1, per_study + 1):
                if len(instances) >= count:
                    break
                sop_uid = _uid(rng)
                inst = CorpusInstance(
                    patient_dir / f"{sop_uid}.dcm",
                    patient_id,
                    name,
                    study_uid,
                    series_uid,
                    sop_uid,
                    date,
                )
                _dataset(inst, sop_class, sex, birth, number).save_as(
                    inst.path, enforce_file_format=True
                )
                instances.append(inst)
                if tick is not None:
                    tick(len(instances))
    return Corpus(instances)
