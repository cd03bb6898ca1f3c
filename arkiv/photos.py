"""Clinical photos and video: the upload pipeline and the reads a gallery needs.

An upload is checked whole before anything is stored: the type from the content
(`arkiv.photo_formats`), the size, the patient (known in the uploader's county, or reached with
break the glass), the category and the FDI tooth numbers. A photo is then decoded in a sandboxed
worker (`arkiv.sandbox`), which proves it intact, reads its capture time and orientation,
removes its location and other identifying metadata, and makes a thumbnail and a web-size
rendition; a video goes through ffprobe and ffmpeg (`arkiv.video`) the same way. Each photo is
also wrapped as a DICOM VL Photographic Image (video: Video Photographic) in the patient's
record (`arkiv.photo_dicom`), so that DICOM and DICOMweb clients see photos beside X-rays. Then
the ingest path (`arkiv.ingest.IngestService.ingest_photo`) makes it durable, indexed and audited.

Photos taken the same day for one patient in one county form one DICOM study ("Kliniske
foto"), with one series for photos and one for video; their UIDs are derived from those keys, so
the same day's uploads from different devices land in the same study.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from arkiv import photo_attributes as attributes
from arkiv import video
from arkiv.accounts import Principal
from arkiv.audit import Actor
from arkiv.authorization import require_store
from arkiv.config import Settings
from arkiv.dicom_object import ParsedObject
from arkiv.errors import InvalidObject
from arkiv.ingest import IngestOutcome, IngestService, PhotoIngest
from arkiv.photo_access import PhotoAccess
from arkiv.photo_dicom import (
    CATEGORY_LABELS,
    VL_PHOTOGRAPHIC_IMAGE,
    NotWrappable,
    PhotoContext,
    PhotoPatient,
    wrap_jpeg,
    wrap_video,
)
from arkiv.photo_formats import MediaFormat, check_claim, sniff
from arkiv.photo_from_dicom import picture_of
from arkiv.sandbox import PhotoDecoder
from arkiv.teeth import parse_teeth
from storage.index import Index
from storage.records import PatientRecord, PhotoFacts, PhotoRecord

CATEGORIES = CATEGORY_LABELS
"""Photo categories and their Bokmål labels (the wrapper writes the label into the object)."""

_UID_NAMESPACE = uuid.UUID("5b0f3c52-8f4e-4c53-9a55-6172b6976a11")


class MediaTooLarge(InvalidObject):
    """The file is larger than the archive takes for its kind."""


class UnknownPatient(InvalidObject):
    """No patient with this national ID is known to the archive."""


@dataclass(frozen=True)
class UploadedFile:
    data: bytes
    declared_type: str
    filename: str


@dataclass(frozen=True)
class PhotoForm:
    """What the uploader says about the files: the same for every file of one upload."""

    patient_id: str
    category: str
    teeth: str = ""
    note: str = ""
    taken_at: str = ""
    """"YYYY-MM-DDTHH:MM[:SS]", used only when a file carries no capture time of its own."""
    origin: str = ""
    """Where an imported photo was found (`manifest:…`): its source in the index and the audit
    event, as for imported DICOM objects. Empty for an upload, whose uploader is the source."""


@dataclass(frozen=True)
class PhotoUpload:
    record: PhotoRecord
    duplicate: bool


@dataclass(frozen=True)
class _Prepared:
    fmt: MediaFormat
    filename: str
    facts: dict[str, Any]
    parts: dict[str, bytes]
    probe: video.VideoProbe | None = None


def derived_uid(*key: str) -> str:
    """A DICOM UID (2.25 form) derived from `key`, the same every time."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '|'.join(key)).int}"


