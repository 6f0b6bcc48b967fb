"""Watermark key records (public part only; secrets are derived from the master secret).

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
    op.create_table(
        "watermark_keys",
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("ident", sa.String(200), nullable=False),
        sa.Column("scheme", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("record", sa.JSON, nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("key_id", name="pk_watermark_keys"),
    )
    op.create_index("ix_watermark_keys_owner", "watermark_keys", ["scope", "ident", "scheme", "version"])


def downgrade() -> None:
    op.drop_index("ix_watermark_keys_owner", table_name="watermark_keys")
    op.drop_table("watermark_keys")
