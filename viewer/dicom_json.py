"""DICOM JSON (PS3.18 F.2) for QIDO-RS answers, built from the index's summaries."""

from __future__ import annotations

from typing import Any

from storage.records import SeriesSummary, StoredInstance, StudySummary

JsonObject = dict[str, Any]


def _attr(vr: str, *values: Any) -> JsonObject:
    kept = [v for v in values if v not in (None, "")]
    if not kept:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": str(v)} for v in kept]}
    return {"vr": vr, "Value": kept}


def study_json(study: StudySummary, base_url: str) -> JsonObject:
    return {
        "00080005": _attr("CS", "ISO_IR 192"),
        "00080020": _attr("DA", study.study_date),
        "00080030": _attr("TM", study.study_time),
        "00080050": _attr("SH", study.accession_number),
        "00080061": _attr("CS", *study.modalities),
        "00080090": _attr("PN", study.referring_physician),
        "00081030": _attr("LO", study.description),
        "00081190": _attr("UR", f"{base_url}/studies/{study.study_uid}"),
        "00100010": _attr("PN", study.patient_name),
        "00100020": _attr("LO", study.patient_id),
        "00100030": _attr("DA", study.birth_date),
        "00100040": _attr("CS", study.sex),
        "0020000D": _attr("UI", study.study_uid),
        "00200010": _attr("SH", study.study_id),
        "00201206": _attr("IS", study.series_count),
        "00201208": _attr("IS", study.instance_count),
    }


def series_json(series: SeriesSummary, base_url: str) -> JsonObject:
    return {
        "00080005": _attr("CS", "ISO_IR 192"),
        "00080060": _attr("CS", series.modality),
        "0008103E": _attr("LO", series.description),
        "00081190": _attr(
            "UR", f"{base_url}/studies/{series.study_uid}/series/{series.series_uid}"
        ),
        "00180015": _attr("CS", series.body_part),
        "0020000D": _attr("UI", series.study_uid),
        "0020000E": _attr("UI", series.series_uid),
        "00200011": _attr("IS", series.series_number),
        "00201209": _attr("IS", series.instance_count),
    }


def instance_json(instance: StoredInstance, base_url: str) -> JsonObject:
    url = (
        f"{base_url}/studies/{instance.study_uid}/series/{instance.series_uid}"
        f"/instances/{instance.sop_uid}"
    )
    result: JsonObject = {
        "00080005": _attr("CS", "ISO_IR 192"),
        "00080016": _attr("UI", instance.sop_class_uid),
        "00080018": _attr("UI", instance.sop_uid),
        "00081190": _attr("UR", url),
        "00083002": _attr("UI", instance.transfer_syntax_uid),
        "0020000D": _attr("UI", instance.study_uid),
        "0020000E": _attr("UI", instance.series_uid),
        "00200013": _attr("IS", instance.instance_number),
        "00280008": _attr("IS", instance.frames if instance.frames else None),
        "00280010": _attr("US", instance.rows),
        "00280011": _attr("US", instance.columns),
    }
    return result


def metadata_json(instance: StoredInstance, base_url: str, stored: JsonObject) -> JsonObject:
    """Stored metadata with bulk data references made absolute for this server."""
    url = (
        f"{base_url}/studies/{instance.study_uid}/series/{instance.series_uid}"
        f"/instances/{instance.sop_uid}"
    )
    for value in stored.values():
        uri = value.get("BulkDataURI") if isinstance(value, dict) else None
        if isinstance(uri, str) and not uri.startswith("http"):
            value["BulkDataURI"] = f"{url}/{uri}"
    return stored


_BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def include_stored(
    item: JsonObject, stored: JsonObject, fields: tuple[str, ...], include_all: bool
) -> JsonObject:
    """An instance answer widened by QIDO-RS `includefield`: the named attributes (tags as in
    DICOM JSON), or with `all` every stored one, from the instance's stored metadata. Bulk data
    is left out: a search answer is no place for pixel data."""
    wanted = set(fields)
    for tag, attribute in stored.items():
        if tag in item or not (include_all or tag in wanted):
            continue
        if not isinstance(attribute, dict) or attribute.get("vr") in _BULK_VRS:
            continue
        if "BulkDataURI" in attribute or "InlineBinary" in attribute:
            continue
        item[tag] = attribute
    return item
