"""Initial schema: accounts, api_keys, events.

A frozen copy of store/schema.py at this revision (do not import schema.py here: later edits to it
must come with a new revision, and a contract test compares the migrated database to schema.py).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("tier", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("name", name="uq_accounts_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("revoked_at", sa.Double, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_api_keys_account_id_accounts", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_api_keys_account_id", "api_keys", ["account_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("ts", sa.Double, nullable=False),
        sa.Column("account_id", sa.Text, nullable=True),
        sa.Column("key_id", sa.Text, nullable=True),
        sa.Column("client_ip", sa.Text, nullable=True),
        sa.Column("user_agent", sa.Text, nullable=True),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=True),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("response", sa.Text, nullable=True),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Double, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("error_code", sa.Text, nullable=True),
        sa.Column("stream", sa.Boolean, nullable=False),
        sa.Column("watermark_key_id", sa.Text, nullable=True),
        sa.Column("watermark_config_hash", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_ts", "events", ["ts", "id"])
    op.create_index("ix_events_account_ts", "events", ["account_id", "ts", "id"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("api_keys")
    op.drop_table("accounts")
