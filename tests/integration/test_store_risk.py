"""The Store contract for the risk tables (findings, risk_state, decisions, worker_cursors): one set
of tests, run on SQLite and on PostgreSQL (``-m postgres``), plus the 0002 -> 0003 upgrade."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from antidistill.errors import InvalidRequestError, StoreError
from antidistill.risk.types import Finding
from antidistill.store import DECISION_ACTIONS, RejectedDataError, SqlStore, open_store
from antidistill.store.migrate import alembic_config, head_revision
from antidistill.store.schema import decisions, findings, metadata, risk_state
from tests.conftest_store import fresh_store, make_event

T0 = 1_700_000_000.0
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class Clock:
    """The store's clock (decision ts, updated_at), moved by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(backend: str, tmp_path: Path, clock: Clock) -> Iterator[SqlStore]:
    with fresh_store(backend, tmp_path, clock=clock) as s:
        yield s


def finding(subject_id: str, ts: float, score: float = 0.5, flagged: bool = False, **kw: Any) -> Finding:
    values: dict[str, Any] = {
        "subject_kind": "account",
        "subject_id": subject_id,
        "ts": ts,
        "score": score,
        "flagged": flagged,
        "reasons": (f"score {score} at {ts}",),
        "features": {"elicitation": 0.25, "rate": 3.0},
        "requests_seen": int(ts - T0),
    }
    values.update(kw)
    return Finding(**values)


# findings and risk state ---------------------------------------------------------------------
def test_record_findings_appends_history_and_upserts_the_state(store: SqlStore, clock: Clock) -> None:
    assert store.record_findings([]) == 0
    assert store.risk_state("account", "a") is None
    assert store.record_findings([finding("a", T0 + 1, 0.2), finding("b", T0 + 1, 0.3)]) == 2
    clock.now += 60
    assert store.record_findings([finding("a", T0 + 2, 0.4, cluster="c1", requests_seen=17)]) == 1

    state = store.risk_state("account", "a")
    assert state is not None
    assert (state.score, state.ts, state.cluster, state.requests_seen) == (0.4, T0 + 2, "c1", 17)
    assert state.reasons == (f"score 0.4 at {T0 + 2}",)
    assert state.features == {"elicitation": 0.25, "rate": 3.0}
    assert state.updated_at == clock.now and not state.flagged and state.first_flagged_at is None
    history = store.findings_with_ids("account", "a")
    assert [f.score for _, f in history] == [0.4, 0.2]  # newest first
    assert state.last_finding_id == history[0][0]
    assert store.findings_for("account", "a") == [f for _, f in history]
    assert store.risk_state("account", "b") is not None
    assert store.risk_state("cluster", "a") is None  # kinds are separate namespaces


def test_first_flagged_at_is_set_once_and_never_overwritten(store: SqlStore) -> None:
    store.record_findings([finding("a", T0 + 1, 0.3)])
    state = store.risk_state("account", "a")
    assert state is not None and state.first_flagged_at is None
    store.record_findings([finding("a", T0 + 2, 0.99, flagged=True)])
    state = store.risk_state("account", "a")
    assert state is not None and state.flagged and state.first_flagged_at == T0 + 2
    store.record_findings([finding("a", T0 + 3, 0.1, flagged=False)])
    state = store.risk_state("account", "a")
    assert state is not None and not state.flagged and state.first_flagged_at == T0 + 2
    store.record_findings([finding("a", T0 + 4, 0.97, flagged=True)])
    state = store.risk_state("account", "a")
    assert state is not None and state.flagged and state.first_flagged_at == T0 + 2
    assert store.count_flagged("account") == 1


