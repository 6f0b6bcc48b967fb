"""``SqlStore``: the Store protocol on SQLAlchemy Core, for SQLite and PostgreSQL alike.

Synchronous and thread-safe (a pooled connection per call; SQLite writes serialized in-process).
Nothing is cached: a revoked key fails authentication on the very next request, on every replica.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from antidistill.errors import InvalidRequestError, NotFoundError
from antidistill.risk.types import Finding
from antidistill.store import migrate as migrations
from antidistill.store import risk, tokens
from antidistill.store.base import (
    ACCOUNT_STATUSES,
    TIERS,
    Account,
    AlreadyExistsError,
    ApiKey,
    Decision,
    Event,
    RiskState,
)
from antidistill.store.codec import clean_text, event_to_row, row_to_event, rows_to_json
from antidistill.store.engine import Database
from antidistill.store.schema import (
    accounts,
    api_keys,
    decisions,
    events,
    findings,
    risk_state,
    watermark_keys,
    worker_cursors,
)

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
_MAX_REASON = 10_000
# Postgres: record_decision serializes per subject on pg_advisory_xact_lock(class, hashtext(subject))
# (the two-int key space does not overlap the migration lock's bigint key)
_PG_DECISION_LOCK_CLASS = 0x61640001


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
# Built once: the gateway's decision cache reads these for an account once per TTL.
_STATE_QUERY = risk_state.select().where(
    risk_state.c.subject_kind == "account", risk_state.c.subject_id == sa.bindparam("sid")
)
_ACTIVE_QUERY = (
    decisions.select()
    .where(decisions.c.subject_kind == "account", decisions.c.subject_id == sa.bindparam("sid"))
    .where(decisions.c.active)
    .order_by(decisions.c.id.desc())
    .limit(1)
)


class SqlStore:
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

    # risk: findings and risk state ---------------------------------------------------------------
    def record_findings(self, findings_: Sequence[Finding]) -> int:
        """Append ``findings_`` to the history and fold them into ``risk_state``, in one transaction.

        Per subject the state becomes its latest finding (highest ts; the later one on a tie), unless
        the stored state is newer (a late or replayed finding is kept in the history only).
        ``first_flagged_at`` is the ts of the subject's first flagged finding and is never
        overwritten. Returns the number of findings appended. InvalidRequestError (nothing written)
        if any finding is invalid: unknown subject_kind, score outside [0, 1], non-finite ts, ...
        """
        if not findings_:
            return 0
        rows = [risk.finding_to_row(f) for f in findings_]
        with self._db.write() as conn:
            ids = self._insert_findings(conn, rows)
            self._upsert_states(conn, risk.latest_states(rows, ids, self._clock()))
        return len(ids)

    def risk_state(self, subject_kind: str, subject_id: str) -> RiskState | None:
        kind, sid = risk.subject(subject_kind, subject_id)
        q = risk_state.select().where(risk_state.c.subject_kind == kind, risk_state.c.subject_id == sid)
        with self._db.read() as conn:
            row = conn.execute(q).mappings().first()
        return None if row is None else risk.row_to_state(row)

    def top_risk(
        self, subject_kind: str, limit: int = 50, offset: int = 0, flagged_only: bool = False
    ) -> list[RiskState]:
        """Risk states by score, highest first (ties: subject_id descending, the index order)."""
        kind = risk.subject_kind(subject_kind)
        q = (
            risk_state.select()
            .where(risk_state.c.subject_kind == kind)
            .order_by(risk_state.c.score.desc(), risk_state.c.subject_id.desc())
            .limit(max(0, limit))
            .offset(max(0, offset))
        )
        if flagged_only:
            q = q.where(risk_state.c.flagged)
        with self._db.read() as conn:
            return [risk.row_to_state(r) for r in conn.execute(q).mappings()]

    def findings_with_ids(
        self, subject_kind: str, subject_id: str, limit: int = 100
    ) -> list[tuple[int, Finding]]:
        """A subject's findings with their ids (for ``record_decision(finding_id=...)``), newest first."""
        kind, sid = risk.subject(subject_kind, subject_id)
        q = (
            findings.select()
            .where(findings.c.subject_kind == kind, findings.c.subject_id == sid)
            .order_by(findings.c.ts.desc(), findings.c.id.desc())
            .limit(max(0, limit))
        )
        with self._db.read() as conn:
            return [(int(r["id"]), risk.row_to_finding(r)) for r in conn.execute(q).mappings()]

    def findings_for(self, subject_kind: str, subject_id: str, limit: int = 100) -> list[Finding]:
        """A subject's findings, newest first (by ts, then by insertion)."""
        return [f for _, f in self.findings_with_ids(subject_kind, subject_id, limit)]

    def count_flagged(self, subject_kind: str) -> int:
        kind = risk.subject_kind(subject_kind)
        q = sa.select(sa.func.count()).select_from(risk_state)
        q = q.where(risk_state.c.subject_kind == kind, risk_state.c.flagged)
        with self._db.read() as conn:
            return int(conn.execute(q).scalar_one())

    # risk: decisions -----------------------------------------------------------------------------
    def record_decision(
        self,
        subject_kind: str,
        subject_id: str,
        action: str,
        actor: str,
        reason: str,
        finding_id: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Decision:
        """A new active decision. The subject's active decision, if any, is superseded in the same
        transaction (inactive, reversed_at = now, reversed_by = ``actor``): at most one decision is
        active per subject, also under concurrent callers (a partial unique index guards it)."""
        decision = self._write_decision(subject_kind, subject_id, action, actor, reason, finding_id, params)
        assert decision is not None
        return decision

    def record_engine_decision(
        self,
        subject_kind: str,
        subject_id: str,
        action: str,
        reason: str,
        finding_id: int | None = None,
        params: dict[str, Any] | None = None,
        *,
        finding_ts: float | None = None,
    ) -> Decision | None:
        """``record_decision`` by the engine unless it changes nothing or overrules an operator (see
        the Store protocol); None when nothing was written."""

        def keep(active: Decision) -> bool:
            if active.actor.startswith(risk.OPERATOR_PREFIX):
                return active.action != "reset" or finding_ts is None or finding_ts <= active.ts
            return active.action == action and active.params == (params or {})

        return self._write_decision(
            subject_kind, subject_id, action, risk.ENGINE_ACTOR, reason, finding_id, params, keep=keep
        )

    def _write_decision(
        self,
        subject_kind: str,
        subject_id: str,
        action: str,
        actor: str,
        reason: str,
        finding_id: int | None,
        params: dict[str, Any] | None,
        keep: Callable[[Decision], bool] | None = None,
    ) -> Decision | None:
        kind, sid = risk.subject(subject_kind, subject_id)
        action = risk.check_action(action)
        actor = risk.check_actor(actor)
        if not isinstance(reason, str) or len(reason) > _MAX_REASON:
            raise InvalidRequestError(
                f"reason must be a string of at most {_MAX_REASON} characters", param="reason"
            )
        if finding_id is not None:
            finding_id = risk.check_id(finding_id, "finding_id")
        if params is not None and not isinstance(params, dict):
            raise InvalidRequestError("params must be a JSON object", param="params")
        decision = Decision(
            id=0,
            ts=self._clock(),
            subject_kind=kind,
            subject_id=sid,
            action=action,
            actor=actor,
            reason=clean_text(reason),
            finding_id=finding_id,
            params=dict(params or {}),
            active=True,
            reversed_at=None,
            reversed_by=None,
        )
        same_subject = (decisions.c.subject_kind == kind) & (decisions.c.subject_id == sid)
        with self._db.write() as conn:
            if self.dialect == "postgresql":
                lock_key = sa.func.hashtext(f"{kind}:{sid}")
                lock_class = sa.cast(sa.literal(_PG_DECISION_LOCK_CLASS), sa.Integer)
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_class, lock_key)))
            if keep is not None:
                active = decisions.select().where(same_subject, decisions.c.active)
                row = conn.execute(active).mappings().first()
                if row is not None and keep(risk.row_to_decision(row)):
                    return None
            conn.execute(
                decisions.update()
                .where(same_subject, decisions.c.active)
                .values(active=False, reversed_at=decision.ts, reversed_by=actor)
            )
            values = {f.name: getattr(decision, f.name) for f in dataclasses.fields(Decision)}
            del values["id"]
            new_id = conn.execute(decisions.insert().values(**values).returning(decisions.c.id)).scalar_one()
        return dataclasses.replace(decision, id=int(new_id))

    def account_risk(self, account_id: str) -> tuple[RiskState | None, Decision | None]:
        """``risk_state("account", id)`` and ``active_decision("account", id)`` in one go (the
        gateway's hot path on a decision-cache miss)."""
        _, sid = risk.subject("account", account_id)
        with self._db.read() as conn:
            state = conn.execute(_STATE_QUERY, {"sid": sid}).mappings().first()
            active = conn.execute(_ACTIVE_QUERY, {"sid": sid}).mappings().first()
        return (
            None if state is None else risk.row_to_state(state),
            None if active is None else risk.row_to_decision(active),
        )

    def active_decision(self, subject_kind: str, subject_id: str) -> Decision | None:
        kind, sid = risk.subject(subject_kind, subject_id)
        q = decisions.select().where(
            decisions.c.subject_kind == kind, decisions.c.subject_id == sid, decisions.c.active
        )
        with self._db.read() as conn:
            row = conn.execute(q.order_by(decisions.c.id.desc()).limit(1)).mappings().first()
        return None if row is None else risk.row_to_decision(row)

    def decisions_for(self, subject_kind: str, subject_id: str, limit: int = 100) -> list[Decision]:
        """A subject's decisions, newest first (active or not)."""
        kind, sid = risk.subject(subject_kind, subject_id)
        q = (
            decisions.select()
            .where(decisions.c.subject_kind == kind, decisions.c.subject_id == sid)
            .order_by(decisions.c.ts.desc(), decisions.c.id.desc())
            .limit(max(0, limit))
        )
        with self._db.read() as conn:
            return [risk.row_to_decision(r) for r in conn.execute(q).mappings()]

    def reverse_decision(self, decision_id: int, actor: str) -> bool:
        """Deactivate an active decision (the subject then has none: the previous one is not
        restored). False if the id is unknown or the decision is no longer active."""
        decision_id = risk.check_id(decision_id, "decision_id")
        actor = risk.check_actor(actor)
        q = (
            decisions.update()
            .where(decisions.c.id == decision_id, decisions.c.active)
            .values(active=False, reversed_at=self._clock(), reversed_by=actor)
        )
        with self._db.write() as conn:
            return conn.execute(q).rowcount == 1

    # worker cursors ------------------------------------------------------------------------------
    def get_cursor(self, name: str) -> tuple[float, str] | None:
        """The (ts, event_id) a worker stored with ``set_cursor``; pass it as ``iter_events(after=)``."""
        q = sa.select(worker_cursors.c.ts, worker_cursors.c.event_id)
        q = q.where(worker_cursors.c.name == risk.check_cursor_name(name))
        with self._db.read() as conn:
            row = conn.execute(q).first()
        return None if row is None else (row[0], row[1])

    def set_cursor(self, name: str, ts: float, event_id: str) -> None:
        """Store (create or move, also backwards) the position of worker ``name`` in the event log."""
        name = risk.check_cursor_name(name)
        ts, event_id = risk.check_cursor(ts, event_id)
        with self._db.write() as conn:
            row = {"name": name, "ts": ts, "event_id": event_id, "updated_at": self._clock()}
            conn.execute(self._upsert_cursor, row)
