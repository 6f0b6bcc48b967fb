"""``SqlStore``: the Store protocol on SQLAlchemy Core, for SQLite and PostgreSQL alike.

Synchronous and thread-safe (a pooled connection per call; SQLite writes serialized in-process).
Nothing is cached: a revoked key fails authentication on the very next request, on every replica.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from antidistill.errors import InvalidRequestError, NotFoundError
from antidistill.store import migrate as migrations
from antidistill.store import risk, tokens
from antidistill.store.base import (
    ACCOUNT_STATUSES,
    TIERS,
    Account,
    AlreadyExistsError,
    ApiKey,
    Event,
)
from antidistill.store.codec import event_to_row, row_to_event, rows_to_json
from antidistill.store.dashboard import DashboardQueries
from antidistill.store.engine import Database
from antidistill.store.schema import (
    accounts,
    api_keys,
    events,
    watermark_keys,
)
from antidistill.store.sql_risk import RiskTables

_MAX_NAME = 200
_KEY_ID_ATTEMPTS = 5
_EVENT_COLUMNS = [c.name for c in events.c]
# Postgres: the whole batch is ONE json parameter expanded server-side. A multi-row VALUES with
# 19 parameters per row is parsed by the driver on every call and caps inserts at ~2k rows/s.
_pg_rows = sa.func.json_populate_recordset(
    sa.literal_column("NULL::events"), sa.cast(sa.bindparam("rows", type_=sa.Text), postgresql.JSON)
).table_valued(*_EVENT_COLUMNS)
_PG_INSERT_EVENTS = (
    postgresql.insert(events)
    .from_select(_EVENT_COLUMNS, sa.select(*(_pg_rows.c[name] for name in _EVENT_COLUMNS)))
    .on_conflict_do_nothing(index_elements=["id"])
    .returning(events.c.id)
)
_SQLITE_INSERT_EVENTS = (
    sqlite.insert(events).on_conflict_do_nothing(index_elements=["id"]).returning(events.c.id)
)


def _insert_rows_sqlite(conn: Connection, rows: list[dict[str, Any]]) -> int:
    return len(conn.execute(_SQLITE_INSERT_EVENTS, rows).all())


def _insert_rows_postgres(conn: Connection, rows: list[dict[str, Any]]) -> int:
    return len(conn.execute(_PG_INSERT_EVENTS, {"rows": rows_to_json(rows)}).all())


# how each engine inserts a batch of event rows, skipping ids already present; returns rows added
_EVENT_INSERTERS: dict[str, Callable[[Connection, list[dict[str, Any]]], int]] = {
    "sqlite": _insert_rows_sqlite,
    "postgresql": _insert_rows_postgres,
}


def _account(row: Any) -> Account:
    return Account(
        id=row["id"],
        name=row["name"],
        tier=row["tier"],
        created_at=row["created_at"],
        metadata=dict(row["metadata"] or {}),
        status=row["status"],
    )


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        id=row["id"],
        account_id=row["account_id"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        label=row["label"],
    )


def _check_tier(tier: str) -> None:
    if tier not in TIERS:
        raise InvalidRequestError(f"tier must be one of {', '.join(TIERS)} (got {tier!r})", param="tier")


# Built once: authenticate() is on every request's hot path.
_AUTH_QUERY = (
    sa.select(api_keys, *(c.label(f"acct__{c.name}") for c in accounts.c))
    .join(accounts, accounts.c.id == api_keys.c.account_id)
    .where(api_keys.c.id == sa.bindparam("key_id"))
)


class SqlStore(RiskTables, DashboardQueries):
    """Accounts, API keys, events, risk findings and decisions in one SQL database (see the module
    docstring)."""

    def __init__(
        self, url: str, *, schema: str | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = Database(url, schema)
        self._clock = clock
        self._insert_rows = _EVENT_INSERTERS[self._db.dialect]
        self._insert_findings = risk.FINDING_INSERTERS[self._db.dialect]
        self._upsert_states = risk.STATE_UPSERTERS[self._db.dialect]
        self._upsert_cursor = risk.cursor_upsert(self._db.dialect)
        self.url = self._db.url  # password hidden: safe to log
        self.dialect = self._db.dialect
        # SQLite reads are local, short and never wait on writers (WAL): callers may run them inline
        self.inline_reads = self.dialect == "sqlite"
        self.schema = self._db.schema

    def migrate(self, revision: str = "head") -> None:
        """Upgrade to ``revision`` (the latest by default; an older one is for upgrade tests)."""
        with self._db.write() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(migrations.PG_MIGRATION_LOCK_KEY)))
                if self.schema is not None:
                    conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
            migrations.upgrade(conn, revision)

    def close(self) -> None:
        self._db.dispose()

    # accounts ------------------------------------------------------------------------------
    def create_account(
        self, name: str, tier: str = "standard", metadata: dict[str, Any] | None = None
    ) -> Account:
        if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME:
            raise InvalidRequestError(f"account name must be 1-{_MAX_NAME} characters", param="name")
        _check_tier(tier)
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidRequestError("metadata must be a JSON object", param="metadata")
        account = Account(
            id=f"acct_{secrets.token_hex(8)}",
            name=name,
            tier=tier,
            created_at=self._clock(),
            metadata=dict(metadata or {}),
        )
        with self._db.write() as conn:
            try:
                conn.execute(
                    accounts.insert().values(
                        id=account.id,
                        name=account.name,
                        tier=account.tier,
                        status=account.status,
                        metadata=account.metadata,
                        created_at=account.created_at,
                    )
                )
            except exc.IntegrityError as e:
                raise AlreadyExistsError(f"an account named {name!r} already exists", param="name") from e
        return account

    def get_account(self, account_id_or_name: str) -> Account | None:
        key = account_id_or_name
        with self._db.read() as conn:
            rows = conn.execute(accounts.select().where((accounts.c.id == key) | (accounts.c.name == key)))
            found = [_account(r) for r in rows.mappings()]
        # an id match wins over a name match (another account may be *named* like this id)
        found.sort(key=lambda a: a.id != key)
        return found[0] if found else None

    def list_accounts(self, limit: int = 1000, offset: int = 0) -> list[Account]:
        q = accounts.select().order_by(accounts.c.created_at, accounts.c.id)
        with self._db.read() as conn:
            return [
                _account(r) for r in conn.execute(q.limit(max(0, limit)).offset(max(0, offset))).mappings()
            ]

    def update_account(
        self,
        account_id: str,
        *,
        tier: str | None = None,
        status: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Account:
        """Change tier, status (active | blocked) and/or metadata; NotFoundError if unknown."""
        values: dict[str, Any] = {}
        if tier is not None:
            _check_tier(tier)
            values["tier"] = tier
        if status is not None:
            if status not in ACCOUNT_STATUSES:
                raise InvalidRequestError(
                    f"status must be one of {', '.join(ACCOUNT_STATUSES)}", param="status"
                )
            values["status"] = status
        if metadata is not None:
            values["metadata"] = dict(metadata)
        with self._db.write() as conn:
            if values:
                conn.execute(accounts.update().where(accounts.c.id == account_id).values(**values))
            row = conn.execute(accounts.select().where(accounts.c.id == account_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no account with id {account_id!r}")
        return _account(row)

    # API keys ------------------------------------------------------------------------------
    def create_api_key(self, account_id: str, label: str = "") -> tuple[str, ApiKey]:
        label = str(label)[:_MAX_NAME]
        with self._db.write() as conn:
            if conn.execute(sa.select(accounts.c.id).where(accounts.c.id == account_id)).first() is None:
                raise NotFoundError(f"no account with id {account_id!r}")
            for _ in range(_KEY_ID_ATTEMPTS):  # 48-bit ids: a collision is rare, never fatal
                key_id, secret = tokens.new_key_id(), tokens.new_secret()
                taken = conn.execute(sa.select(api_keys.c.id).where(api_keys.c.id == key_id)).first()
                if taken is None:
                    break
            key = ApiKey(
                id=key_id, account_id=account_id, created_at=self._clock(), revoked_at=None, label=label
            )
            conn.execute(
                api_keys.insert().values(
                    id=key.id,
                    account_id=key.account_id,
                    hash=tokens.hash_secret(secret),
                    label=key.label,
                    created_at=key.created_at,
                    revoked_at=None,
                )
            )
        return tokens.format_token(key_id, secret), key

    def authenticate(self, token: str) -> tuple[ApiKey, Account] | None:
        parsed = tokens.parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        with self._db.read() as conn:
            row = conn.execute(_AUTH_QUERY, {"key_id": key_id}).mappings().first()
        if not tokens.secret_matches(row["hash"] if row is not None else None, secret):
            return None
        assert row is not None  # secret_matches is False without a row
        if row["revoked_at"] is not None:
            return None
        account = _account({c.name: row[f"acct__{c.name}"] for c in accounts.c})
        return _api_key(row), account

    def revoke_api_key(self, key_id: str) -> bool:
        q = (
            api_keys.update()
            .where(api_keys.c.id == str(key_id), api_keys.c.revoked_at.is_(None))
            .values(revoked_at=self._clock())
        )
        with self._db.write() as conn:
            return conn.execute(q).rowcount == 1

    def list_api_keys(self, account_id: str | None = None) -> list[ApiKey]:
        q = api_keys.select().order_by(api_keys.c.created_at, api_keys.c.id)
        if account_id is not None:
            q = q.where(api_keys.c.account_id == account_id)
        with self._db.read() as conn:
            return [_api_key(r) for r in conn.execute(q).mappings()]

    # events --------------------------------------------------------------------------------
    def insert_events(self, events_: Sequence[Event]) -> int:
        if not events_:
            return 0
        rows = [event_to_row(e) for e in events_]
        with self._db.write() as conn:
            return self._insert_rows(conn, rows)

    def count_events(self, account_id: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(events)
        if account_id is not None:
            q = q.where(events.c.account_id == account_id)
        with self._db.read() as conn:
            return int(conn.execute(q).scalar_one())

    def iter_events(
        self,
        since_ts: float | None = None,
        account_id: str | None = None,
        batch: int = 1000,
        *,
        after: tuple[float, str] | None = None,
    ) -> Iterator[Event]:
        """Events in (ts, id) order, one keyset page per short read (no transaction held between
        pages, so a long consumer never blocks writers or pins a connection). ``after=(ts, id)``
        (e.g. a worker cursor) starts strictly after that event."""
        base = events.select().order_by(events.c.ts, events.c.id).limit(max(1, batch))
        if since_ts is not None:
            base = base.where(events.c.ts >= since_ts)
        if account_id is not None:
            base = base.where(events.c.account_id == account_id)
        if after is not None:
            after = risk.check_cursor(*after)
        while True:
            q = base if after is None else base.where(sa.tuple_(events.c.ts, events.c.id) > sa.tuple_(*after))
            with self._db.read() as conn:
                page = [row_to_event(r) for r in conn.execute(q).mappings()]
            yield from page
            if len(page) < max(1, batch):
                return
            after = (page[-1].ts, page[-1].id)

    # for tests and tools -------------------------------------------------------------------
    def connect(self) -> Connection:
        """A raw connection (tests read raw rows with it). The caller closes it."""
        with self._db.errors():
            return self._db.engine.connect()

    def schema_revision(self) -> str | None:
        with self._db.read() as conn:
            return migrations.current_revision(conn)

    # watermark key records ---------------------------------------------------------------------
    def record_watermark_key(self, record: dict[str, Any], config_hash: str) -> bool:
        """Keep the public record of a key in use (idempotent by key_id). True if it was new."""
        row = {
            "key_id": record["key_id"],
            "scope": record["scope"],
            "ident": record["ident"],
            "scheme": record["scheme"],
            "version": int(record["version"]),
            "record": record,
            "config_hash": config_hash,
            "created_at": self._clock(),
        }
        with self._db.write() as conn:
            if conn.execute(
                sa.select(watermark_keys.c.key_id).where(watermark_keys.c.key_id == row["key_id"])
            ).first():
                return False
            conn.execute(watermark_keys.insert().values(**row))
            return True

    def watermark_key_records(
        self, scope: str | None = None, ident: str | None = None
    ) -> list[dict[str, Any]]:
        """Public key records, oldest first (each has key_id, scope, ident, scheme, version, ...)."""
        q = sa.select(watermark_keys.c.record).order_by(watermark_keys.c.created_at, watermark_keys.c.key_id)
        if scope is not None:
            q = q.where(watermark_keys.c.scope == scope)
        if ident is not None:
            q = q.where(watermark_keys.c.ident == ident)
        with self._db.read() as conn:
            return [dict(r[0]) for r in conn.execute(q)]
