"""The dashboard's store queries (``store/dashboard.py``), on SQLite and on PostgreSQL, and the cache
of settled event counts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from antidistill.dashboard.series import SettledCounts
from antidistill.risk.types import Finding
from antidistill.store import SqlStore
from tests.conftest_store import fresh_store, make_event

T0 = 1_800_000_000.0  # a multiple of 3600


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    with fresh_store(request.param, tmp_path) as s:
        yield s


def _f(
    subject: str,
    ts: float,
    score: float,
    flagged: bool,
    cluster: str | None = None,
    kind: str = "account",
    n: int = 4,
) -> Finding:
    return Finding(kind, subject, ts, score, flagged, ("r",), {"members": 3.0}, cluster, n)  # type: ignore[arg-type]


def test_event_counts_per_bucket_overall_and_per_account(store: SqlStore) -> None:
    evts = [make_event(i, ts=T0 + i * 600, account_id="a" if i % 3 else "b") for i in range(18)]  # 3 hours
    store.insert_events(evts)
    assert store.event_counts(T0, T0 + 3 * 3600, 3600) == [(T0, 6), (T0 + 3600, 6), (T0 + 7200, 6)]
    assert store.event_counts(T0, T0 + 3 * 3600, 3600, account_id="b") == [
        (T0, 2),
        (T0 + 3600, 2),
        (T0 + 7200, 2),
    ]
    assert store.event_counts(T0 + 3600, T0 + 5400, 1800) == [(T0 + 3600, 3)]
    assert store.event_counts(T0 + 10 * 3600, T0 + 11 * 3600, 3600) == []
    with pytest.raises(ValueError):
        store.event_counts(T0, T0 + 86400 * 365, 1)


def test_flagged_and_decision_counts(store: SqlStore) -> None:
    store.record_findings(
        [
            _f("a1", T0 + 10, 0.99, True),
            _f("a2", T0 + 3700, 0.99, True),
            _f("a3", T0 + 3800, 0.5, False),
            _f("c1", T0 + 20, 0.99, True, "c1", kind="cluster"),
        ]
    )
    assert store.flagged_counts("account", T0, T0 + 7200, 3600) == [(T0, 1), (T0 + 3600, 1)]
    assert store.flagged_counts("cluster", T0, T0 + 7200, 3600) == [(T0, 1)]
    store.record_decision("account", "a1", "block", "operator:x", "r")
    store.record_decision("account", "a2", "block", "operator:x", "r")
    store.record_decision("account", "a3", "throttle", "engine", "r")
    now = store.recent_decisions(10)[0].ts
    got = store.decision_counts(now - 3600, now + 3600, 7200)
    assert sorted((a, n) for _, a, n in got) == [("block", 2), ("throttle", 1)]
    assert [d.subject_id for d in store.recent_decisions(2)] == ["a3", "a2"]


def test_cluster_members_volume_and_counts(store: SqlStore) -> None:
    found = [_f(f"m{i}", T0 + i, 0.5 + i / 100, i > 2, "c9", n=10 + i) for i in range(6)]
    found += [_f("x", T0, 0.99, True, "c1", n=500), _f("c9", T0, 0.9, True, "c9", kind="cluster", n=99)]
    store.record_findings(found)
    members = store.cluster_members("c9", limit=4)
    assert [m.subject_id for m in members] == ["m5", "m4", "m3", "m2"]
    assert [m.subject_id for m in store.cluster_members("c9", limit=4, offset=4)] == ["m1", "m0"]
    assert store.count_cluster_members("c9") == 6 and store.count_cluster_members("nope") == 0
    assert [s.subject_id for s in store.top_volume("account", limit=2)] == ["x", "m5"]
    assert [s.subject_id for s in store.top_volume("cluster")] == ["c9"]
    assert store.count_subjects("account") == 7 and store.count_subjects("cluster") == 1


def test_activity_span_and_account_events_pages(store: SqlStore) -> None:
    accounts = [store.create_account(f"acc{i}") for i in range(3)]
    evts = [make_event(i, ts=T0 + i, account_id=accounts[i % 2].id) for i in range(30)]
    store.insert_events(evts)
    ids = [a.id for a in accounts] + [f"ghost{i}" for i in range(300)]  # > one chunk
    span = store.activity_span(ids)
    assert span[accounts[0].id] == (T0, T0 + 28) and span[accounts[1].id] == (T0 + 1, T0 + 29)
    assert span[accounts[2].id] == (None, None) and span["ghost7"] == (None, None)
    assert len(span) == 303
    page1 = store.account_events(accounts[0].id, 10)
    assert [e.ts for e in page1] == [T0 + 28 - 2 * k for k in range(10)]
    page2 = store.account_events(accounts[0].id, 10, before=(page1[-1].ts, page1[-1].id))
    assert [e.ts for e in page2] == [T0 + 8 - 2 * k for k in range(5)]
    got = store.accounts_by_ids([accounts[1].id, "nope", accounts[1].id])
    assert list(got) == [accounts[1].id] and got[accounts[1].id] == accounts[1]
    assert store.accounts_by_ids([]) == {}


def test_findings_after_is_a_cursor(store: SqlStore) -> None:
    assert store.last_finding_id() == 0 and store.findings_after(0) == []
    store.record_findings([_f(f"a{i}", T0 + i, 0.1, False) for i in range(5)])
    first = store.findings_after(0, 3)
    assert [f.subject_id for _, f in first] == ["a0", "a1", "a2"]
    rest = store.findings_after(first[-1][0])
    assert [f.subject_id for _, f in rest] == ["a3", "a4"]
    assert store.last_finding_id() == rest[-1][0]


class _CountingStore:
    def __init__(self, rows: dict[float, int]) -> None:
        self.rows = rows
        self.calls: list[tuple[float, float]] = []

    def event_counts(
        self, since: float, until: float, bucket_s: float, account_id: str | None = None
    ) -> list[tuple[float, int]]:
        self.calls.append((since, until))
        return [(t, n) for t, n in sorted(self.rows.items()) if since <= t < until]


def test_settled_counts_are_counted_once() -> None:
    rows = {T0 + h * 3600: h + 1 for h in range(48)}
    fake = _CountingStore(rows)
    cache = SettledCounts(settle_s=300)
    now = T0 + 47 * 3600 + 1000
    first = cache.event_counts(fake, now - 86400, now, 3600, now)
    assert first == {t: n for t, n in rows.items() if now - 86400 - 3600 < t <= now}
    assert len(fake.calls) == 1
    fake.rows[T0 + 47 * 3600] += 5  # the current bucket is still filling: counted again
    later = now + 600
    second = cache.event_counts(fake, later - 86400, later, 3600, later)
    assert second[T0 + 47 * 3600] == 48 + 5
    assert fake.calls[-1][0] >= T0 + 46 * 3600  # only the unsettled tail was counted
    fake.rows[T0 + 30 * 3600] = 999  # a settled bucket is not counted again
    assert cache.event_counts(fake, later - 86400, later, 3600, later)[T0 + 30 * 3600] == 31
    wider = cache.event_counts(fake, later - 2 * 86400, later, 3600, later)  # older part: counted once
    assert wider[T0] == 1 and (T0 - 3600, T0 + 23 * 3600) in fake.calls


def test_latest_events_of_many_accounts(store: SqlStore) -> None:
    a, b = store.create_account("a"), store.create_account("b")
    evts = [make_event(i, ts=T0 + i, account_id=(a.id if i % 2 else b.id)) for i in range(20)]
    store.insert_events(evts)
    got = store.latest_events([a.id, b.id, "ghost"], 3)
    assert [e.ts for e in got[a.id]] == [T0 + 19, T0 + 17, T0 + 15]
    assert [e.ts for e in got[b.id]] == [T0 + 18, T0 + 16, T0 + 14]
    assert got["ghost"] == []
    assert got[a.id][0] == evts[19]  # JSON columns decoded, every field intact
