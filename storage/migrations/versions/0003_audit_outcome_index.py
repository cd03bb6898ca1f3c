"""index audit events by outcome, for the auditors' search of failures

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Failures are rare among millions of reads; without this a search for them reads them all.
    op.create_index("ix_audit_outcome_seq", "audit_events", ["outcome", "seq"])


def downgrade() -> None:
    op.drop_index("ix_audit_outcome_seq", "audit_events")
