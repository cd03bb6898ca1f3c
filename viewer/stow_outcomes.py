"""What STOW-RS answers about each instance (PS3.18 10.5.3), shared by both kinds of request:
DICOM parts, and JSON metadata with bulk data."""

from __future__ import annotations

from dataclasses import dataclass

# Failure Reason (0008,1197) values, PS3.18 Table 10.5.3-2 and PS3.4 Annex C.
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122
DUPLICATE_SOP_INSTANCE = 0x0111


@dataclass(frozen=True)
class Outcome:
    sop_class_uid: str
    sop_uid: str
    study_uid: str
    failure: int | None = None
    reason: str = ""
