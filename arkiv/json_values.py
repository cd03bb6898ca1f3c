"""Values read out of DICOM JSON (PS3.18 F.2), the form in which the index keeps each instance's
attributes: so that services can use what was indexed at ingest without reading the object."""

from __future__ import annotations

import math
from typing import Any

DicomJson = dict[str, Any]


def values(dataset: DicomJson, tag: str) -> list[Any]:
    """The Value array of `tag` (eight hex digits), or [] when absent or empty."""
    element = dataset.get(tag)
    found = element.get("Value", []) if isinstance(element, dict) else []
    return found if isinstance(found, list) else []


def text(dataset: DicomJson, tag: str) -> str:
    """The first value as text; a person name gives its alphabetic group."""
    found = values(dataset, tag)
    if not found:
        return ""
    value = found[0]
    if isinstance(value, dict):
        value = value.get("Alphabetic", "")
    return str(value).strip()


def numbers(dataset: DicomJson, tag: str) -> list[float]:
    """The finite numeric values (DS, IS and binary numbers alike); others are skipped."""
    found = []
    for value in values(dataset, tag):
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            found.append(number)
    return found


def integer(dataset: DicomJson, tag: str) -> int | None:
    found = numbers(dataset, tag)
    return int(found[0]) if found else None


def number(dataset: DicomJson, tag: str, default: float) -> float:
    found = numbers(dataset, tag)
    return found[0] if found else default


def items(dataset: DicomJson, tag: str) -> list[DicomJson]:
    """The items of a sequence."""
    return [item for item in values(dataset, tag) if isinstance(item, dict)]


def iso_date(value: str) -> str:
    """A DICOM date (DA, YYYYMMDD) as ISO 8601 (YYYY-MM-DD); anything else as it is."""
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) >= 8 else value
