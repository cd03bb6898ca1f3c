"""A patient's whole history at a glance, and the patients a clinician opened lately.

The patient page is where a dentist lands from the search: every study and every photo by date,
newest first, with thumbnails, the kinds of image and the teeth each shows, and the county that
owns each study. Filters by modality and by tooth narrow it on the server; a tooth filter keeps
the panoramic and CBCT images too, since they show every tooth.

Reads go through the access path: the studies' images as one audited instance search, the photos
as the gallery's audited query. Photo wrappers (the VL Photographic objects the archive made for
DICOM viewers) are shown as the photos they wrap, not a second time as studies.

"Recent patients" are read from the audit log itself, the record of what this user opened, so no
second list has to be kept in step with it; showing the list is audited as a query too.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta

from arkiv.access import AccessService
from arkiv.accounts import Principal
from arkiv.audit import AuditLog, Event, EventType
from arkiv.authorization import require_image_read
from arkiv.break_glass import BreakGlassService
from arkiv.clock import iso_in
from arkiv.dental_layout import Placement, place
from arkiv.errors import NotFound
from arkiv.json_values import iso_date, text
from arkiv.photo_access import PhotoAccess
from storage.index import Index
from storage.records import AuditQuery, PatientRecord, PhotoRecord, StoredInstance, StudyQuery

_SHOWS_EVERY_TOOTH = frozenset({"panoramic", "cbct", "cephalometric"})
_RECENT_DAYS = 30
_ACCESSED = EventType.INSTANCES_ACCESSED.code


@dataclass(frozen=True)
class TimelineImage:
    instance: StoredInstance
    placement: Placement


@dataclass
class TimelineStudy:
    """One study as the timeline shows it: its images in series and instance order."""

    study_uid: str
    date: str
    time: str
    description: str
    accession: str
    county: str
    modalities: list[str] = field(default_factory=list)
    images: list[TimelineImage] = field(default_factory=list)

    @property
    def teeth(self) -> list[int]:
        return sorted({t for image in self.images for t in image.placement.teeth})

    @property
    def kinds(self) -> list[str]:
        return sorted({image.placement.kind for image in self.images})


@dataclass(frozen=True)
class TimelineDay:
    date: str
    """YYYY-MM-DD"""
    studies: list[TimelineStudy]
    photos: list[PhotoRecord]


@dataclass(frozen=True)
class PatientTimeline:
    patient: PatientRecord
    days: list[TimelineDay]
    modalities: list[str]
    """Every modality the patient has in reach (for the filter), before filtering."""
    counties: list[str]


class PatientViewService:
    def __init__(
        self,
        index: Index,
        audit: AuditLog,
        access: AccessService,
        photos: PhotoAccess,
        break_glass: BreakGlassService,
    ) -> None:
        self._index = index
        self._audit = audit
        self._access = access
        self._photos = photos
        self._break_glass = break_glass

    def timeline(
        self,
        principal: Principal,
        patient_key: int,
        modality: str | None = None,
        tooth: int | None = None,
    ) -> PatientTimeline:
        """The patient's studies and photos by day, newest first; BreakGlassRequired when the
        patient is another county's and the clinician holds no grant."""
        require_image_read(principal)
        patient = self._index.photos.patient(patient_key)
        if patient is None:
            raise NotFound("no such patient")
        self._photos.patient_in_reach(principal, patient)
        found = self._access.search_instances(
            principal,
            StudyQuery(patient_id=patient.patient_id, limit=20_000),
            f"ui patient page modality={modality or '*'} tooth={tooth or '*'}",
        )
        studies = _studies(found)
        modalities = sorted({m for s in studies for m in s.modalities})
        photos: list[PhotoRecord] = []
        if modality in (None, "", "XC"):
            _patient, photos = self._photos.gallery(principal, patient_key, None, tooth)
        studies = _filtered(studies, modality, tooth)
        counties = sorted({s.county for s in studies} | {p.county for p in photos})
        return PatientTimeline(patient, _by_day(studies, photos), modalities, counties)

    def recent(self, principal: Principal, most: int = 8) -> list[PatientRecord]:
        """The patients whose images this user opened in the last 30 days, latest first, that
        are still in reach."""
        since = iso_in(-timedelta(days=_RECENT_DAYS))
        events = self._index.find_audit_events(
            AuditQuery(actor=principal.username, event_id=_ACCESSED, since=since, limit=500)
        )
        granted = set(self._break_glass.granted_patient_ids(principal))
        patients: OrderedDict[str, PatientRecord] = OrderedDict()
        seen: set[str] = set()
        for event in events:
            if event.actor_kind != "user" or event.outcome != 0:
                continue
            for patient_id in event.patient_ids:
                if patient_id in seen or len(patients) >= most:
                    continue
                seen.add(patient_id)
                patient = self._index.photos.patient_by_national_id(patient_id)
                if patient is None:
                    continue
                counties = self._index.photos.patient_counties(patient.pk)
                if principal.county.value in counties or patient_id in granted:
                    patients[patient_id] = patient
        if patients:
            self._audit.record(
                Event(
                    EventType.QUERY,
                    "E",
                    principal.actor(),
                    patient_ids=tuple(patients),
                    object_count=len(patients),
                    query="ui recent patients",
                    counties=(principal.county.value,),
                    details={"level": "patients"},
                )
            )
        return list(patients.values())


def _studies(found: list[StoredInstance]) -> list[TimelineStudy]:
    """Group instances into studies (photo wrappers left out: the photos show them)."""
    studies: dict[str, TimelineStudy] = {}
    for instance in found:
        dataset = json.loads(instance.metadata_json or "{}")
        modality = text(dataset, "00080060")
        placement = place(dataset, instance.sop_class_uid, modality)
        if placement.kind == "photo":
            continue
        study = studies.get(instance.study_uid)
        if study is None:
            study = studies[instance.study_uid] = TimelineStudy(
                study_uid=instance.study_uid,
                date=iso_date(text(dataset, "00080020")),
                time=text(dataset, "00080030")[:4],
                description=text(dataset, "00081030"),
                accession=text(dataset, "00080050"),
                county=instance.county,
            )
        if modality and modality not in study.modalities:
            study.modalities.append(modality)
        study.images.append(TimelineImage(instance, placement))
    for study in studies.values():
        study.images.sort(key=lambda i: (i.instance.series_uid, i.instance.instance_number or 0))
    return list(studies.values())


def _filtered(
    studies: list[TimelineStudy], modality: str | None, tooth: int | None
) -> list[TimelineStudy]:
    kept = []
    for study in studies:
        if modality and modality not in study.modalities:
            continue
        if tooth is not None:
            study.images = [
                i
                for i in study.images
                if tooth in i.placement.teeth or i.placement.kind in _SHOWS_EVERY_TOOTH
            ]
            if not study.images:
                continue
        kept.append(study)
    return kept


def _by_day(studies: list[TimelineStudy], photos: list[PhotoRecord]) -> list[TimelineDay]:
    dates = sorted(
        {s.date for s in studies} | {p.facts.taken_at[:10] for p in photos}, reverse=True
    )
    return [
        TimelineDay(
            date=day,
            studies=sorted((s for s in studies if s.date == day), key=lambda s: s.time),
            photos=sorted(
                (p for p in photos if p.facts.taken_at[:10] == day), key=lambda p: p.facts.taken_at
            ),
        )
        for day in dates
    ]
