"""The SQL schema of the store, as SQLAlchemy Core tables (the one source for queries).

Types are portable between SQLite and PostgreSQL: timestamps are float epoch seconds (``Double``),
structured payloads are the generic ``JSON`` type (TEXT on SQLite, ``json`` on Postgres).
Migrations (store/migrations/versions) are frozen copies of this file at each revision; a contract
test checks that a migrated database matches these tables exactly.
"""

from __future__ import annotations

import sqlalchemy as sa

# Deterministic constraint names, so that later migrations can refer to them on both engines.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("tier", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    # the public key id (12 hex chars); looked up by primary key on every authenticated request
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column(
        "account_id",
        sa.String(64),
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("hash", sa.String(64), nullable=False),  # sha256 hex of the secret part of the token
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double, nullable=True),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("ts", sa.Double, nullable=False),
    # No foreign keys and no length limits: an event must never be refused by the database (it is
    # also recorded for unauthenticated requests, and a too-long header must not poison a batch).
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
    # (ts, id) is the keyset order of iter_events; id as trailing column makes each page an index scan
    sa.Index("ix_events_ts", "ts", "id"),
    sa.Index("ix_events_account_ts", "account_id", "ts", "id"),
)

# Public records of the watermark keys in use (never the secret: keys are re-derived from the master
# secret). A key id stays derivable forever, so rotation never invalidates old evidence.
watermark_keys = sa.Table(
    "watermark_keys",
    metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("ident", sa.String(200), nullable=False),
    sa.Column("scheme", sa.String(32), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("record", sa.JSON, nullable=False),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_watermark_keys_owner", "scope", "ident", "scheme", "version"),
)
