"""What the clinician's viewer needs to open a study, in one answer.

A dentist has a minute between two patients; the viewer must put the first image on screen at
once, so everything it needs before the pixels (the images with their geometry, calibration and
windows, where each one sits on the full-mouth mount, and the same region's prior image) comes
from the index in one request, with no object read. The metadata read is audited as one event
before anything is returned; the pixels are fetched afterwards through WADO-RS, each series'
frames audited again as they are read.

A clinician who opens a study of another county without a grant is told to break the glass,
naming the county, instead of the plain "not found" other readers get.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arkiv.access import AccessService
from arkiv.accounts import Principal, Role
from arkiv.dental_layout import FULL_MOUTH_MOUNT, Placement, place, suggested_layout
from arkiv.errors import BreakGlassRequired, NotFound
from arkiv.json_values import integer, iso_date, number, numbers, text, values
from storage.index import Index
from storage.records import StoredInstance, StudyQuery

DicomJson = dict[str, Any]

_SPACING_TAGS = (
    ("00280030", "PixelSpacing"),
    ("00181164", "ImagerPixelSpacing"),
    ("00182010", "NominalScannedPixelSpacing"),
)
"""In order of preference: Pixel Spacing is calibrated in the patient; Imager Pixel Spacing is
at the detector (magnified by the geometry); a scanned film's nominal spacing last."""

_PRIOR_KINDS = frozenset({"panoramic", "cephalometric", "cbct"})
"""Kinds compared with the prior of the same kind, since they have no slot on the mount."""


@dataclass
class ViewerImage:
    """One image as the viewer uses it (the contract of `GET /api/studies/{uid}/viewer`)."""

    instance: StoredInstance
    placement: Placement
    facts: dict[str, Any]
    study_date: str
    study_time: str

    @property
    def sort_key(self) -> tuple[int, int]:
        return (self.facts["series_number"] or 0, self.facts["instance_number"] or 0)

    def as_json(self, prior_id: str | None = None) -> dict[str, Any]:
        i = self.instance
        base = f"/dicom-web/studies/{i.study_uid}/series/{i.series_uid}/instances/{i.sop_uid}"
        return {
            "id": i.sop_uid,
            "study_uid": i.study_uid,
            "series_uid": i.series_uid,
            "sop_uid": i.sop_uid,
            **self.facts,
            "kind": self.placement.kind,
            "slot": self.placement.slot,
            "teeth": list(self.placement.teeth),
            "laterality": self.placement.laterality,
            "thumbnail_url": f"{base}/thumbnail",
            "frames_url": f"{base}/frames/",
            "prior_id": prior_id,
        }


class StudyViewService:
    def __init__(self, index: Index, access: AccessService) -> None:
        self._index = index
        self._access = access

    def study_document(self, principal: Principal, study_uid: str) -> dict[str, Any]:
        """The viewer's study document; NotFound or BreakGlassRequired when out of reach."""
        try:
            found = self._access.instances_for_read(principal, "viewer metadata", study_uid)
        except NotFound:
            self.offer_break_glass(principal, study_uid)
            raise
        images = sorted((_image(i) for i in found), key=lambda im: im.sort_key)
        patient_id = found[0].patient_id
        study = self._index.find_studies(
            StudyQuery(study_uids=(study_uid,), patient_id=patient_id, limit=1)
        )[0]
        _unique_slots(images)
        priors = self._priors(principal, patient_id, images[0])
        chosen = _choose_priors(images, priors)
        shown_priors = set(chosen.values())
        patient = self._index.photos.patient_by_national_id(patient_id)
        return {
            "study": {
                "study_uid": study.study_uid,
                "date": iso_date(study.study_date),
                "time": _time(study.study_time),
                "description": study.description,
                "accession": study.accession_number,
                "county": study.county,
                "modalities": list(study.modalities),
            },
            "patient": {
                "key": patient.pk if patient else None,
                "name": study.patient_name.replace("^", ", ").strip(", "),
                "birth_date": iso_date(study.birth_date),
                "sex": study.sex,
            },
            "layout": suggested_layout([im.placement for im in images]),
            "slots": [
                {"slot": s.slot, "label_key": s.label_key, "row": s.row, "col": s.col}
                for s in FULL_MOUTH_MOUNT
            ],
            "images": _stacked([im.as_json(chosen.get(im.instance.sop_uid)) for im in images]),
            "priors": [
                {**p.as_json(), "study_date": iso_date(p.study_date)}
                for p in priors
                if p.instance.sop_uid in shown_priors
            ],
        }

    def offer_break_glass(self, principal: Principal, study_uid: str) -> None:
        """Raise BreakGlassRequired when a clinician asked for another county's study."""
        if principal.role is not Role.CLINICIAN:
            return
        owned = self._index.find_studies(StudyQuery(study_uids=(study_uid,), limit=1))
        if owned and owned[0].county != principal.county.value:
            patient = self._index.photos.patient_by_national_id(owned[0].patient_id)
            raise BreakGlassRequired(
                f"this study belongs to {owned[0].county.capitalize()}: take extended access "
                "to the patient (break the glass) with a reason first",
                (owned[0].county,),
                patient.pk if patient else None,
            )

    def _priors(
        self, principal: Principal, patient_id: str, current: ViewerImage
    ) -> list[ViewerImage]:
        """The patient's earlier images in reach, newest first (one audited search)."""
        query = StudyQuery(
            patient_id=patient_id, study_date_to=current.study_date or None, limit=5000
        )
        found = self._access.search_instances(
            principal, query, "ui viewer: the same regions' priors"
        )
        when = (current.study_date, current.study_time)
        earlier = [
            image
            for image in map(_image, found)
            if image.instance.study_uid != current.instance.study_uid
            and (image.study_date, image.study_time) < when
        ]
        return sorted(earlier, key=lambda im: (im.study_date, im.study_time), reverse=True)


