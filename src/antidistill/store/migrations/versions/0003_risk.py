"""Risk engine output and enforcement: findings (history), risk_state (latest per subject),
decisions (engine/operator actions, at most one active per subject) and worker_cursors.

A frozen copy of the corresponding tables of store/schema.py (see 0001).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# BIGSERIAL on Postgres; exactly INTEGER PRIMARY KEY (the rowid) on SQLite
_ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "findings",
        sa.Column("id", _ROW_ID, nullable=False, autoincrement=True),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(256), nullable=False),
        sa.Column("score", sa.Double, nullable=False),
        sa.Column("flagged", sa.Boolean, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("cluster", sa.Text, nullable=True),
        sa.Column("requests_seen", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_findings"),
    )
    op.create_index("ix_findings_subject", "findings", ["subject_kind", "subject_id", "ts", "id"])
    op.create_index("ix_findings_flagged", "findings", ["flagged", "ts", "id"])

    op.create_table(
        "risk_state",
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(256), nullable=False),
        sa.Column("score", sa.Double, nullable=False),
        sa.Column("flagged", sa.Boolean, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("cluster", sa.Text, nullable=True),
        sa.Column("requests_seen", sa.BigInteger, nullable=False),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("first_flagged_at", sa.Double, nullable=True),
        sa.Column("last_finding_id", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("subject_kind", "subject_id", name="pk_risk_state"),
    )
    op.create_index("ix_risk_state_top", "risk_state", ["subject_kind", "score", "subject_id"])

    op.create_table(
        "decisions",
        sa.Column("id", _ROW_ID, nullable=False, autoincrement=True),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(256), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("finding_id", sa.BigInteger, nullable=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("reversed_at", sa.Double, nullable=True),
        sa.Column("reversed_by", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_decisions"),
    )
    op.create_index("ix_decisions_subject", "decisions", ["subject_kind", "subject_id", "active"])
    op.create_index(
        "uq_decisions_active_subject",
        "decisions",
        ["subject_kind", "subject_id"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )

    op.create_table(
        "worker_cursors",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_worker_cursors"),
    )


def downgrade() -> None:
    op.drop_table("worker_cursors")
    op.drop_index("uq_decisions_active_subject", table_name="decisions")
    op.drop_index("ix_decisions_subject", table_name="decisions")
    op.drop_table("decisions")
    op.drop_index("ix_risk_state_top", table_name="risk_state")
    op.drop_table("risk_state")
    op.drop_index("ix_findings_flagged", table_name="findings")
    op.drop_index("ix_findings_subject", table_name="findings")
    op.drop_table("findings")