def test_the_state_is_the_latest_finding_within_and_across_batches(store: SqlStore) -> None:
    # within a batch: the highest ts wins (the later one on a tie); first_flagged_at is the earliest
    # flagged finding even when the latest is not flagged
    batch = [
        finding("a", T0 + 5, 0.5),
        finding("a", T0 + 3, 0.9, flagged=True),
        finding("a", T0 + 5, 0.6),
        finding("a", T0 + 1, 0.8, flagged=True),
    ]
    assert store.record_findings(batch) == 4
    state = store.risk_state("account", "a")
    assert state is not None
    assert (state.score, state.ts, state.flagged, state.first_flagged_at) == (0.6, T0 + 5, False, T0 + 1)
    ids = {f.score: i for i, f in store.findings_with_ids("account", "a")}
    assert state.last_finding_id == ids[0.6]
    # across batches: a late finding (older than the state) is history only
    store.record_findings([finding("a", T0 + 4, 0.99, flagged=True)])
    again = store.risk_state("account", "a")
    assert again == state
    assert len(store.findings_for("account", "a")) == 5
    # same ts as the state: the newer write wins
    store.record_findings([finding("a", T0 + 5, 0.7)])
    latest = store.risk_state("account", "a")
    assert latest is not None and latest.score == 0.7


def test_findings_for_is_newest_first_and_round_trips_values(store: SqlStore) -> None:
    special = finding(
        "ünï-账户-🔑",
        T0 + 10,
        0.875,
        flagged=True,
        reasons=("elicitation 0.93 (benign p99 0.21)", "模板化 skeleton × 40", ""),
        features={"z": float("nan"), "inf": float("inf"), "neg": -float("inf"), "x": 1e-300, "n": 7.0},
        cluster="cl_42",
        requests_seen=2**40,
    )
    store.record_findings([finding("ünï-账户-🔑", T0 + i) for i in range(5)] + [special])
    got = store.findings_for("account", "ünï-账户-🔑", 3)
    assert [f.ts for f in got] == [T0 + 10, T0 + 4, T0 + 3]
    top = got[0]
    assert math.isnan(top.features["z"])  # non-finite features come back as floats
    finite = {k: v for k, v in special.features.items() if k != "z"}
    assert {k: v for k, v in top.features.items() if k != "z"} == finite
    assert dataclasses.replace(top, features={}) == dataclasses.replace(special, features={})
    assert store.findings_for("account", "nobody") == []
    assert store.findings_for("account", "ünï-账户-🔑", limit=0) == []


def test_numpy_values_are_stored_as_plain_numbers(store: SqlStore) -> None:
    f = finding(
        "np",
        np.float64(T0 + 1),
        np.float32(0.5),
        flagged=np.bool_(True),
        features={"a": np.float32(0.25), "b": np.int64(3)},
        requests_seen=np.int64(12),
    )
    store.record_findings([f])
    [got] = store.findings_for("account", "np")
    assert (got.ts, got.score, got.flagged, got.requests_seen) == (T0 + 1, 0.5, True, 12)
    assert got.features == {"a": 0.25, "b": 3.0}