def _stacked(images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Single-frame CBCT slices of one series (many scanners send a volume as CT images, one
    per slice) become one image whose frames are the slices, so the dentist scrolls through the
    volume as through a multi-frame object; the first slice stands for the stack. Slices come in
    instance order."""
    slices: dict[str, list[dict[str, Any]]] = {}
    for image in images:
        if image["kind"] == "cbct" and image["frames"] == 1:
            slices.setdefault(image["series_uid"], []).append(image)
    stacked: list[dict[str, Any]] = []
    in_stacks = {id(s) for group in slices.values() if len(group) > 1 for s in group}
    for image in images:
        group = slices.get(image["series_uid"], [])
        if id(image) not in in_stacks:
            stacked.append(image)
        elif image is group[0]:
            stacked.append(
                {
                    **image,
                    "frames": len(group),
                    "slice_urls": [f"{s['frames_url']}1" for s in group],
                    "slice_ids": [s["id"] for s in group],
                }
            )
    return stacked


def _choose_priors(images: Sequence[ViewerImage], priors: Sequence[ViewerImage]) -> dict[str, str]:
    """For each image, the newest earlier image of the same slot (or kind, for panoramic,
    cephalometric and CBCT)."""
    chosen: dict[str, str] = {}
    for image in images:
        p = image.placement
        for prior in priors:  # newest first
            q = prior.placement
            if (p.slot and q.slot == p.slot) or (p.kind in _PRIOR_KINDS and q.kind == p.kind):
                chosen[image.instance.sop_uid] = prior.instance.sop_uid
                break
    return chosen


def _unique_slots(images: Sequence[ViewerImage]) -> None:
    """One image per slot: a retake (the later instance) takes the place of the first try."""
    holder: dict[str, int] = {}
    for n, image in enumerate(images):
        if image.placement.slot:
            holder[image.placement.slot] = n
    for n, image in enumerate(images):
        slot = image.placement.slot
        if slot and holder[slot] != n:
            image.placement = _unslotted(image.placement)


def _unslotted(placement: Placement) -> Placement:
    return Placement(placement.kind, placement.teeth, None, placement.laterality)


def _image(instance: StoredInstance) -> ViewerImage:
    dataset: DicomJson = json.loads(instance.metadata_json or "{}")
    modality = text(dataset, "00080060")
    return ViewerImage(
        instance=instance,
        placement=place(dataset, instance.sop_class_uid, modality),
        facts=_facts(dataset, instance, modality),
        study_date=text(dataset, "00080020"),
        study_time=text(dataset, "00080030"),
    )


def _facts(dataset: DicomJson, instance: StoredInstance, modality: str) -> dict[str, Any]:
    """Geometry, pixel format, rescale, windows and calibration, as the frames will arrive
    (decoded to native little endian: a YBR colour image arrives as RGB)."""
    samples = integer(dataset, "00280002") or 1
    photometric = text(dataset, "00280004") or ("RGB" if samples == 3 else "MONOCHROME2")
    if photometric.startswith("YBR"):
        photometric = "RGB"
    return {
        "series_number": integer(dataset, "00200011"),
        "instance_number": instance.instance_number,
        "modality": modality,
        "rows": instance.rows or integer(dataset, "00280010"),
        "columns": instance.columns or integer(dataset, "00280011"),
        "frames": instance.frames,
        "samples_per_pixel": samples,
        "photometric": photometric,
        "bits_allocated": integer(dataset, "00280100") or 8,
        "bits_stored": integer(dataset, "00280101") or integer(dataset, "00280100") or 8,
        "pixel_representation": integer(dataset, "00280103") or 0,
        "rescale_slope": number(dataset, "00281053", 1.0),
        "rescale_intercept": number(dataset, "00281052", 0.0),
        "windows": _windows(dataset),
        "spacing": _spacing(dataset),
    }


def _windows(dataset: DicomJson) -> list[dict[str, Any]]:
    centers = numbers(dataset, "00281050")
    widths = numbers(dataset, "00281051")
    labels = [str(v) for v in values(dataset, "00281055")]
    return [
        {"center": c, "width": w, "label": labels[n] if n < len(labels) else ""}
        for n, (c, w) in enumerate(zip(centers, widths, strict=False))
        if w >= 1
    ]


def _spacing(dataset: DicomJson) -> dict[str, Any] | None:
    for tag, name in _SPACING_TAGS:
        pair = numbers(dataset, tag)
        if len(pair) == 2 and all(v > 0 for v in pair):
            return {"row_mm": pair[0], "column_mm": pair[1], "source": name}
    return None


def _time(value: str) -> str:
    return f"{value[:2]}:{value[2:4]}" if len(value) >= 4 else value
