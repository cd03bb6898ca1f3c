"""keep the audit forwarding cursor in the index, for whichever node forwards

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Not insert-only like the audit tables: the cursor row moves forward as batches are taken.
    # An existing embedded archive's `audit-forward.cursor` file is taken over by the forwarder
    # at its first start (arkiv.audit_syslog), not here: the migration does not know data_dir.
    op.create_table(
        "audit_forward_cursor",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("audit_forward_cursor")