def test_top_risk_orders_by_score_and_pages(store: SqlStore) -> None:
    scores = {"a": 0.1, "b": 0.95, "c": 0.5, "d": 0.95, "e": 0.7}
    store.record_findings([finding(s, T0 + 1, score, flagged=score > 0.9) for s, score in scores.items()])
    store.record_findings([finding("x", T0 + 1, 1.0, flagged=True, subject_kind="cluster")])
    ranked = [s.subject_id for s in store.top_risk("account")]
    assert ranked == ["d", "b", "e", "c", "a"]  # score desc, ties by subject_id desc
    assert [s.subject_id for s in store.top_risk("account", limit=2, offset=1)] == ["b", "e"]
    assert [s.subject_id for s in store.top_risk("account", flagged_only=True)] == ["d", "b"]
    assert [s.subject_id for s in store.top_risk("cluster")] == ["x"]
    assert store.top_risk("account", limit=0) == [] and store.top_risk("account", offset=10) == []
    assert store.count_flagged("account") == 2 and store.count_flagged("cluster") == 1
    # a new finding moves a subject
    store.record_findings([finding("a", T0 + 2, 0.99, flagged=True)])
    assert [s.subject_id for s in store.top_risk("account", limit=1)] == ["a"]
    assert store.count_flagged("account") == 3


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"subject_kind": "user"}, "subject_kind must be one of account, cluster"),
        ({"score": 1.5}, r"score must be in \[0, 1\]"),
        ({"score": -0.01}, r"score must be in \[0, 1\]"),
        ({"score": float("nan")}, r"score must be in \[0, 1\]"),
        ({"score": "0.5"}, "score must be a number"),
        ({"ts": float("inf")}, "ts must be a finite number"),
        ({"subject_id": ""}, "subject_id must be a string of 1-256 characters"),
        ({"subject_id": "x" * 257}, "subject_id must be a string of 1-256 characters"),
        ({"requests_seen": -1}, "requests_seen must be >= 0"),
        ({"requests_seen": 1.5}, "requests_seen must be an integer"),
        ({"features": {"a": "high"}}, r"features\['a'\] must be a number"),
    ],
)
def test_an_invalid_finding_refuses_the_whole_batch(store: SqlStore, bad: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        store.record_findings([finding("ok", T0 + 1), dataclasses.replace(finding("bad", T0 + 2), **bad)])
    assert store.findings_for("account", "ok") == [] and store.top_risk("account") == []


def test_record_findings_is_one_transaction(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_upsert(conn: Any, rows: Any) -> None:
        raise RejectedDataError("simulated failure after the findings were inserted")

    monkeypatch.setattr(store, "_upsert_states", broken_upsert)
    with pytest.raises(RejectedDataError):
        store.record_findings([finding("a", T0 + 1), finding("b", T0 + 2)])
    monkeypatch.undo()
    with store.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(findings)).scalar_one() == 0
    assert store.record_findings([finding("a", T0 + 1)]) == 1  # and the store is still usable


def test_a_batch_of_10k_findings_is_quick(store: SqlStore) -> None:
    batch = [
        finding(f"acct_{i % 2500:05d}", T0 + i * 0.001, (i % 1000) / 999, flagged=i % 1000 > 990)
        for i in range(10_000)
    ]
    start = time.perf_counter()
    assert store.record_findings(batch) == 10_000
    elapsed = time.perf_counter() - start
    print(f"\n{store.dialect}: record_findings(10k findings, 2.5k subjects) took {elapsed:.3f}s")
    assert elapsed < 15  # ~0.3-0.7 s on a 2-core dev box (both engines); generous for loaded CI
    with store.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(findings)).scalar_one() == 10_000
        assert conn.execute(sa.select(sa.func.count()).select_from(risk_state)).scalar_one() == 2_500
        # every state points at its own subject's latest finding (ids matched to rows in order)
        last = findings.alias("last")
        mismatched = (
            sa.select(sa.func.count())
            .select_from(risk_state.join(last, last.c.id == risk_state.c.last_finding_id))
            .where(
                (last.c.subject_id != risk_state.c.subject_id)
                | (last.c.ts != risk_state.c.ts)
                | (last.c.score != risk_state.c.score)
            )
        )
        assert conn.execute(mismatched).scalar_one() == 0
    state = store.risk_state("account", "acct_00007")
    assert state is not None and state.ts == T0 + 7507 * 0.001
    assert store.count_flagged("account") == sum(1 for s in store.top_risk("account", 10_000) if s.flagged)


# decisions -----------------------------------------------------------------------------------
def test_a_new_decision_supersedes_the_active_one(store: SqlStore, clock: Clock) -> None:
    assert store.active_decision("account", "a") is None and store.decisions_for("account", "a") == []
    first = store.record_decision("account", "a", "watermark", "engine", "score 0.93", finding_id=7)
    assert first.active and first.ts == clock.now and first.params == {} and first.finding_id == 7
    assert store.active_decision("account", "a") == first
    other = store.record_decision("cluster", "a", "throttle", "engine", "cluster", params={"rps": 0.5})
    clock.now += 30
    second = store.record_decision("account", "a", "block", "operator:alice", "confirmed", params={"why": 1})
    assert second.id > first.id
    assert store.active_decision("account", "a") == second
    history = store.decisions_for("account", "a")
    assert [d.id for d in history] == [second.id, first.id]
    superseded = history[1]
    assert not superseded.active
    assert (superseded.reversed_at, superseded.reversed_by) == (clock.now, "operator:alice")
    assert store.active_decision("cluster", "a") == other  # another subject: untouched
    assert store.decisions_for("account", "a", limit=1) == [second]


