"""Helpers of the store tests: a fresh, migrated SqlStore on SQLite or on PostgreSQL, and events.

PostgreSQL isolation: every store gets its own schema (``search_path``), dropped afterwards, so
tests never see each other's rows. An unreachable server makes each postgres test FAIL at once
(checked once per session with a 3 s connect timeout) with a message saying how to start it; the
tests never skip and never hang.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from sqlalchemy.engine import make_url

from antidistill.store import Event, SqlStore

PG_URL = os.environ.get("ANTIDISTILL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_START_HINT = (
    "start it with `sudo service postgresql start` (trust auth, database `test`), or "
    "`docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:16`, "
    "or set ANTIDISTILL_TEST_POSTGRES_URL"
)


def _libpq_url(url: str) -> str:
    """The URL psycopg itself understands (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@functools.cache
def postgres_problem() -> str | None:
    """None when the test server answers; else the message the postgres tests fail with."""
    try:
        with psycopg.connect(_libpq_url(PG_URL), connect_timeout=3):
            return None
    except Exception as e:
        shown = make_url(PG_URL).render_as_string(hide_password=True)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"PostgreSQL not reachable at {shown}; {PG_START_HINT}. ({first})"


class _Unreachable:
    """Stands in for the store when PostgreSQL is down, so the test FAILS (rather than erroring in
    its fixture) at its first use of the store, with the message that says how to start it."""

    def __init__(self, problem: str) -> None:
        self._problem = problem

    def __getattr__(self, name: str) -> Any:
        pytest.fail(self._problem, pytrace=False)


def _drop_schema(schema: str) -> None:
    with psycopg.connect(_libpq_url(PG_URL), connect_timeout=3, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def fresh_store(kind: str, tmp_path: Path, revision: str = "head", **kwargs: Any) -> Iterator[SqlStore]:
    """A migrated (to ``revision``), empty SqlStore of ``kind`` ("sqlite" | "postgres"), closed and
    removed after."""
    if kind == "sqlite":
        store = SqlStore(f"sqlite:///{tmp_path / 'db' / 'store.db'}", **kwargs)
        try:
            store.migrate(revision)
            yield store
        finally:
            store.close()
        return
    problem = postgres_problem()
    if problem is not None:
        yield cast(SqlStore, _Unreachable(problem))
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    store = SqlStore(PG_URL, schema=schema, **kwargs)
    try:
        store.migrate(revision)
        yield store
    finally:
        store.close()
        _drop_schema(schema)


def make_event(i: int, **overrides: Any) -> Event:
    """A plausible chat event number ``i`` (unique id ``ev-<i>``)."""
    values: dict[str, Any] = {
        "id": f"ev-{i:06d}",
        "ts": 1_700_000_000.0 + i * 0.001,
        "account_id": "acct_test",
        "key_id": "0123456789ab",
        "client_ip": "203.0.113.7",
        "user_agent": "pytest/1.0",
        "endpoint": "chat",
        "model": "test-model",
        "request": {"messages": [{"role": "user", "content": f"question {i}"}]},
        "params": {"temperature": 0.7, "max_tokens": 64},
        "response": f"answer {i}",
        "prompt_tokens": 5,
        "completion_tokens": 7,
        "latency_ms": 12.5,
        "status": 200,
    }
    values.update(overrides)
    return Event(**values)
