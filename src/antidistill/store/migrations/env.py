"""Alembic environment of the store, driven programmatically by ``antidistill.store.migrate``.

``Store.migrate()`` passes its open connection (already inside a transaction) through
``config.attributes["connection"]``. For developers writing a new revision with the alembic CLI,
``sqlalchemy.url`` in the alembic config is used instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from antidistill.store.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("run migrations through Store.migrate() or set sqlalchemy.url")
    from antidistill.store.engine import Database

    db = Database(url)
    try:
        with db.write() as conn:
            _run(conn)
    finally:
        db.dispose()


main()
