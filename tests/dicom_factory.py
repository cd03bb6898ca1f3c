"""Synthetic dental DICOM objects for tests: intra-oral, panoramic, photos, with chosen identity."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import date
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from arkiv.identity import make_synthetic_national_id

INTRAORAL = "1.2.840.10008.5.1.4.1.1.1.3"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"


def synthetic_national_id(birth: date, individual: int) -> str:
    """A synthetic national ID (month + 80): the first issuable individual number from here."""
    for candidate in range(individual, individual + 100):
        with contextlib.suppress(ValueError):
            return make_synthetic_national_id(birth, candidate)
    raise AssertionError(f"no issuable synthetic number near {individual} for {birth}")


@dataclass
class Spec:
    patient_id: str = "01017012345"
    patient_name: str = "Nordmann^Kari"
    birth_date: str = "19700101"
    study_uid: str = field(default_factory=generate_uid)
    series_uid: str = field(default_factory=generate_uid)
    sop_uid: str = field(default_factory=generate_uid)
    study_date: str = "20250314"
    accession: str = "ACC0001"
    modality: str = "IO"
    sop_class: str = INTRAORAL
    rows: int = 64
    columns: int = 48
    seed: int = 1
    charset: str = "ISO_IR 192"


def make_dataset(spec: Spec) -> Dataset:
    """A small, valid 16-bit grey image with the given identity (a gradient plus noise)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(spec.sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(spec.sop_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = spec.charset
    ds.SOPClassUID = spec.sop_class
    ds.SOPInstanceUID = spec.sop_uid
    ds.StudyInstanceUID = spec.study_uid
    ds.SeriesInstanceUID = spec.series_uid
    ds.PatientID = spec.patient_id
    ds.PatientName = spec.patient_name
    ds.PatientBirthDate = spec.birth_date
    ds.PatientSex = "F"
    ds.StudyDate = spec.study_date
    ds.StudyTime = "101500"
    ds.AccessionNumber = spec.accession
    ds.StudyDescription = "Bitewing"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = spec.modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    rng = np.random.default_rng(spec.seed)
    gradient = np.linspace(0, 3000, spec.columns, dtype=np.float64)[None, :]
    pixels = (gradient + rng.integers(0, 1000, (spec.rows, spec.columns))).astype(np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write(ds: Dataset, path: Path) -> Path:
    path.write_bytes(encode(ds))
    return path


def dataset_bytes(part10: bytes) -> bytes:
    """The dataset part of a Part 10 object (after preamble and meta group), as sent on the wire."""
    from pydicom import dcmread

    meta = dcmread(BytesIO(part10), specific_tags=[]).file_meta
    length = int(meta.FileMetaInformationGroupLength)
    return part10[132 + 12 + length :]
