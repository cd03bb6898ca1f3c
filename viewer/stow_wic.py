"""STOW-RS with JSON metadata and JPEG or video bulk data: the IHE Web-based Image Capture way.

A phone app or camera sends `multipart/related; type="application/dicom+json"`: first a JSON
array of datasets (PS3.18 F.2), whose Pixel Data is a `BulkDataURI` naming a later part by its
Content-Location, then those parts as `image/jpeg` (or another photo or video type). The archive
makes the DICOM object itself: each dataset becomes a photo upload (`PhotoService.upload`), with
the patient from Patient ID, the capture time from Acquisition DateTime or Content Date/Time,
the teeth from Primary Anatomic Structure Sequence, the note from Image Comments, and the
category from Anatomic Region Sequence (the head and face regions mean an extra-oral photo).
The UIDs in the JSON are not used: the answer names the instances as the archive stored them.
"""

from __future__ import annotations

import json
from typing import Any

from arkiv import photo_attributes as attributes
from arkiv.accounts import Principal
from arkiv.errors import ArchiveUnavailable, ArkivError, UnsupportedObject
from arkiv.photos import PhotoForm, UploadedFile
from arkiv.services import Archive
from viewer.multipart import Part
from viewer.stow_outcomes import (
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    SOP_CLASS_NOT_SUPPORTED,
    Outcome,
)

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"


def store_json_and_bulk(archive: Archive, principal: Principal, parts: list[Part]) -> list[Outcome]:
    """One outcome per dataset of the JSON part."""
    try:
        datasets = json.loads(parts[0].body)
    except (ValueError, UnicodeDecodeError) as exc:
        return [Outcome("", "", "", CANNOT_UNDERSTAND, f"the JSON is invalid: {exc}")]
    if not isinstance(datasets, list) or not datasets:
        return [Outcome("", "", "", CANNOT_UNDERSTAND, "the JSON is not a dataset array")]
    bulk = {p.content_location: p for p in parts[1:] if p.content_location}
    return [_store(archive, principal, ds, bulk) for ds in datasets]


def _store(
    archive: Archive,
    principal: Principal,
    dataset: Any,
    bulk: dict[str, Part],
) -> Outcome:
    if not isinstance(dataset, dict):
        return Outcome("", "", "", CANNOT_UNDERSTAND, "a dataset is not a JSON object")
    sop_class = attributes.text(dataset, "00080016")
    pixel = dataset.get("7FE00010") or {}
    uri = pixel.get("BulkDataURI", "") if isinstance(pixel, dict) else ""
    part = bulk.get(uri)
    if part is None:
        return Outcome(
            sop_class, "", "", CANNOT_UNDERSTAND, f"no part with Content-Location {uri!r}"
        )
    form = PhotoForm(
        patient_id=attributes.text(dataset, "00100020"),
        category=attributes.category(dataset),
        teeth=" ".join(str(t) for t in attributes.teeth(dataset)),
        note=attributes.note(dataset),
        taken_at=attributes.taken_at(dataset),
    )
    try:
        stored = archive.photos.upload(
            principal, [UploadedFile(part.body, part.content_type, "")], form
        )
    except UnsupportedObject as exc:
        return Outcome(sop_class, "", "", SOP_CLASS_NOT_SUPPORTED, str(exc))
    except ArchiveUnavailable as exc:
        return Outcome(sop_class, "", "", OUT_OF_RESOURCES, str(exc))
    except ArkivError as exc:
        return Outcome(sop_class, "", "", CANNOT_UNDERSTAND, str(exc))
    facts = stored[0].record.facts
    if facts.sop_uid is None:
        return Outcome(
            sop_class, "", facts.study_uid, SOP_CLASS_NOT_SUPPORTED, "kept as a photo, not as DICOM"
        )
    kind = VIDEO_PHOTOGRAPHIC if facts.kind == "video" else VL_PHOTOGRAPHIC
    return Outcome(kind, facts.sop_uid, facts.study_uid)
