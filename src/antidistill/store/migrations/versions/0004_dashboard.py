"""Indexes of the operators' dashboard: a cluster's members (risk_state.cluster), subjects first
flagged over time, subjects by volume, and decisions over time. No table changes.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_risk_state_cluster", "risk_state", ["cluster", "subject_kind", "score"])
    op.create_index("ix_risk_state_first_flagged", "risk_state", ["subject_kind", "first_flagged_at"])
    op.create_index("ix_risk_state_volume", "risk_state", ["subject_kind", "requests_seen", "subject_id"])
    op.create_index("ix_decisions_ts", "decisions", ["ts", "id"])


def downgrade() -> None:
    op.drop_index("ix_decisions_ts", table_name="decisions")
    op.drop_index("ix_risk_state_volume", table_name="risk_state")
    op.drop_index("ix_risk_state_first_flagged", table_name="risk_state")
    op.drop_index("ix_risk_state_cluster", table_name="risk_state")
