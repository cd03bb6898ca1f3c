"""clinical photos and video, and the blobs of their renditions

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "photos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("photo_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("media_type", sa.String(length=64), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("county", sa.String(length=32), nullable=False),
        sa.Column("taken_at", sa.String(length=32), nullable=False),
        sa.Column("taken_at_source", sa.String(length=8), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("teeth", sa.String(length=400), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("original_sha256", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("uploaded_by", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("received_at", sa.String(length=32), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_uid", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["patient_pk"], ["patients.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("photo_id"),
        sa.UniqueConstraint("patient_pk", "county", "original_sha256", name="uq_photo_content"),
    )
    op.create_index("ix_photos_patient_taken", "photos", ["patient_pk", "taken_at"])
    op.create_table(
        "media_blobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("photo_pk", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("blob_key", sa.String(length=400), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("county", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["photo_pk"], ["photos.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("photo_pk", "role", name="uq_media_blob_role"),
    )
    op.create_index("ix_media_blobs_blob_key", "media_blobs", ["blob_key"])


def downgrade() -> None:
    op.drop_index("ix_media_blobs_blob_key", table_name="media_blobs")
    op.drop_table("media_blobs")
    op.drop_index("ix_photos_patient_taken", table_name="photos")
    op.drop_table("photos")
