"""What a DICOM dataset (as DICOM JSON, PS3.18 F.2) says about a photo: patient, capture time,
teeth, category and note. Used for photos that arrive as DICOM or as WIC JSON metadata, so both
are read the same way."""

from __future__ import annotations

from typing import Any

from arkiv.dental_layout import teeth_of
from arkiv.json_values import text, values
from arkiv.photo_dicom import CATEGORY_LABELS

DicomJson = dict[str, Any]

__all__ = ["category", "note", "taken_at", "teeth", "text", "values"]

_EXTRAORAL_REGIONS = {"774007", "69536005", "89545001", "T-D1000", "T-D1200"}
"""Head and neck, head, face (SNOMED CT, and the old SRT codes): extra-oral views."""


def _codes(dataset: DicomJson, tag: str) -> list[tuple[str, str]]:
    return [
        (text(item, "00080102"), text(item, "00080100"))
        for item in values(dataset, tag)
        if isinstance(item, dict)
    ]


def teeth(dataset: DicomJson) -> list[int]:
    """FDI numbers from Primary Anatomic Structure Sequence (codes of CID 4018/4019)."""
    return list(teeth_of(dataset))


def category(dataset: DicomJson) -> str:
    """The archive's own label at the start of Image Comments, else the anatomic region: the
    head and face mean an extra-oral photo, anything else an intra-oral one."""
    comment = text(dataset, "00204000")
    for value, label in CATEGORY_LABELS.items():
        if comment.startswith(label):
            return value
    regions = {value for _scheme, value in _codes(dataset, "00082218")}
    return "extraoral" if regions & _EXTRAORAL_REGIONS else "intraoral"


def note(dataset: DicomJson) -> str:
    """Image Comments without the category label the archive's own wrappers put first."""
    comment = text(dataset, "00204000")
    for label in CATEGORY_LABELS.values():
        if comment.startswith(label):
            return comment[len(label) :].lstrip(":").strip()
    return comment


def taken_at(dataset: DicomJson) -> str:
    """Acquisition DateTime, else Content Date and Time, else Study Date, as ISO 8601."""
    moment = text(dataset, "0008002A")
    if moment:
        day, time = moment[:8], moment[8:14]
    else:
        day = text(dataset, "00080023") or text(dataset, "00080022") or text(dataset, "00080020")
        time = (text(dataset, "00080033") or text(dataset, "00080032"))[:6]
    if len(day) != 8 or not day.isdigit():
        return ""
    time = (time + "000000")[:6] if time.isdigit() else "000000"
    return f"{day[:4]}-{day[4:6]}-{day[6:]}T{time[:2]}:{time[2:4]}:{time[4:]}"
