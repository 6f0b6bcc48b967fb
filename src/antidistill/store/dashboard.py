"""Read-only queries of the operators' dashboard (``antidistill.dashboard``), as a mixin of ``SqlStore``.

Every query is bounded and served by an index, so that pages stay fast on 100k accounts and 10M
events (``benchmarks/dashboard_pages.py``):

* time series count rows per bucket over a bounded time range of ``ix_events_ts`` /
  ``ix_events_account_ts`` (index-only on Postgres), ``ix_risk_state_first_flagged`` and
  ``ix_decisions_ts`` (migration 0004);
* a cluster's members come from ``risk_state.cluster`` (``ix_risk_state_cluster``): an account's
  latest finding names the cluster the engine put it in;
* an account's events are read newest first through ``ix_events_account_ts`` with a keyset cursor;
* first / last seen of many accounts is two index probes per account (correlated ``min``/``max``);
* live updates read findings after an id (primary key).

Nothing here writes; decisions go through ``antidistill.policy.operator``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from antidistill.store import risk
from antidistill.store.base import Account, Event, RiskState
from antidistill.store.codec import row_to_event
from antidistill.store.schema import accounts, decisions, events, findings, risk_state

if TYPE_CHECKING:
    from antidistill.risk.types import Finding
    from antidistill.store.engine import Database

MAX_BUCKETS = 2000
MAX_PAGE = 1000
MAX_ACCOUNTS_PER_QUERY = 2000


def _bucket_expr(dialect: str, column: Any, bucket_s: float) -> Any:
    """``floor(column / bucket_s)`` on both engines (SQLite has no floor without its math extension;
    a cast truncates, which is the floor for the positive epoch times stored here)."""
    if dialect == "postgresql":
        return sa.func.floor(column / bucket_s)
    return sa.cast(column / bucket_s, sa.Integer)


def _newest_first(account_id: str) -> Any:
    return (
        events.select()
        .where(events.c.account_id == account_id)
        .order_by(events.c.ts.desc(), events.c.id.desc())
    )


# first / last event of many accounts: correlated min/max, each an index probe of ix_events_account_ts
_SPAN_COLUMNS = """(SELECT min(e.ts) FROM events e WHERE e.account_id = ids.aid),
       (SELECT max(e.ts) FROM events e WHERE e.account_id = ids.aid)"""
_PG_SPAN = sa.text(f"SELECT ids.aid, {_SPAN_COLUMNS} FROM unnest(CAST(:ids AS text[])) AS ids(aid)")
_SQLITE_SPAN = sa.text(
    f"SELECT ids.aid, {_SPAN_COLUMNS} FROM (SELECT value AS aid FROM json_each(:ids)) AS ids"
)
# the latest k events of many accounts: one LATERAL index scan per account (Postgres)
_PG_LATEST = sa.text(
    "SELECT e.* FROM unnest(CAST(:ids AS text[])) AS ids(aid) CROSS JOIN LATERAL "
    "(SELECT * FROM events WHERE account_id = ids.aid ORDER BY ts DESC, id DESC LIMIT :k) AS e"
)


def _check_range(since: float, until: float, bucket_s: float) -> None:
    if not (bucket_s > 0 and until > since):
        raise ValueError("need bucket_s > 0 and until > since")
    if (until - since) / bucket_s > MAX_BUCKETS:
        raise ValueError(f"at most {MAX_BUCKETS} buckets per series")


class DashboardQueries:
    """Mixin of ``SqlStore``: the dashboard's read queries (see the module docstring)."""

    _db: Database
    dialect: str

    # -- time series -----------------------------------------------------------------------------
    def event_counts(
        self, since: float, until: float, bucket_s: float, account_id: str | None = None
    ) -> list[tuple[float, int]]:
        """(bucket start, events) for the non-empty buckets of [since, until), oldest first."""
        _check_range(since, until, bucket_s)
        bucket = _bucket_expr(self.dialect, events.c.ts, bucket_s).label("b")
        q = sa.select(bucket, sa.func.count()).where(events.c.ts >= since, events.c.ts < until)
        if account_id is not None:
            q = q.where(events.c.account_id == account_id)
        q = q.group_by(bucket).order_by(bucket)
        with self._db.read() as conn:
            return [(float(b) * bucket_s, int(n)) for b, n in conn.execute(q)]

    def flagged_counts(
        self, subject_kind: str, since: float, until: float, bucket_s: float
    ) -> list[tuple[float, int]]:
        """(bucket start, subjects first flagged in it), from ``risk_state.first_flagged_at``."""
        _check_range(since, until, bucket_s)
        kind = risk.subject_kind(subject_kind)
        col = risk_state.c.first_flagged_at
        bucket = _bucket_expr(self.dialect, col, bucket_s).label("b")
        q = (
            sa.select(bucket, sa.func.count())
            .where(risk_state.c.subject_kind == kind, col >= since, col < until)
            .group_by(bucket)
            .order_by(bucket)
        )
        with self._db.read() as conn:
            return [(float(b) * bucket_s, int(n)) for b, n in conn.execute(q)]

    def decision_counts(self, since: float, until: float, bucket_s: float) -> list[tuple[float, str, int]]:
        """(bucket start, action, decisions) recorded in [since, until), by the engine or operators."""
        _check_range(since, until, bucket_s)
        bucket = _bucket_expr(self.dialect, decisions.c.ts, bucket_s).label("b")
        q = (
            sa.select(bucket, decisions.c.action, sa.func.count())
            .where(decisions.c.ts >= since, decisions.c.ts < until)
            .group_by(bucket, decisions.c.action)
            .order_by(bucket)
        )
        with self._db.read() as conn:
            return [(float(b) * bucket_s, str(a), int(n)) for b, a, n in conn.execute(q)]

    # -- lists -------------------------------------------------------------------------------------
    def top_volume(self, subject_kind: str, limit: int = 10, offset: int = 0) -> list[RiskState]:
        """Risk states by requests seen (the engine's pooled volume for a cluster), largest first."""
        kind = risk.subject_kind(subject_kind)
        q = (
            risk_state.select()
            .where(risk_state.c.subject_kind == kind)
            .order_by(risk_state.c.requests_seen.desc(), risk_state.c.subject_id.desc())
            .limit(max(0, min(limit, MAX_PAGE)))
            .offset(max(0, offset))
        )
        with self._db.read() as conn:
            return [risk.row_to_state(r) for r in conn.execute(q).mappings()]

    def count_subjects(self, subject_kind: str) -> int:
        kind = risk.subject_kind(subject_kind)
        q = sa.select(sa.func.count()).select_from(risk_state).where(risk_state.c.subject_kind == kind)
        with self._db.read() as conn:
            return int(conn.execute(q).scalar_one())

    def recent_decisions(self, limit: int = 20) -> list[Any]:
        """The latest decisions on any subject, newest first."""
        q = decisions.select().order_by(decisions.c.ts.desc(), decisions.c.id.desc())
        q = q.limit(max(0, min(limit, MAX_PAGE)))
        with self._db.read() as conn:
            return [risk.row_to_decision(r) for r in conn.execute(q).mappings()]

    def findings_after(self, after_id: int, limit: int = 50) -> list[tuple[int, Finding]]:
        """Findings with an id above ``after_id``, oldest first (the live feed's cursor)."""
        q = findings.select().where(findings.c.id > int(after_id)).order_by(findings.c.id)
        q = q.limit(max(0, min(limit, MAX_PAGE)))
        with self._db.read() as conn:
            return [(int(r["id"]), risk.row_to_finding(r)) for r in conn.execute(q).mappings()]

    def last_finding_id(self) -> int:
        with self._db.read() as conn:
            return int(conn.execute(sa.select(sa.func.max(findings.c.id))).scalar_one() or 0)

    # -- clusters ----------------------------------------------------------------------------------
    def cluster_members(self, cluster: str, limit: int = 50, offset: int = 0) -> list[RiskState]:
        """Accounts whose latest finding puts them in ``cluster``, highest score first."""
        q = (
            risk_state.select()
            .where(risk_state.c.cluster == str(cluster), risk_state.c.subject_kind == "account")
            .order_by(risk_state.c.score.desc(), risk_state.c.subject_id)
            .limit(max(0, min(limit, MAX_ACCOUNTS_PER_QUERY)))
            .offset(max(0, offset))
        )
        with self._db.read() as conn:
            return [risk.row_to_state(r) for r in conn.execute(q).mappings()]

    def count_cluster_members(self, cluster: str) -> int:
        q = sa.select(sa.func.count()).select_from(risk_state)
        q = q.where(risk_state.c.cluster == str(cluster), risk_state.c.subject_kind == "account")
        with self._db.read() as conn:
            return int(conn.execute(q).scalar_one())

    # -- accounts ----------------------------------------------------------------------------------
    def accounts_by_ids(self, ids: Sequence[str]) -> dict[str, Account]:
        """``{id: Account}`` for the ids that exist (at most MAX_ACCOUNTS_PER_QUERY)."""
        wanted = list(dict.fromkeys(ids))[:MAX_ACCOUNTS_PER_QUERY]
        if not wanted:
            return {}
        with self._db.read() as conn:
            rows = conn.execute(accounts.select().where(accounts.c.id.in_(wanted))).mappings()
            return {
                r["id"]: Account(
                    id=r["id"],
                    name=r["name"],
                    tier=r["tier"],
                    created_at=r["created_at"],
                    metadata=dict(r["metadata"] or {}),
                    status=r["status"],
                )
                for r in rows
            }

    def activity_span(self, ids: Sequence[str]) -> dict[str, tuple[float | None, float | None]]:
        """``{account: (first event ts, last event ts)}``: two index probes per account in one
        statement (the ids travel as one array / JSON parameter), never a scan of their events."""
        wanted = list(dict.fromkeys(ids))[:MAX_ACCOUNTS_PER_QUERY]
        if not wanted:
            return {}
        with self._db.read() as conn:
            if self.dialect == "postgresql":
                rows = conn.execute(_PG_SPAN, {"ids": wanted})
            else:
                rows = conn.execute(_SQLITE_SPAN, {"ids": json.dumps(wanted)})
            return {aid: (lo, hi) for aid, lo, hi in rows}

    def latest_events(self, ids: Sequence[str], per_account: int) -> dict[str, list[Event]]:
        """Each account's ``per_account`` latest events (newest first), in one read."""
        wanted = list(dict.fromkeys(ids))[:MAX_ACCOUNTS_PER_QUERY]
        out: dict[str, list[Event]] = {a: [] for a in wanted}
        if not wanted or per_account <= 0:
            return out
        with self._db.read() as conn:
            if self.dialect == "postgresql":
                rows = conn.execute(_PG_LATEST, {"ids": wanted, "k": min(per_account, MAX_PAGE)}).mappings()
                for r in rows:
                    out[r["account_id"]].append(row_to_event(r))
            else:
                for a in wanted:
                    q = _newest_first(a).limit(min(per_account, MAX_PAGE))
                    out[a] = [row_to_event(r) for r in conn.execute(q).mappings()]
        return out

    def account_events(
        self, account_id: str, limit: int = 20, before: tuple[float, str] | None = None
    ) -> list[Event]:
        """An account's events, newest first; ``before=(ts, id)`` continues an older page."""
        q = _newest_first(account_id).limit(max(0, min(limit, MAX_PAGE)))
        if before is not None:
            ts, eid = risk.check_cursor(*before)
            q = q.where(sa.tuple_(events.c.ts, events.c.id) < sa.tuple_(sa.literal(ts), sa.literal(eid)))
        with self._db.read() as conn:
            return [row_to_event(r) for r in conn.execute(q).mappings()]
