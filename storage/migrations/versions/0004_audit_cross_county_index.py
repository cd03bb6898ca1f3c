"""index the audit events that concern more than one county

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The review of cross-county access looks for the few events naming more than one county;
    # a partial index holds just those (the search repeats the condition as a literal).
    crossing = sa.text("counties LIKE '%,%'")
    op.create_index(
        "ix_audit_cross_county",
        "audit_events",
        ["seq"],
        sqlite_where=crossing,
        postgresql_where=crossing,
    )


def downgrade() -> None:
    op.drop_index("ix_audit_cross_county", "audit_events")