def test_reverse_decision(store: SqlStore, clock: Clock) -> None:
    d = store.record_decision("account", "a", "throttle", "engine", "rate", params={"rps": 1})
    clock.now += 5
    assert store.reverse_decision(d.id, "operator:bob") is True
    assert store.active_decision("account", "a") is None
    [reversed_] = store.decisions_for("account", "a")
    assert (reversed_.active, reversed_.reversed_at, reversed_.reversed_by) == (
        False,
        clock.now,
        "operator:bob",
    )
    assert store.reverse_decision(d.id, "operator:bob") is False  # no longer active
    assert store.reverse_decision(d.id + 1000, "engine") is False  # unknown
    # reversing a superseded decision changes nothing; the new one stays active
    d2 = store.record_decision("account", "a", "allow", "operator:bob", "false positive")
    assert store.reverse_decision(d.id, "engine") is False
    assert store.active_decision("account", "a") == d2


def test_every_action_is_accepted(store: SqlStore) -> None:
    for action in DECISION_ACTIONS:
        assert store.record_decision("account", "a", action, "engine", "").action == action
    assert len(store.decisions_for("account", "a")) == len(DECISION_ACTIONS)
    active = store.active_decision("account", "a")
    assert active is not None and active.action == DECISION_ACTIONS[-1]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"action": "ban"}, "action must be one of allow, watermark"),
        ({"actor": "admin"}, "actor must be 'engine' or 'operator:<name>'"),
        ({"actor": "operator:"}, "actor must be 'engine' or 'operator:<name>'"),
        ({"subject_kind": "org"}, "subject_kind must be one of"),
        ({"subject_id": ""}, "subject_id must be"),
        ({"params": ["x"]}, "params must be a JSON object"),
        ({"finding_id": "7"}, "finding_id must be an integer id"),
        ({"reason": None}, "reason must be a string"),
    ],
)
def test_invalid_decisions_are_refused(store: SqlStore, kw: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {
        "subject_kind": "account",
        "subject_id": "a",
        "action": "block",
        "actor": "engine",
        "reason": "r",
    }
    with pytest.raises(InvalidRequestError, match=match):
        store.record_decision(**{**args, **kw})
    assert store.decisions_for("account", "a") == []
    with pytest.raises(InvalidRequestError, match="actor must be"):
        store.reverse_decision(1, "nobody")


def test_concurrent_decisions_leave_exactly_one_active(store: SqlStore) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for j in range(5):
                store.record_decision("account", "hot", "throttle", f"operator:w{n}", f"{n}-{j}")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    history = store.decisions_for("account", "hot", limit=1000)
    assert len(history) == 40
    assert [d.active for d in history].count(True) == 1
    assert all(d.reversed_at is not None and d.reversed_by for d in history if not d.active)


def test_the_database_itself_refuses_two_active_decisions(store: SqlStore) -> None:
    d = store.record_decision("account", "a", "block", "engine", "r")
    row = {c.name: getattr(d, c.name) for c in decisions.c if c.name != "id"}
    with store.connect() as conn, pytest.raises(sa.exc.IntegrityError), conn.begin():
        conn.execute(decisions.insert().values(**row))


# worker cursors ------------------------------------------------------------------------------
def test_cursor_round_trip_and_resume_in_event_order(store: SqlStore, clock: Clock) -> None:
    events = [make_event(i, ts=100.0 + (i % 4)) for i in range(10)]
    store.insert_events(events)
    ordered = sorted(events, key=lambda e: (e.ts, e.id))
    assert store.get_cursor("analyze") is None
    assert list(store.iter_events(after=None, batch=3)) == ordered

    store.set_cursor("analyze", ordered[3].ts, ordered[3].id)
    cursor = store.get_cursor("analyze")
    assert cursor == (ordered[3].ts, ordered[3].id)
    assert list(store.iter_events(after=cursor, batch=2)) == ordered[4:]
    store.set_cursor("analyze", ordered[-1].ts, ordered[-1].id)  # moved forward
    assert list(store.iter_events(after=store.get_cursor("analyze"))) == []
    store.set_cursor("analyze", 0.0, "-")  # rewound
    assert list(store.iter_events(after=store.get_cursor("analyze"))) == ordered
    store.set_cursor("other", 1.5, "ev-x")
    assert store.get_cursor("analyze") == (0.0, "-") and store.get_cursor("other") == (1.5, "ev-x")
    with pytest.raises(InvalidRequestError, match="cursor name"):
        store.set_cursor("", 1.0, "e")
    with pytest.raises(InvalidRequestError, match="ts must be a finite number"):
        store.set_cursor("analyze", float("nan"), "e")
    with pytest.raises(InvalidRequestError, match="event_id must be a non-empty string"):
        store.set_cursor("analyze", 1.0, "")


def test_one_lease_holder_at_a_time_until_release_or_expiry(store: SqlStore, clock: Clock) -> None:
    assert store.acquire_lease("risk-engine", "w1", 30.0)
    assert not store.acquire_lease("risk-engine", "w2", 30.0)  # live: w2 stands by
    assert store.acquire_lease("risk-engine", "w1", 30.0)  # the holder renews
    assert store.acquire_lease("other", "w2", 30.0)  # another name is another lease
    clock.now += 29.0
    assert not store.acquire_lease("risk-engine", "w2", 30.0)  # renewed at t: live until t + 30
    clock.now += 2.0
    assert store.acquire_lease("risk-engine", "w2", 30.0)  # expired: taken over
    assert not store.acquire_lease("risk-engine", "w1", 30.0)
    store.release_lease("risk-engine", "w1")  # not the holder: no effect
    assert not store.acquire_lease("risk-engine", "w1", 30.0)
    store.release_lease("risk-engine", "w2")
    assert store.acquire_lease("risk-engine", "w1", 30.0)  # released: free at once
    assert store.get_cursor("risk-engine") is None  # leases do not touch the worker's cursor
    with pytest.raises(InvalidRequestError, match="holder"):
        store.acquire_lease("risk-engine", "", 30.0)
    with pytest.raises(InvalidRequestError, match="ttl_s"):
        store.acquire_lease("risk-engine", "w1", 0.0)


# migrations ----------------------------------------------------------------------------------
def test_upgrade_from_0002_keeps_every_row(backend: str, tmp_path: Path) -> None:
    with fresh_store(backend, tmp_path, revision="0002") as store:
        assert store.schema_revision() == "0002"
        acc = store.create_account("alice", "trusted", {"org": "acme"})
        token, key = store.create_api_key(acc.id, label="laptop")
        events = [make_event(i) for i in range(50)]
        store.insert_events(events)
        record = {"key_id": "wk_1", "scope": "account", "ident": acc.id, "scheme": "kgw", "version": 1}
        store.record_watermark_key(record, "h" * 64)

        store.migrate()

        assert store.schema_revision() == head_revision()
        assert store.get_account(acc.id) == acc
        auth = store.authenticate(token)
        assert auth is not None and auth[0] == key
        assert list(store.iter_events()) == events
        assert store.watermark_key_records() == [record]
        with store.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, metadata) == []
        assert store.record_findings([finding(acc.id, T0 + 1, 0.9, flagged=True)]) == 1
        assert store.record_decision("account", acc.id, "watermark", "engine", "r").active


