"""counties on audit events, break-the-glass grants, signed checkpoints, richer accounts

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (never a batch table rebuild): the audit tables keep their triggers.
    op.add_column(
        "audit_events", sa.Column("counties", sa.Text(), nullable=False, server_default="[]")
    )
    op.create_table(
        "audit_counties",
        sa.Column("seq", sa.Integer(), sa.ForeignKey("audit_events.seq"), nullable=False),
        sa.Column("county", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("seq", "county"),
    )
    op.create_index("ix_audit_counties_county_seq", "audit_counties", ["county", "seq"])
    # Events written before counties were recorded concern their actor's county.
    op.execute("INSERT INTO audit_counties (seq, county) SELECT seq, county FROM audit_events")

    op.create_table(
        "audit_checkpoints",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "break_glass_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("user_county", sa.String(length=32), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("reason_code", sa.String(length=32), nullable=False),
        sa.Column("reason_text", sa.Text(), nullable=False),
        sa.Column("granted_at", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.String(length=32), nullable=False),
        sa.Column("audit_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_grants_user_patient", "break_glass_grants", ["username", "patient_id", "expires_at"]
    )

    for column in (
        sa.Column("display_name", sa.String(length=128), nullable=False, server_default=""),
        sa.Column("hpr_number", sa.String(length=16), nullable=True),
        sa.Column("pid_sha256", sa.String(length=64), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=False, server_default=""),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
    ):
        op.add_column("users", column)
    op.create_index("uq_users_hpr_number", "users", ["hpr_number"], unique=True)
    op.create_index("uq_users_pid_sha256", "users", ["pid_sha256"], unique=True)

    for column in (
        sa.Column("last_seen_at", sa.String(length=32), nullable=False, server_default=""),
        sa.Column("csrf_token", sa.String(length=64), nullable=False, server_default=""),
        sa.Column("auth_method", sa.String(length=16), nullable=False, server_default="password"),
    ):
        op.add_column("web_sessions", column)

    _protect(("audit_counties", "audit_checkpoints", "break_glass_grants"))


def downgrade() -> None:
    _unprotect(("audit_counties", "audit_checkpoints", "break_glass_grants"))
    for name in ("last_seen_at", "csrf_token", "auth_method"):
        with op.batch_alter_table("web_sessions") as batch_op:
            batch_op.drop_column(name)
    op.drop_index("uq_users_pid_sha256", "users")
    op.drop_index("uq_users_hpr_number", "users")
    for name in ("display_name", "hpr_number", "pid_sha256", "scopes", "disabled"):
        with op.batch_alter_table("users") as batch_op:
            batch_op.drop_column(name)
    op.drop_index("ix_grants_user_patient", "break_glass_grants")
    op.drop_table("break_glass_grants")
    op.drop_table("audit_checkpoints")
    op.drop_index("ix_audit_counties_county_seq", "audit_counties")
    op.drop_table("audit_counties")
    # audit_events.counties stays: dropping it would rebuild the append-only table.


def _protect(tables: tuple[str, ...]) -> None:
    """Insert-only, like the rest of the audit log: grants and checkpoints are evidence too."""
    dialect = op.get_bind().dialect.name
    for table in tables:
        if dialect == "sqlite":
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )
        elif dialect == "postgresql":
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION arkiv_refuse_change()"
                )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION arkiv_refuse_change()"
            )


def _unprotect(tables: tuple[str, ...]) -> None:
    dialect = op.get_bind().dialect.name
    for table in tables:
        for action in ("update", "delete", "truncate"):
            if dialect == "sqlite" and action == "truncate":
                continue
            suffix = f" ON {table}" if dialect == "postgresql" else ""
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}{suffix}")
