"""Reading a received DICOM object: validate what ingest relies on and extract what the index holds.

Validation comes before anything is stored (DESIGN: the ingest path, step 1). The checks are the
ones whose failure would corrupt the archive or make the object unfindable: a whole encoding,
UIDs in UID syntax (they become blob keys), a Patient ID, a known storage SOP class, and Pixel Data
as long as the image attributes declare.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pynetdicom import AllStoragePresentationContexts

from arkiv.dicom_structure import check_part10
from arkiv.errors import InvalidObject, UnsupportedObject
from arkiv.identity import check_national_id
from arkiv.patient_identity import identify, other_patient_ids
from storage.records import (
    InstanceAttributes,
    PatientAttributes,
    SeriesAttributes,
    StudyAttributes,
)

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_BULK_THRESHOLD = 1024

STORAGE_SOP_CLASSES: frozenset[str] = frozenset(
    str(context.abstract_syntax) for context in AllStoragePresentationContexts
)
"""Every storage SOP class of the standard that pynetdicom knows (dental ones included)."""


def is_valid_uid(value: str) -> bool:
    """UID syntax of PS3.5 9.1: digits and dots, no leading zeros, at most 64 characters."""
    return 0 < len(value) <= 64 and _UID.match(value) is not None


@dataclass(frozen=True)
class ParsedObject:
    """A validated object and the index attributes drawn from it."""

    dataset: Dataset
    transfer_syntax_uid: str
    patient: PatientAttributes
    study: StudyAttributes
    series: SeriesAttributes
    instance: InstanceAttributes


VIDEO_TRANSFER_SYNTAXES = frozenset(
    f"1.2.840.10008.1.2.4.{n}" for n in (100, 101, 102, 103, 104, 105, 106, 107, 108)
)
"""MPEG-2, MPEG-4 AVC/H.264 and HEVC/H.265 (PS3.5 8.2.5–8.2.8): video streams, not frames."""


def parse_part10(
    data: bytes, max_pixels: int, allow_missing_patient_id: bool = False
) -> ParsedObject:
    """Parse and validate a Part 10 object; raise InvalidObject or UnsupportedObject otherwise.

    An object without Patient ID is refused unless a valid national ID among its Other Patient
    IDs names the patient, or `allow_missing_patient_id` (an old archive being imported, whose
    objects must not be lost): then it is filed under a placeholder record of its study, which
    the reconciliation lists for an administrator (`arkiv.patient_identity`)."""
    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, OSError, struct.error) as exc:
        raise InvalidObject(f"cannot parse the DICOM object: {exc}") from exc
    ts = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
    if not is_valid_uid(ts):
        raise InvalidObject("file meta information has no valid Transfer Syntax UID")
    structure = check_part10(data, ts)
    try:
        _require_identity(ds, allow_missing_patient_id)
        rows, columns, frames = _check_image(
            ds, structure.pixel_data, max_pixels, video=ts in VIDEO_TRANSFER_SYNTAXES
        )
        patient = _patient(ds)
        study = _study(ds)
        series = _series(ds)
        metadata = json.dumps(_metadata(ds), separators=(",", ":"), ensure_ascii=False)
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeError) as exc:
        raise InvalidObject(f"an attribute cannot be read: {exc}") from exc
    instance = InstanceAttributes(
        sop_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        instance_number=_int_or_none(ds.get("InstanceNumber")),
        transfer_syntax_uid=ts,
        rows=rows,
        columns=columns,
        frames=frames,
        metadata_json=metadata,
    )
    return ParsedObject(ds, ts, patient, study, series, instance)


def _require_identity(ds: Dataset, allow_missing_patient_id: bool = False) -> None:
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip()
        if not value:
            raise InvalidObject(f"{keyword} is missing; the object cannot be filed")
        if not is_valid_uid(value):
            raise InvalidObject(f"{keyword} {value[:80]!r} is not a valid DICOM UID")
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    if not sop_class:
        raise InvalidObject("SOPClassUID is missing")
    if sop_class not in STORAGE_SOP_CLASSES:
        raise UnsupportedObject(
            f"SOP class {sop_class} is not a storage SOP class the archive takes"
        )
    media_sop = str(getattr(ds.file_meta, "MediaStorageSOPInstanceUID", "") or "")
    if media_sop and media_sop != str(ds.SOPInstanceUID):
        raise InvalidObject("SOPInstanceUID differs from the SOP Instance the sender announced")
    media_class = str(getattr(ds.file_meta, "MediaStorageSOPClassUID", "") or "")
    if media_class and media_class != sop_class:
        raise InvalidObject(f"SOPClassUID {sop_class} differs from the announced {media_class}")
    if (
        not str(ds.get("PatientID", "") or "").strip()
        and not allow_missing_patient_id
        and not any(check_national_id(o.value).valid for o in other_patient_ids(ds))
    ):
        raise InvalidObject("PatientID is missing; an image without a patient cannot be filed")


def _check_image(
    ds: Dataset, pixel: Any, max_pixels: int, video: bool = False
) -> tuple[int | None, int | None, int]:
    """Rows, Columns and frames, checked against the pixel limit. A video stream is exempt from
    the limit on all frames together: it is never decoded whole, and a minute of 1080p video
    declares billions of samples; one frame must still fit."""
    rows = _int_or_none(ds.get("Rows"))
    columns = _int_or_none(ds.get("Columns"))
    frames = _int_or_none(ds.get("NumberOfFrames")) or 1
    if pixel is None:
        return rows, columns, frames if rows else 0
    if not rows or not columns:
        raise InvalidObject("Pixel Data is present but Rows or Columns is missing or zero")
    samples = _int_or_none(ds.get("SamplesPerPixel")) or 1
    bits = _int_or_none(ds.get("BitsAllocated"))
    if bits is None or bits not in (1, 8, 16, 32, 64):
        raise InvalidObject(f"Bits Allocated {bits} is not a valid value")
    declared = rows * columns * samples * frames
    if (rows * columns * samples if video else declared) > max_pixels:
        raise InvalidObject(
            f"image declares {rows}×{columns}×{samples}×{frames} samples, more than the limit "
            f"of {max_pixels}"
        )
    if pixel.length is not None and pixel.offset >= 0:
        expected = (declared + 7) // 8 if bits == 1 else declared * bits // 8
        if pixel.length < expected:
            raise InvalidObject(
                f"Pixel Data holds {pixel.length} bytes but Rows {rows} × Columns {columns} × "
                f"Samples {samples} × Frames {frames} × {bits} bits declare {expected}"
            )
    return rows, columns, frames


def _text(ds: Dataset, keyword: str, limit: int = 64) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    return str(value).strip()[:limit]


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _patient(ds: Dataset) -> PatientAttributes:
    return identify(
        ds,
        patient_id=_text(ds, "PatientID"),
        issuer=_text(ds, "IssuerOfPatientID"),
        name=_text(ds, "PatientName", 324),
        birth_date=_text(ds, "PatientBirthDate", 8),
        sex=_text(ds, "PatientSex", 16),
    )


def _study(ds: Dataset) -> StudyAttributes:
    return StudyAttributes(
        study_uid=str(ds.StudyInstanceUID),
        study_date=_text(ds, "StudyDate", 8),
        study_time=_text(ds, "StudyTime", 16),
        accession_number=_text(ds, "AccessionNumber", 16),
        description=_text(ds, "StudyDescription"),
        referring_physician=_text(ds, "ReferringPhysicianName", 324),
        study_id=_text(ds, "StudyID", 16),
    )


def _series(ds: Dataset) -> SeriesAttributes:
    return SeriesAttributes(
        series_uid=str(ds.SeriesInstanceUID),
        modality=_text(ds, "Modality", 16),
        series_number=_int_or_none(ds.get("SeriesNumber")),
        description=_text(ds, "SeriesDescription"),
        body_part=_text(ds, "BodyPartExamined", 16),
    )


def _metadata(ds: Dataset) -> dict[str, Any]:
    """DICOM JSON of the dataset without bulk data (PS3.18 F.2), as WADO-RS metadata serves it.

    The dataset was read up to Pixel Data, so pixels are not in it. Other large binary values
    are left out here; their place is marked so that a bulk data route can serve them by
    reference.
    """
    result: dict[str, Any] = ds.to_json_dict(
        bulk_data_threshold=_BULK_THRESHOLD, bulk_data_element_handler=_bulk_marker
    )
    return result


def _bulk_marker(element: Any) -> str:
    return f"bulkdata/{element.tag:08X}"
