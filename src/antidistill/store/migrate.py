"""Programmatic alembic: ``upgrade head`` on an open connection, no alembic.ini at run time.

The migration scripts ship inside the package (store/migrations), so an installed wheel can
migrate its own database. ``SqlStore.migrate()`` calls :func:`upgrade` inside one write
transaction (on PostgreSQL after taking an advisory lock, so that replicas starting together do
not race), which makes it idempotent and safe to call on every start.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# an arbitrary constant: the key of pg_advisory_xact_lock taken while migrating
PG_MIGRATION_LOCK_KEY = 0x616E7469_6469_7374  # "antidist"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Upgrade the database behind ``connection`` (inside its transaction) to ``revision``."""
    command.upgrade(alembic_config(connection), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
