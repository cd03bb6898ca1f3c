"""Plain records that cross the boundary between the core and storage.

The core never sees SQLAlchemy objects: it hands these in and gets these back, so the index can be
SQLite, PostgreSQL or anything else behind `storage.index.Index`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PatientAttributes:
    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str
    id_kind: str | None
    id_valid: bool
    id_problem: str | None
    alias_id: str = ""
    """The object's own Patient ID when it is indexed under a national ID found among its Other
    Patient IDs (kept as an alias of the patient); empty otherwise."""
    alias_issuer: str = ""
    birth_date_problem: str | None = None
    """Why the birth date contradicts the national ID's own date, if it does."""


@dataclass(frozen=True)
class StudyAttributes:
    study_uid: str
    study_date: str
    study_time: str
    accession_number: str
    description: str
    referring_physician: str
    study_id: str


@dataclass(frozen=True)
class SeriesAttributes:
    series_uid: str
    modality: str
    series_number: int | None
    description: str
    body_part: str


@dataclass(frozen=True)
class InstanceAttributes:
    sop_uid: str
    sop_class_uid: str
    instance_number: int | None
    transfer_syntax_uid: str
    rows: int | None
    columns: int | None
    frames: int
    metadata_json: str


@dataclass(frozen=True)
class BlobRef:
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class NewInstance:
    """Everything the index needs to record one received object."""

    patient: PatientAttributes
    study: StudyAttributes
    series: SeriesAttributes
    instance: InstanceAttributes
    blob: BlobRef
    county: str
    source: str
    received_at: str


@dataclass(frozen=True)
class NewConflict:
    """A different object that arrived under an SOP Instance UID already stored."""

    sop_uid: str
    study_uid: str
    series_uid: str
    blob: BlobRef
    existing_sha256: str
    county: str
    source: str
    received_at: str


@dataclass(frozen=True)
class PatientRecord:
    """A patient row as the photo service needs it: who, and the key used instead of the
    national ID in URLs."""

    pk: int
    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str
    county: str


@dataclass(frozen=True)
class PhotoFacts:
    """What the clinic said about a photo or video, and what was read from the file."""

    photo_id: str
    kind: str
    """"photo" or "video"."""
    media_type: str
    taken_at: str
    """ISO 8601 local time of capture."""
    taken_at_source: str
    """"exif", "form" or "upload": where the capture time came from."""
    category: str
    teeth: tuple[int, ...]
    note: str
    width: int
    height: int
    duration_seconds: float | None
    filename: str
    study_uid: str
    series_uid: str
    sop_uid: str | None
    """The DICOM wrapper's SOP Instance UID; None when the file could not be wrapped."""


@dataclass(frozen=True)
class NewPhoto:
    """A photo to index: its facts, its stored blobs by role, and who owns and sent it."""

    facts: PhotoFacts
    patient_pk: int
    county: str
    blobs: dict[str, BlobRef]
    """"original", "thumbnail" and "web" (the poster frame, for a video)."""
    uploaded_by: str
    source: str
    received_at: str


@dataclass(frozen=True)
class PhotoRecord:
    """A stored photo or video as reads see it."""

    facts: PhotoFacts
    patient_pk: int
    patient_id: str
    county: str
    blobs: dict[str, BlobRef]
    uploaded_by: str
    received_at: str

    @property
    def photo_id(self) -> str:
        return self.facts.photo_id

    @property
    def original(self) -> BlobRef:
        return self.blobs["original"]


@dataclass(frozen=True)
class PhotoQuery:
    """One patient's photos, narrowed like a read: the principal's county plus granted
    patients, optionally one category and one tooth."""

    patient_pk: int
    county: str | None = None
    granted_patient_ids: tuple[str, ...] = ()
    category: str | None = None
    tooth: int | None = None


@dataclass(frozen=True)
class StoredInstance:
    """Where an instance's bytes are, and what the index knows of it."""

    patient_id: str
    county: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    frames: int
    blob: BlobRef
    metadata_json: str


@dataclass(frozen=True)
class BlobOwner:
    """Whose bytes a blob holds: an instance's, or a conflicting object's kept for review."""

    sop_uid: str
    study_uid: str
    patient_id: str
    county: str


@dataclass(frozen=True)
class StudySummary:
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    id_valid: bool
    study_uid: str
    study_date: str
    study_time: str
    accession_number: str
    description: str
    referring_physician: str
    study_id: str
    modalities: tuple[str, ...]
    series_count: int
    instance_count: int
    county: str


@dataclass(frozen=True)
class SeriesSummary:
    patient_id: str
    county: str
    study_uid: str
    series_uid: str
    modality: str
    series_number: int | None
    description: str
    body_part: str
    instance_count: int