def test_downgrade_to_0002_drops_only_the_risk_tables(store: SqlStore) -> None:
    acc = store.create_account("alice")
    store.record_findings([finding(acc.id, T0 + 1)])
    with store.connect() as conn, conn.begin():
        command.downgrade(alembic_config(conn), "0002")
    assert store.schema_revision() == "0002"
    with store.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    assert {"findings", "risk_state", "decisions", "worker_cursors"}.isdisjoint(tables)
    assert store.get_account(acc.id) == acc
    store.migrate()
    assert store.schema_revision() == head_revision() and store.findings_for("account", acc.id) == []


# failures (no server needed) -----------------------------------------------------------------
def test_unreachable_postgres_fails_fast_for_risk_calls() -> None:
    store = open_store("postgresql://app:s3cr3t-pw@127.0.0.1:1/nowhere")
    for call in (
        lambda: store.record_findings([finding("a", T0)]),
        lambda: store.get_cursor("analyze"),
        lambda: store.record_decision("account", "a", "block", "engine", "r"),
    ):
        start = time.monotonic()
        with pytest.raises(StoreError) as info:
            call()
        assert time.monotonic() - start < 6
        assert "127.0.0.1:1/nowhere" in info.value.message and "s3cr3t-pw" not in info.value.message
    store.close()