class PhotoService:
    def __init__(
        self, settings: Settings, index: Index, ingest: IngestService, access: PhotoAccess
    ) -> None:
        self._settings = settings
        self._index = index
        self._ingest = ingest
        self.access = access
        self._decoder = PhotoDecoder(
            settings.photo_workers, settings.photo_decode_seconds, settings.photo_worker_memory_mb
        )

    def close(self) -> None:
        self._decoder.close()

    # -- reads -----------------------------------------------------------------------------------

    def gallery(
        self,
        principal: Principal,
        patient_pk: int,
        category: str | None = None,
        tooth: int | None = None,
    ) -> tuple[PatientRecord, list[PhotoRecord]]:
        if category is not None:
            _check_category(category)
        return self.access.gallery(principal, patient_pk, category, tooth)

    def photo_for_read(self, principal: Principal, photo_id: str, purpose: str) -> PhotoRecord:
        return self.access.photo_for_read(principal, photo_id, purpose)

    def patient_key(self, patient_id: str) -> int | None:
        """The opaque key pages use for a patient instead of the national ID."""
        patient = self._index.photos.patient_by_national_id(patient_id)
        return None if patient is None else patient.pk

    # -- upload ----------------------------------------------------------------------------------

    def upload(
        self, principal: Principal, files: list[UploadedFile], form: PhotoForm
    ) -> list[PhotoUpload]:
        """Check every file, then store each; nothing is stored when any file is refused."""
        require_store(principal)
        if not files:
            raise InvalidObject("no file in the upload")
        _check_category(form.category)
        teeth = parse_teeth(form.teeth)
        stated_time = _form_time(form.taken_at)
        patient = self._index.photos.patient_by_national_id(form.patient_id.strip())
        if patient is None:
            raise UnknownPatient(
                "no patient with this national ID is known to the archive; check the number, "
                "or send the patient's first X-ray or register them first"
            )
        self.access.patient_in_reach(principal, patient)
        prepared = [self._prepare(f) for f in files]
        return [
            self._store(principal, patient, item, teeth, form, stated_time) for item in prepared
        ]

    def _prepare(self, upload: UploadedFile) -> _Prepared:
        fmt = sniff(upload.data)
        check_claim(fmt, upload.declared_type, upload.filename)
        limit = (
            self._settings.photo_max_bytes
            if fmt.kind == "photo"
            else self._settings.video_max_bytes
        )
        if len(upload.data) > limit:
            raise MediaTooLarge(
                f"{upload.filename or 'the file'} is {len(upload.data) / 1e6:.1f} MB; the "
                f"archive takes {fmt.kind}s up to {limit / 1e6:.0f} MB"
            )
        name = upload.filename[-255:]
        if fmt.kind == "photo":
            facts, parts = self._decoder.inspect(
                upload.data, fmt.pillow_format, self._settings.photo_max_pixels
            )
            return _Prepared(fmt, name, facts, parts)
        memory, seconds = self._settings.photo_worker_memory_mb, self._settings.photo_decode_seconds
        probe = video.probe(
            upload.data,
            timeout=seconds,
            max_memory_mb=memory,
            max_seconds=float(self._settings.video_max_seconds),
        )
        cleaned = video.clean(upload.data, timeout=seconds * 4, max_memory_mb=memory)
        # A QuickTime file whose streams fit MP4 is stored as MP4: what DICOM can carry.
        stored = sniff(cleaned)
        probe = replace(probe, container=stored.name)
        poster = video.poster(cleaned, timeout=seconds, max_memory_mb=memory)
        facts, renditions = self._decoder.inspect(poster, "JPEG", self._settings.photo_max_pixels)
        facts["taken_at"] = (
            probe.creation_time.strftime("%Y:%m:%d %H:%M:%S") if probe.creation_time else None
        )
        # Not told by the remux, which drops all metadata whether it named a place or not.
        facts["had_location"] = None
        parts = {"original": cleaned, **{k: renditions[k] for k in ("thumbnail", "web")}}
        return _Prepared(stored, name, facts, parts, probe)

    def _store(
        self,
        principal: Principal,
        patient: PatientRecord,
        item: _Prepared,
        teeth: tuple[int, ...],
        form: PhotoForm,
        stated_time: datetime | None,
    ) -> PhotoUpload:
        county = principal.county.value
        original = item.parts["original"]
        photo_id = _photo_id(county, patient.pk, original)
        taken, source = _capture_time(item.facts.get("taken_at"), stated_time)
        study_uid = derived_uid("photo-study", county, patient.patient_id, taken.date().isoformat())
        series_uid = derived_uid("photo-series", study_uid, item.fmt.kind)
        sop_uid = f"2.25.{uuid.UUID(photo_id).int}"
        context = PhotoContext(
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid,
            instance_number=int(taken.strftime("%H%M%S")),
            taken_at=taken,
            category=form.category,
            teeth=teeth,
            note=form.note,
            county=county,
            operator=principal.username,
            study_description="Kliniske foto",
            series_description="Kliniske video" if item.fmt.kind == "video" else "Kliniske foto",
        )
        person = PhotoPatient(
            patient_id=patient.patient_id,
            name=patient.name,
            birth_date=patient.birth_date,
            sex=patient.sex,
        )
        dicom, dicom_note = self._wrap(item, person, context)
        facts = PhotoFacts(
            photo_id=photo_id,
            kind=item.fmt.kind,
            media_type=item.fmt.media_type,
            taken_at=taken.isoformat(timespec="seconds"),
            taken_at_source=source,
            category=form.category,
            teeth=teeth,
            note=form.note,
            width=int(item.facts["width"]),
            height=int(item.facts["height"]),
            duration_seconds=item.probe.duration_seconds if item.probe else None,
            filename=item.filename,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=sop_uid if dicom is not None else None,
        )
        outcome = self._ingest.ingest_photo(
            PhotoIngest(
                facts=facts,
                patient_pk=patient.pk,
                patient_id=patient.patient_id,
                county=county,
                renditions=_renditions(item),
                dicom=dicom,
                origin=form.origin,
                details={
                    "kind": facts.kind,
                    "media_type": facts.media_type,
                    "size": len(original),
                    "category": facts.category,
                    "teeth": list(teeth),
                    # True: the upload named a place and the stored file does not (None: unknown)
                    "location_removed": item.facts.get("had_location"),
                    "dicom": dicom_note,
                },
            ),
            principal.actor(),
        )
        # The id comes from the content, so a duplicate's id is the photo stored first.
        stored = self._index.photos.get(photo_id)
        if stored is None:
            raise InvalidObject("the photo was stored but cannot be read back; try again")
        return PhotoUpload(stored, outcome is IngestOutcome.DUPLICATE)

    def register_dicom(self, parsed: ParsedObject, data: bytes, actor: Actor) -> None:
        """A VL Photographic Image that arrived as DICOM (an intra-oral camera's C-STORE, a
        STOW-RS) joins the patient's gallery too: its picture goes through the same sandboxed
        decoding and metadata removal as an upload; the DICOM object stays as it was sent.
        Called by the ingest path after the object is stored (`IngestService.on_stored`)."""
        if parsed.instance.sop_class_uid != VL_PHOTOGRAPHIC_IMAGE:
            return
        patient = self._index.photos.patient_by_national_id(parsed.patient.patient_id)
        if patient is None:
            return
        picture, fmt = picture_of(parsed.dataset, data)
        facts, parts = self._decoder.inspect(
            picture, fmt.pillow_format, self._settings.photo_max_pixels
        )
        item = _Prepared(fmt, "", facts, parts)
        metadata = parsed.dataset.to_json_dict()  # read without its pixel data
        taken, source = _capture_time(
            facts.get("taken_at"), _form_time(attributes.taken_at(metadata)), "dicom"
        )
        photo_facts = PhotoFacts(
            photo_id=_photo_id(actor.county, patient.pk, parts["original"]),
            kind="photo",
            media_type=fmt.media_type,
            taken_at=taken.isoformat(timespec="seconds"),
            taken_at_source=source,
            category=attributes.category(metadata),
            teeth=tuple(attributes.teeth(metadata)),
            note=attributes.note(metadata),
            width=int(facts["width"]),
            height=int(facts["height"]),
            duration_seconds=None,
            filename="",
            study_uid=parsed.study.study_uid,
            series_uid=parsed.series.series_uid,
            sop_uid=parsed.instance.sop_uid,
        )
        self._ingest.ingest_photo(
            PhotoIngest(
                facts=photo_facts,
                patient_pk=patient.pk,
                patient_id=patient.patient_id,
                county=actor.county,
                renditions=_renditions(item),
                dicom=None,
                details={"kind": "photo", "from": "DICOM object", "media_type": fmt.media_type},
            ),
            actor,
        )

    @staticmethod
    def _wrap(
        item: _Prepared, person: PhotoPatient, context: PhotoContext
    ) -> tuple[bytes | None, str]:
        """The DICOM wrapper, and a note for the audit event on how it was made (or why not)."""
        try:
            if item.probe is not None:
                return wrap_video(item.parts["original"], item.probe, person, context), "video"
            reencoded = item.parts.get("dicom_jpeg")
            if reencoded is not None:
                return wrap_jpeg(reencoded, person, context, recompressed=True), "re-encoded"
            return wrap_jpeg(item.parts["original"], person, context, recompressed=False), "as is"
        except NotWrappable as exc:
            return None, f"not wrapped: {exc}"


