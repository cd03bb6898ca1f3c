"""SQLAlchemy tables of the index. Private to `storage`: other packages use `storage.index`."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer", name="uq_patient_identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(324), default="")
    name_key: Mapped[str] = mapped_column(String(324), default="", index=True)
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    id_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    id_valid: Mapped[bool] = mapped_column(Boolean, default=False)
    id_problem: Mapped[str | None] = mapped_column(String(200), nullable=True)
    county: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[str] = mapped_column(String(32))


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    description: Mapped[str] = mapped_column(String(64), default="")
    referring_physician: Mapped[str] = mapped_column(String(324), default="")
    study_id: Mapped[str] = mapped_column(String(16), default="")
    county: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[str] = mapped_column(String(32))


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    description: Mapped[str] = mapped_column(String(64), default="")
    body_part: Mapped[str] = mapped_column(String(16), default="")
    county: Mapped[str] = mapped_column(String(32))


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    frames: Mapped[int] = mapped_column(Integer, default=1)
    blob_key: Mapped[str] = mapped_column(String(400))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    county: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[str] = mapped_column(String(32))
    metadata_json: Mapped[str] = mapped_column(Text)


class InstanceConflict(Base):
    """A second, different object under a stored SOP Instance UID: kept, never served."""

    __tablename__ = "instance_conflicts"
    __table_args__ = (UniqueConstraint("sop_uid", "sha256", name="uq_conflict_content"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_uid: Mapped[str] = mapped_column(String(64), index=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(400))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    existing_sha256: Mapped[str] = mapped_column(String(64))
    county: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[str] = mapped_column(String(32))


class Photo(Base):
    """A clinical photo or video: what the clinic said about it, and its DICOM wrapper's UIDs.

    The bytes (the GPS-free original and the renditions) are rows of `media_blobs`, so that
    every table referring to the blob store has the same three columns (key, size, SHA-256).
    """

    __tablename__ = "photos"
    __table_args__ = (
        UniqueConstraint("patient_pk", "county", "original_sha256", name="uq_photo_content"),
        Index("ix_photos_patient_taken", "patient_pk", "taken_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    photo_id: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(8))
    media_type: Mapped[str] = mapped_column(String(64))
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    county: Mapped[str] = mapped_column(String(32))
    taken_at: Mapped[str] = mapped_column(String(32))
    taken_at_source: Mapped[str] = mapped_column(String(8))
    category: Mapped[str] = mapped_column(String(32))
    teeth: Mapped[str] = mapped_column(String(400), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    duration_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    original_sha256: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255), default="")
    uploaded_by: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[str] = mapped_column(String(32))
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(64))
    sop_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)


class MediaBlob(Base):
    """One stored rendition of a photo: its original, thumbnail or web-size image (or poster)."""

    __tablename__ = "media_blobs"
    __table_args__ = (UniqueConstraint("photo_pk", "role", name="uq_media_blob_role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    photo_pk: Mapped[int] = mapped_column(ForeignKey("photos.id"))
    role: Mapped[str] = mapped_column(String(16))
    blob_key: Mapped[str] = mapped_column(String(400), index=True)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    county: Mapped[str] = mapped_column(String(32))


class AuditChainHead(Base):
    """One row per chain: its last sequence number and hash. Locking it serialises appenders."""

    __tablename__ = "audit_chain_head"

    chain: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class AuditEventRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_time", "recorded_at"),
        Index("ix_audit_actor", "actor"),
        Index("ix_audit_event_id", "event_id"),
        Index("ix_audit_outcome_seq", "outcome", "seq"),
        Index(
            "ix_audit_cross_county",
            "seq",
            sqlite_where=text("counties LIKE '%,%'"),
            postgresql_where=text("counties LIKE '%,%'"),
        ),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    recorded_at: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(16))
    event_name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(1))
    outcome: Mapped[int] = mapped_column(Integer)
    outcome_description: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(128))
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_role: Mapped[str] = mapped_column(String(32), default="")
    county: Mapped[str] = mapped_column(String(32))
    source_address: Mapped[str] = mapped_column(String(64), default="")
    patient_ids: Mapped[str] = mapped_column(Text, default="[]")
    study_uids: Mapped[str] = mapped_column(Text, default="[]")
    object_count: Mapped[int] = mapped_column(Integer, default=0)
    query: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[str] = mapped_column(Text, default="{}")
    counties: Mapped[str] = mapped_column(Text, default="[]")
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditPatient(Base):
    """Which patients an audit event concerns, for the auditor's search by patient."""

    __tablename__ = "audit_patients"

    seq: Mapped[int] = mapped_column(ForeignKey("audit_events.seq"), primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class AuditCounty(Base):
    """Which counties an audit event concerns: the actor's and every owner of the data touched.

    A county's auditors see exactly the events listed under their county here.
    """

    __tablename__ = "audit_counties"
    __table_args__ = (Index("ix_audit_counties_county_seq", "county", "seq"),)

    seq: Mapped[int] = mapped_column(ForeignKey("audit_events.seq"), primary_key=True)
    county: Mapped[str] = mapped_column(String(32), primary_key=True)


class AuditCheckpoint(Base):
    """A signed statement of the chain head at one size, kept in the log and exported."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    head_hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)


class AuditForwardCursor(Base):
    """How far the audit log has been forwarded: the last event a receiver took, per forwarder.

    Kept in the index, not on one node, so whichever node forwards continues where the last
    one stopped. Rows change in place.
    """

    __tablename__ = "audit_forward_cursor"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[str] = mapped_column(String(32))


class BreakGlassGrant(Base):
    """Time-limited access by one user to one patient outside the user's county."""

    __tablename__ = "break_glass_grants"
    __table_args__ = (Index("ix_grants_user_patient", "username", "patient_id", "expires_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    user_county: Mapped[str] = mapped_column(String(32))
    patient_id: Mapped[str] = mapped_column(String(64))
    reason_code: Mapped[str] = mapped_column(String(32))
    reason_text: Mapped[str] = mapped_column(Text, default="")
    granted_at: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[str] = mapped_column(String(32))
    audit_seq: Mapped[int] = mapped_column(Integer)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    county: Mapped[str] = mapped_column(String(32))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[str] = mapped_column(String(32))
    display_name: Mapped[str] = mapped_column(String(128), default="")
    hpr_number: Mapped[str | None] = mapped_column(String(16), nullable=True, unique=True)
    pid_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    scopes: Mapped[str] = mapped_column(Text, default="")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class SessionRow(Base):
    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[str] = mapped_column(String(32))
    last_seen_at: Mapped[str] = mapped_column(String(32), default="")
    csrf_token: Mapped[str] = mapped_column(String(64), default="")
    auth_method: Mapped[str] = mapped_column(String(16), default="password")


class PatientAlias(Base):
    """A local Patient ID (with its issuer and county) under which a patient's objects arrived
    while they were indexed under the national ID found among their Other Patient IDs."""

    __tablename__ = "patient_aliases"
    __table_args__ = (
        UniqueConstraint("patient_pk", "local_id", "issuer", "county", name="uq_patient_alias"),
        Index("ix_patient_aliases_local", "local_id", "issuer"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    local_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")
    county: Mapped[str] = mapped_column(String(32))
    first_seen: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(200))


class PatientName(Base):
    """Each distinct name and birth date objects gave a patient, per county, with the first
    source that gave it: what the reconciliation compares. Only ever added."""

    __tablename__ = "patient_names"
    __table_args__ = (
        UniqueConstraint(
            "patient_pk", "name", "birth_date", "county", name="uq_patient_name_variant"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    name: Mapped[str] = mapped_column(String(324), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    birth_date_problem: Mapped[str | None] = mapped_column(String(200), nullable=True)
    county: Mapped[str] = mapped_column(String(32))
    first_seen: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(200))


class PatientChange(Base):
    """A merge, split, accept or undo by an administrator, with what undoing it needs.

    Only ever added: an undo is a row of its own naming the change it reverses.
    """

    __tablename__ = "patient_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    target_pk: Mapped[int | None] = mapped_column(
        ForeignKey("patients.id"), nullable=True, index=True
    )
    study_uids: Mapped[str] = mapped_column(Text, default="[]")
    details: Mapped[str] = mapped_column(Text, default="{}")
    undoes: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
    actor: Mapped[str] = mapped_column(String(128))
    made_at: Mapped[str] = mapped_column(String(32))


class RedirectedStudy(Base):
    """A study whose objects named a merged (tombstone) patient record and were therefore
    filed under the record it was merged into; undoing that merge takes it back."""

    __tablename__ = "redirected_studies"

    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), primary_key=True)
    named_patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    change_id: Mapped[int] = mapped_column(ForeignKey("patient_changes.id"))
