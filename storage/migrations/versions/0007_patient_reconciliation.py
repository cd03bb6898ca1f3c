"""patient reconciliation: aliases, names and birth dates seen, changes by administrators

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patient_aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("local_id", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("county", sa.String(length=32), nullable=False),
        sa.Column("first_seen", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["patient_pk"], ["patients.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("patient_pk", "local_id", "issuer", "county", name="uq_patient_alias"),
    )
    op.create_index("ix_patient_aliases_local", "patient_aliases", ["local_id", "issuer"])
    op.create_table(
        "patient_names",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=324), nullable=False),
        sa.Column("birth_date", sa.String(length=8), nullable=False),
        sa.Column("birth_date_problem", sa.String(length=200), nullable=True),
        sa.Column("county", sa.String(length=32), nullable=False),
        sa.Column("first_seen", sa.String(length=32), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["patient_pk"], ["patients.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "patient_pk", "name", "birth_date", "county", name="uq_patient_name_variant"
        ),
    )
    op.create_index("ix_patient_names_patient_pk", "patient_names", ["patient_pk"])
    op.create_table(
        "patient_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("target_pk", sa.Integer(), nullable=True),
        sa.Column("study_uids", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("undoes", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("made_at", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["patient_pk"], ["patients.id"]),
        sa.ForeignKeyConstraint(["target_pk"], ["patients.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("undoes"),
    )
    op.create_index("ix_patient_changes_patient_pk", "patient_changes", ["patient_pk"])
    op.create_index("ix_patient_changes_target_pk", "patient_changes", ["target_pk"])
    op.create_table(
        "redirected_studies",
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("named_patient_pk", sa.Integer(), nullable=False),
        sa.Column("change_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["study_pk"], ["studies.id"]),
        sa.ForeignKeyConstraint(["named_patient_pk"], ["patients.id"]),
        sa.ForeignKeyConstraint(["change_id"], ["patient_changes.id"]),
        sa.PrimaryKeyConstraint("study_pk"),
    )
    op.create_index(
        "ix_redirected_studies_named_patient_pk", "redirected_studies", ["named_patient_pk"]
    )


def downgrade() -> None:
    op.drop_index("ix_redirected_studies_named_patient_pk", table_name="redirected_studies")
    op.drop_table("redirected_studies")
    op.drop_index("ix_patient_changes_target_pk", table_name="patient_changes")
    op.drop_index("ix_patient_changes_patient_pk", table_name="patient_changes")
    op.drop_table("patient_changes")
    op.drop_index("ix_patient_names_patient_pk", table_name="patient_names")
    op.drop_table("patient_names")
    op.drop_index("ix_patient_aliases_local", table_name="patient_aliases")
    op.drop_table("patient_aliases")