@dataclass(frozen=True)
class PatientSummary:
    """A patient as a patient-level query answers it; counts are of what the query may see."""

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    id_valid: bool
    study_count: int
    series_count: int
    instance_count: int
    counties: tuple[str, ...]

    @property
    def county(self) -> str:
        """The first county holding this patient's studies (for audit details)."""
        return self.counties[0] if self.counties else ""


@dataclass(frozen=True)
class StudyQuery:
    """Matching keys for study-, series- and instance-level searches; None means universal match.

    Name and text patterns use DICOM wildcards (`*`, `?`); dates are `YYYYMMDD` bounds, inclusive.
    """

    patient_id: str | None = None
    patient_name: str | None = None
    birth_date: str | None = None
    study_date_from: str | None = None
    study_date_to: str | None = None
    modality: str | None = None
    accession_number: str | None = None
    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    sop_uids: tuple[str, ...] = ()
    patient_sex: str | None = None
    birth_date_from: str | None = None
    birth_date_to: str | None = None
    """Birth date range bounds (`birth_date` stays the exact single-value match)."""
    study_time_from: str | None = None
    study_time_to: str | None = None
    """TM bounds normalised by `arkiv.query_keys` (`HHMMSS[.FFFFFF]`, inclusive)."""
    study_id: str | None = None
    referring_physician: str | None = None
    study_description: str | None = None
    modalities: tuple[str, ...] = ()
    """ModalitiesInStudy or Modality as a list: any of these (exact, case-sensitive)."""
    series_number: int | None = None
    instance_number: int | None = None
    sop_class_uids: tuple[str, ...] = ()
    fuzzy_names: bool = False
    """Person names match word-prefix-wise, case- and accent-insensitively (QIDO fuzzymatching)."""
    county: str | None = None
    """Only studies this county owns (a clinician's own county) …"""
    granted_patient_ids: tuple[str, ...] = ()
    """… plus all studies of these patients (break-the-glass grants in force)."""
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True)
class NewAuditEvent:
    """An audit event as the core composes it; the index adds sequence number and chain hashes."""

    recorded_at: str
    event_id: str
    event_name: str
    action: str
    outcome: int
    outcome_description: str
    actor: str
    actor_kind: str
    actor_role: str
    county: str
    source_address: str
    patient_ids: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    object_count: int = 0
    query: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    counties: tuple[str, ...] = ()
    """Every county the event concerns: the actor's and each owner of the data touched."""


@dataclass(frozen=True)
class AuditEvent:
    """An event as it stands in the log, with its place in the hash chain."""

    seq: int
    recorded_at: str
    event_id: str
    event_name: str
    action: str
    outcome: int
    outcome_description: str
    actor: str
    actor_kind: str
    actor_role: str
    county: str
    source_address: str
    patient_ids: tuple[str, ...]
    study_uids: tuple[str, ...]
    object_count: int
    query: str
    details: dict[str, Any]
    prev_hash: str
    hash: str
    counties: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuditQuery:
    patient_id: str | None = None
    actor: str | None = None
    county: str | None = None
    """Events that concern this county (as actor's county or as owner of the data)."""
    event_id: str | None = None
    action: str | None = None
    outcome: int | None = None
    min_outcome: int | None = None
    cross_county: bool = False
    """Only events by actors from another county than `county` (accesses to its patients)."""
    after_seq: int = 0
    through_seq: int | None = None
    oldest_first: bool = False
    """Newest first unless set; with `after_seq` this pages through the log without offsets."""
    since: str | None = None
    until: str | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True)
class UserAccount:
    username: str
    password_hash: str
    role: str
    county: str
    failed_logins: int
    locked_until: str | None
    display_name: str = ""
    hpr_number: str | None = None
    pid_sha256: str | None = None
    scopes: tuple[str, ...] = ()
    disabled: bool = False


@dataclass(frozen=True)
class WebSession:
    token_hash: str
    username: str
    created_at: str
    expires_at: str
    last_seen_at: str = ""
    csrf_token: str = ""
    auth_method: str = "password"


@dataclass(frozen=True)
class BreakGlassGrant:
    id: int
    username: str
    user_county: str
    patient_id: str
    reason_code: str
    reason_text: str
    granted_at: str
    expires_at: str
    audit_seq: int


@dataclass(frozen=True)
class Checkpoint:
    """A signed checkpoint as kept in the index: the chain's size and head hash, and the note."""

    seq: int
    head_hash: str
    signed_at: str
    key_id: str
    note: str


@dataclass(frozen=True)
class UserVolume:
    """How many distinct patients one user opened on one day (for the auditors' review)."""

    actor: str
    county: str
    day: str
    patients: int
    events: int


@dataclass(frozen=True)
class IndexStatistics:
    """Counts for monitoring; no patient data."""

    patients: int
    studies: int
    series: int
    instances: int
    conflicts: int
    stored_bytes: int
    audit_events: int
    photos: int = 0
    """Photos and videos (their DICOM wrappers are counted among the instances too)."""
    media_bytes: int = 0
    """Bytes of photos' and videos' originals and renditions."""