def _check_category(value: str) -> None:
    if value not in CATEGORIES:
        raise InvalidObject(f"unknown category {value!r}; one of {', '.join(CATEGORIES)}")


def _photo_id(county: str, patient_pk: int, original: bytes) -> str:
    """From the content: the same file for the same patient and county is the same photo."""
    content = hashlib.sha256(original).hexdigest()
    return hashlib.sha256(f"{county}|{patient_pk}|{content}".encode()).hexdigest()[:32]


def _renditions(item: _Prepared) -> dict[str, tuple[bytes, str]]:
    return {
        "original": (item.parts["original"], item.fmt.extensions[0].lstrip(".")),
        "thumbnail": (item.parts["thumbnail"], "jpg"),
        "web": (item.parts["web"], "jpg"),
    }


def _form_time(value: str) -> datetime | None:
    if not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise InvalidObject(
            f"capture time {value!r} is not a date and time like 2026-11-20T10:15"
        ) from exc
    return moment.replace(tzinfo=None)


def _capture_time(
    exif_value: object, stated: datetime | None, stated_by: str = "form"
) -> tuple[datetime, str]:
    """When the photo was taken: the file's own record first, then what the uploader (the form,
    or the DICOM object around the picture) says, then now."""
    if isinstance(exif_value, str):
        try:
            return datetime.strptime(exif_value[:19], "%Y:%m:%d %H:%M:%S"), "exif"
        except ValueError:
            pass
    if stated is not None:
        return stated, stated_by
    return datetime.now().replace(microsecond=0), "upload"
