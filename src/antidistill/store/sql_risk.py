"""The risk tables' half of ``SqlStore`` (findings, risk state, decisions, worker cursors), as a
mixin: ``SqlStore`` provides ``_db``, ``_clock`` and the dialect's insert/upsert functions.
Validation and row conversion live in ``store/risk.py``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from antidistill.errors import InvalidRequestError
from antidistill.risk.types import Finding
from antidistill.store import risk
from antidistill.store.base import Decision, RiskState
from antidistill.store.codec import clean_text
from antidistill.store.engine import Database
from antidistill.store.schema import decisions, findings, risk_state, worker_cursors

_MAX_REASON = 10_000
# Postgres: record_decision serializes per subject on pg_advisory_xact_lock(class, hashtext(subject))
# (the two-int key space does not overlap the migration lock's bigint key)
_PG_DECISION_LOCK_CLASS = 0x61640001
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


class RiskTables:
    _db: Database
    _clock: Callable[[], float]
    _insert_findings: Callable[[Connection, list[dict[str, Any]]], list[int]]
    _upsert_states: Callable[[Connection, list[dict[str, Any]]], None]
    _upsert_cursor: Any
    dialect: str

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

    # worker leases ------------------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until now + ``ttl_s``; False while another
        holder's lease is live. Atomic (one conditional upsert), so of several workers (gateway
        replicas, ``antidistill analyze`` processes) exactly one holds it at a time. Kept in
        ``worker_cursors`` under ``lease:<name>`` (ts = expiry, event_id = holder)."""
        key = risk.check_cursor_name(f"lease:{name}")
        holder = risk.check_holder(holder)
        if not ttl_s > 0:
            raise InvalidRequestError("ttl_s must be > 0", param="ttl_s")
        now = self._clock()
        ins = risk.INSERTS[self.dialect](worker_cursors).values(
            name=key, ts=now + ttl_s, event_id=holder, updated_at=now
        )
        stmt = ins.on_conflict_do_update(
            index_elements=[worker_cursors.c.name],
            set_={"ts": ins.excluded.ts, "event_id": ins.excluded.event_id, "updated_at": now},
            where=sa.or_(worker_cursors.c.ts < now, worker_cursors.c.event_id == holder),
        ).returning(worker_cursors.c.name)
        with self._db.write() as conn:
            return conn.execute(stmt).first() is not None

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up at once (a clean stop), if ``holder`` still has it."""
        q = (
            worker_cursors.update()
            .where(worker_cursors.c.name == risk.check_cursor_name(f"lease:{name}"))
            .where(worker_cursors.c.event_id == holder)
            .values(ts=0.0, updated_at=self._clock())
        )
        with self._db.write() as conn:
            conn.execute(q)
