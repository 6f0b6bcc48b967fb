"""Rows of the risk tables (findings, risk_state, decisions, worker_cursors): validation, conversion
to and from database rows, and the upsert that folds a batch of findings into ``risk_state``.

Validation raises InvalidRequestError before any database work, so a bad value never reaches (and
never half-commits) a transaction. Numbers from numpy and friends are converted to plain Python
types here, since the JSON columns could not encode them otherwise.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from antidistill.errors import InvalidRequestError
from antidistill.risk.types import Finding, SubjectKind
from antidistill.store.base import DECISION_ACTIONS, SUBJECT_KINDS, Decision, RiskState
from antidistill.store.codec import clean_text, dumps_json
from antidistill.store.schema import findings, risk_state, worker_cursors

MAX_SUBJECT_ID = 256  # risk_state.subject_id is String(256)
MAX_ACTOR = 256
MAX_CURSOR_NAME = 200
ENGINE_ACTOR = "engine"
OPERATOR_PREFIX = "operator:"


def subject_kind(kind: object) -> SubjectKind:
    if kind == "account":
        return "account"
    if kind == "cluster":
        return "cluster"
    raise InvalidRequestError(
        f"subject_kind must be one of {', '.join(SUBJECT_KINDS)} (got {kind!r:.80})", param="subject_kind"
    )


def subject(kind: object, subject_id: object) -> tuple[SubjectKind, str]:
    """A valid (subject_kind, subject_id), the id cleaned the way every engine stores it."""
    if not isinstance(subject_id, str) or not subject_id or len(subject_id) > MAX_SUBJECT_ID:
        raise InvalidRequestError(
            f"subject_id must be a string of 1-{MAX_SUBJECT_ID} characters (got {subject_id!r:.80})",
            param="subject_id",
        )
    return subject_kind(kind), clean_text(subject_id)


def _number(value: object, name: str) -> float:
    if type(value) is float:  # the common case, without the (slow) ABC check
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    raise InvalidRequestError(f"{name} must be a number (got {value!r:.80})", param=name)


def _finite(value: object, name: str) -> float:
    number = _number(value, name)
    if not math.isfinite(number):
        raise InvalidRequestError(f"{name} must be a finite number (got {value!r})", param=name)
    return number


def check_score(value: object) -> float:
    score = _number(value, "score")
    if not 0.0 <= score <= 1.0:  # also refuses NaN
        raise InvalidRequestError(f"score must be in [0, 1] (got {value!r})", param="score")
    return score


def check_action(action: object) -> str:
    if action not in DECISION_ACTIONS:
        raise InvalidRequestError(
            f"action must be one of {', '.join(DECISION_ACTIONS)} (got {action!r:.80})", param="action"
        )
    return str(action)


def check_actor(actor: object) -> str:
    ok = (
        isinstance(actor, str)
        and len(actor) <= MAX_ACTOR
        and (
            actor == ENGINE_ACTOR
            or (actor.startswith(OPERATOR_PREFIX) and actor[len(OPERATOR_PREFIX) :].strip())
        )
    )
    if not ok:
        raise InvalidRequestError(
            f"actor must be {ENGINE_ACTOR!r} or '{OPERATOR_PREFIX}<name>' (got {actor!r:.80})", param="actor"
        )
    assert isinstance(actor, str)
    return clean_text(actor)


def check_id(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidRequestError(f"{name} must be an integer id (got {value!r:.80})", param=name)
    return int(value)


def check_cursor_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_CURSOR_NAME:
        raise InvalidRequestError(
            f"cursor name must be a string of 1-{MAX_CURSOR_NAME} characters (got {name!r:.80})", param="name"
        )
    return clean_text(name)


def check_holder(holder: object) -> str:
    if not isinstance(holder, str) or not holder.strip() or len(holder) > MAX_ACTOR:
        raise InvalidRequestError(f"lease holder must be 1-{MAX_ACTOR} characters", param="holder")
    return clean_text(holder)


def check_cursor(ts: object, event_id: object) -> tuple[float, str]:
    if not isinstance(event_id, str) or not event_id:
        raise InvalidRequestError(
            f"event_id must be a non-empty string (got {event_id!r:.80})", param="event_id"
        )
    return _finite(ts, "ts"), clean_text(event_id)


# findings --------------------------------------------------------------------------------------
def finding_to_row(f: Finding) -> dict[str, Any]:
    """The insert parameters of one finding (validated; JSON columns as plain lists/dicts)."""
    kind, sid = subject(f.subject_kind, f.subject_id)
    if type(f.requests_seen) is not int and (
        isinstance(f.requests_seen, bool) or not isinstance(f.requests_seen, numbers.Integral)
    ):
        raise InvalidRequestError(
            f"requests_seen must be an integer (got {f.requests_seen!r:.80})", param="requests_seen"
        )
    if f.requests_seen < 0:
        raise InvalidRequestError(
            f"requests_seen must be >= 0 (got {f.requests_seen})", param="requests_seen"
        )
    if not isinstance(f.features, dict):
        raise InvalidRequestError("features must be a mapping of name to number", param="features")
    return {
        "ts": _finite(f.ts, "ts"),
        "subject_kind": kind,
        "subject_id": sid,
        "score": check_score(f.score),
        "flagged": bool(f.flagged),
        "reasons": [str(r) for r in f.reasons],
        # non-finite values are stored as the strings "NaN"/"Infinity" (codec) and read back as floats
        "features": {str(k): _number(v, f"features[{k!r}]") for k, v in f.features.items()},
        "cluster": None if f.cluster is None else str(f.cluster),
        "requests_seen": int(f.requests_seen),
    }


def _features(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {k: float(v) if isinstance(v, str) else v for k, v in value.items()}


def _reasons(value: Any) -> tuple[str, ...]:
    return tuple(str(r) for r in value) if isinstance(value, list) else ()


def row_to_finding(row: Any) -> Finding:
    return Finding(
        subject_kind=subject_kind(row["subject_kind"]),
        subject_id=row["subject_id"],
        ts=row["ts"],
        score=row["score"],
        flagged=bool(row["flagged"]),
        reasons=_reasons(row["reasons"]),
        features=_features(row["features"]),
        cluster=row["cluster"],
        requests_seen=int(row["requests_seen"]),
    )


def row_to_state(row: Any) -> RiskState:
    return RiskState(
        subject_kind=row["subject_kind"],
        subject_id=row["subject_id"],
        score=row["score"],
        flagged=bool(row["flagged"]),
        reasons=_reasons(row["reasons"]),
        features=_features(row["features"]),
        cluster=row["cluster"],
        requests_seen=int(row["requests_seen"]),
        ts=row["ts"],
        updated_at=row["updated_at"],
        first_flagged_at=row["first_flagged_at"],
        last_finding_id=int(row["last_finding_id"]),
    )


def row_to_decision(row: Any) -> Decision:
    return Decision(
        id=int(row["id"]),
        ts=row["ts"],
        subject_kind=row["subject_kind"],
        subject_id=row["subject_id"],
        action=row["action"],
        actor=row["actor"],
        reason=row["reason"],
        finding_id=None if row["finding_id"] is None else int(row["finding_id"]),
        params=dict(row["params"]) if isinstance(row["params"], dict) else {},
        active=bool(row["active"]),
        reversed_at=row["reversed_at"],
        reversed_by=row["reversed_by"],
    )


def latest_states(rows: Sequence[dict[str, Any]], ids: Sequence[int], now: float) -> list[dict[str, Any]]:
    """One risk_state row per subject of the batch: its latest finding (highest ts; the later one in
    the batch on a tie), with the ts of its first flagged finding in the batch. Sorted by subject,
    so that concurrent batches lock rows in one order (no deadlock on Postgres)."""
    latest: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}
    first_flagged: dict[tuple[str, str], float] = {}
    for row, finding_id in zip(rows, ids, strict=True):
        key = (row["subject_kind"], row["subject_id"])
        current = latest.get(key)
        if current is None or row["ts"] >= current[0]["ts"]:
            latest[key] = (row, finding_id)
        if row["flagged"] and row["ts"] < first_flagged.get(key, math.inf):
            first_flagged[key] = row["ts"]
    return [
        {**row, "updated_at": now, "first_flagged_at": first_flagged.get(key), "last_finding_id": finding_id}
        for key, (row, finding_id) in sorted(latest.items())
    ]


INSERTS: dict[str, Callable[[sa.Table], Any]] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
_FINDING_COLUMNS = [c.name for c in findings.c if c.name != "id"]
_STATE_COLUMNS = [c.name for c in risk_state.c]


def _pg_recordset(table: sa.Table, columns: list[str]) -> Any:
    """Postgres: a whole batch as ONE json parameter, expanded server-side into rows of ``table``
    (as for events: far faster than multi-row VALUES with a parameter per value)."""
    return sa.func.json_populate_recordset(
        sa.literal_column(f"NULL::{table.name}"),
        sa.cast(sa.bindparam("rows", type_=sa.Text), postgresql.JSON),
    ).table_valued(*columns, with_ordinality="ordinality")


def _with_state_upsert(ins: Any) -> Any:
    """ON CONFLICT DO UPDATE for risk_state. A row older than the stored state (a late or replayed
    finding) changes nothing; first_flagged_at, once set, is never overwritten."""
    new = ins.excluded
    keep = {"subject_kind", "subject_id", "first_flagged_at"}
    values = {c.name: new[c.name] for c in risk_state.c if c.name not in keep}
    values["first_flagged_at"] = sa.func.coalesce(risk_state.c.first_flagged_at, new.first_flagged_at)
    return ins.on_conflict_do_update(
        index_elements=[risk_state.c.subject_kind, risk_state.c.subject_id],
        set_=values,
        where=new.ts >= risk_state.c.ts,
    )


# SQLite: executemany; insertmanyvalues batches it and returns ids in the order of the parameters
_SQLITE_INSERT_FINDINGS = findings.insert().returning(findings.c.id, sort_by_parameter_order=True)
_SQLITE_UPSERT_STATES = _with_state_upsert(sqlite.insert(risk_state))
# Postgres: ids are drawn from the sequence in the ORDER BY order of the INSERT .. SELECT, so the
# sorted returned ids match the rows (the technique SQLAlchemy's sort_by_parameter_order uses too)
_pg_findings = _pg_recordset(findings, _FINDING_COLUMNS)
_PG_INSERT_FINDINGS = (
    postgresql.insert(findings)
    .from_select(
        _FINDING_COLUMNS,
        sa.select(*(_pg_findings.c[n] for n in _FINDING_COLUMNS)).order_by(_pg_findings.c.ordinality),
    )
    .returning(findings.c.id)
)
_pg_states = _pg_recordset(risk_state, _STATE_COLUMNS)
_PG_UPSERT_STATES = _with_state_upsert(
    postgresql.insert(risk_state).from_select(
        _STATE_COLUMNS,
        sa.select(*(_pg_states.c[n] for n in _STATE_COLUMNS)).order_by(_pg_states.c.ordinality),
    )
)


def _sqlite_insert_findings(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    return [int(i) for i in conn.execute(_SQLITE_INSERT_FINDINGS, rows).scalars()]


def _sqlite_upsert_states(conn: Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(_SQLITE_UPSERT_STATES, rows)


def _pg_insert_findings(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    return sorted(int(i) for i in conn.execute(_PG_INSERT_FINDINGS, {"rows": dumps_json(rows)}).scalars())


def _pg_upsert_states(conn: Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(_PG_UPSERT_STATES, {"rows": dumps_json(rows)})


# how each engine appends a batch of finding rows (returning their ids in order), and upserts states
FINDING_INSERTERS: dict[str, Callable[[Connection, list[dict[str, Any]]], list[int]]] = {
    "sqlite": _sqlite_insert_findings,
    "postgresql": _pg_insert_findings,
}
STATE_UPSERTERS: dict[str, Callable[[Connection, list[dict[str, Any]]], None]] = {
    "sqlite": _sqlite_upsert_states,
    "postgresql": _pg_upsert_states,
}


def cursor_upsert(dialect: str) -> Any:
    ins = INSERTS[dialect](worker_cursors)
    new = ins.excluded
    return ins.on_conflict_do_update(
        index_elements=[worker_cursors.c.name],
        set_={"ts": new.ts, "event_id": new.event_id, "updated_at": new.updated_at},
    )
