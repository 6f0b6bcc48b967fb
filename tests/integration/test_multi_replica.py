"""Two real gateway processes (``antidistill serve``, fake backend) on one PostgreSQL and one Redis,
one account driven across both. Shows, end to end over HTTP:

(a) one shared limit: an operator's throttle with ``rpm = N`` admits exactly N requests in total,
    however the requests are spread over the replicas (in turn, then in a concurrent burst); the
    others get 429 with ``retry-after`` and ``x-ratelimit-*``, and no replica fell back to local counts;
(b) one decision applied on both: a block posted to replica 1's admin API refuses the account's very
    next request on replica 2 (403, ``x-should-retry: false``), and a reversal on replica 2 lets
    the very next request on replica 1 through;
(c) one shared risk state: ``antidistill analyze --once`` (a separate process over the same Postgres)
    scores the traffic of both replicas as one account, and both admin APIs show the same state
    and findings; once flagged, the policy applies on both;
(d) no lost or duplicated event rows: after both replicas stop (SIGTERM: graceful, events flushed),
    the ``events`` table holds exactly one row per request sent, under the ids the clients were
    given (``x-request-id``).

The deployment gets a fresh schema and its own Redis key prefix (``tests/replicas.py``); the
processes are SIGKILLed by the fixture finalizer whatever happens. Absent servers FAIL the test at
once with how to start them.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration import test_gateway_risk as risk_e2e
from tests.integration.test_gateway_risk import CUE, TOPICS
from tests.replicas import (
    ADMIN,
    Deployment,
    Replica,
    chat_body,
    create_account,
    parse_json_lines,
    poll,
    require_servers,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
cal_file = risk_e2e.cal_file  # fixture: a small benign calibration for the hashing embedder

RPM = 10
PERIOD_S = 3600.0  # GCRA drains rpm/period per second: 1 request per 6 min, none during the test
N_RISK = 48  # a checkpoint of the risk engine: it stores a finding at exactly this many requests
# This host has 2 CPUs shared by both replicas, this test, Postgres, Redis (and often other jobs).
# With the default 50 ms Redis timeout a burst stalls an event loop long enough for some Redis
# replies to arrive "late"; those calls are then decided by the local fallback (1/2 of the limit per
# replica, blind to Redis usage), and the burst admitted 9 and 15 instead of 6 in two of eight runs.
# That is the documented outage semantics (limits/redis_limiter.py), not a shared limit, so the test
# gives Redis 1 s and asserts below that no call fell back.
LIMITER_TIMEOUTS = {
    "ANTIDISTILL_LIMITS__SHARED__REDIS_TIMEOUT_S": "1.0",
    "ANTIDISTILL_LIMITS__SHARED__LATENCY_BUDGET_S": "0.5",
    "ANTIDISTILL_LIMITS__SHARED__EXPECTED_REPLICAS": "2",
}


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    require_servers(redis=True)
    d = Deployment(tmp_path)
    try:
        yield d
    finally:
        d.close()


class Driver:
    """Sends requests and remembers the id of every one the gateway answered."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.client = httpx.Client(timeout=30)

    def chat(self, replica: Replica, key: str, **body: Any) -> httpx.Response:
        r = self.client.post(
            f"{replica.url}/v1/chat/completions",
            json=chat_body(**body),
            headers={"Authorization": f"Bearer {key}"},
        )
        self.record(r)
        return r

    def record(self, r: httpx.Response) -> None:
        assert "x-request-id" in r.headers, (r.status_code, r.text)
        self.sent.append(r.headers["x-request-id"])

    async def burst(self, targets: list[Replica], key: str, n: int) -> list[tuple[str, httpx.Response]]:
        """``n`` requests at once, spread round-robin over ``targets``."""
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as client:

            async def one(replica: Replica) -> tuple[str, httpx.Response]:
                r = await client.post(
                    f"{replica.url}/v1/chat/completions",
                    json=chat_body(),
                    headers={"Authorization": f"Bearer {key}"},
                )
                return replica.name, r

            out = await asyncio.gather(*(one(rep) for rep, _ in zip(itertools.cycle(targets), range(n))))
        for _, r in out:
            self.record(r)
        return list(out)


def admin_get(replica: Replica, path: str) -> Any:
    r = httpx.get(f"{replica.url}{path}", headers=ADMIN, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def metric(text: str, sample: str) -> float:
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert m is not None, f"{sample} not in /metrics"
    return float(m.group(1))


def assert_throttled(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "rate_limit_error", err
    retry = int(r.headers["retry-after"])
    # Redis decides for both replicas: the wait is until the shared bucket frees one request
    assert PERIOD_S / RPM - 120 <= retry <= PERIOD_S / RPM + 1, r.headers
    assert r.headers["x-ratelimit-limit-requests"] == str(RPM)
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-should-retry" not in r.headers


def assert_blocked(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "account_blocked" and r.headers["x-should-retry"] == "false"


def test_two_replicas_share_limits_decisions_risk_state_and_the_event_log(
    deployment: Deployment, cal_file: Path
) -> None:
    t0 = time.monotonic()
    r1 = deployment.start("replica1", wait=False, env=LIMITER_TIMEOUTS)
    r2 = deployment.start("replica2", wait=False, env=LIMITER_TIMEOUTS)
    r1.wait_ready()
    r2.wait_ready()
    started = time.monotonic() - t0
    drv = Driver()

    # (a) one shared limit ----------------------------------------------------------------------
    acct, key = create_account(r1, "throttled-customer")
    r = httpx.post(
        f"{r1.url}/v1/admin/accounts/{acct}/decision",
        json={"action": "throttle", "params": {"rpm": RPM, "period_s": PERIOD_S}, "reason": "test"},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    # in turn: 4 requests, 2 on each replica, all admitted from the one budget
    for i in range(4):
        r = drv.chat((r1, r2)[i % 2], key)
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit-requests"] == str(RPM)
        assert r.headers["x-ratelimit-remaining-requests"] == str(RPM - 1 - i)  # counted across both
    # then a concurrent burst of 4N over both: exactly the N - 4 left are admitted, in total
    burst = asyncio.run(drv.burst([r1, r2], key, 4 * RPM))
    admitted = [name for name, r in burst if r.status_code == 200]
    assert len(admitted) == RPM - 4, sorted(r.status_code for _, r in burst)
    for _, r in burst:
        if r.status_code != 200:
            assert_throttled(r)
    assert {name for name, r in burst if r.status_code == 429} == {"replica1", "replica2"}
    for replica in (r1, r2):  # the budget is spent for both
        assert_throttled(drv.chat(replica, key))
        text = replica.metrics()
        assert metric(text, "antidistill_limiter_fallback_decisions_total") == 0  # all in Redis
        assert metric(text, 'antidistill_limiter_breaker_state{state="closed"}') == 1
        assert metric(text, 'antidistill_limiter_backend{backend="redis"}') == 1
    n_throttle = 4 + 4 * RPM + 2

    # (b) one decision applied on both ----------------------------------------------------------
    bacct, bkey = create_account(r1, "soon-blocked")
    assert drv.chat(r2, bkey).status_code == 200  # replica 2 has the account's state cached now
    r = httpx.post(
        f"{r1.url}/v1/admin/accounts/{bacct}/decision",
        json={"action": "block", "reason": "confirmed harvesting", "by": "carol"},
        headers=ADMIN,
    )
    assert r.status_code == 201 and r.json()["account"]["status"] == "blocked", r.text
    assert_blocked(drv.chat(r2, bkey))  # the very next request, on the other replica
    assert_blocked(drv.chat(r2, bkey, stream=True))
    assert_blocked(drv.chat(r1, bkey))
    r = httpx.delete(f"{r2.url}/v1/admin/accounts/{bacct}/decision?by=carol", headers=ADMIN)
    assert r.status_code == 200 and r.json()["account"]["status"] == "active", r.text
    assert drv.chat(r1, bkey).status_code == 200  # reversed on replica 2: served at once on replica 1
    # any operator decision, not only a block, reaches the other replica's very next request (the
    # operators' change token in Redis drops both replicas' auth and decision caches)
    assert drv.chat(r2, bkey).status_code == 200  # cached on replica 2 again
    r = httpx.post(
        f"{r1.url}/v1/admin/accounts/{bacct}/decision",
        json={"action": "reverify", "reason": "identity check", "by": "carol"},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    r = drv.chat(r2, bkey)
    assert r.status_code == 403 and r.json()["error"]["code"] == "reverification_required", r.text
    n_block = 7
    for replica in (r1, r2):  # authentication was served from the cache, not a store read each time
        text = replica.metrics()
        assert metric(text, 'antidistill_auth_cache_total{result="hits"}') > 0
        assert metric(text, 'antidistill_auth_cache_total{result="changes"}') >= 1

    # (c) one shared risk state -----------------------------------------------------------------
    racct, rkey = create_account(r1, "harvester")
    for i in range(N_RISK):  # half on each replica
        prompt = f"Explain {TOPICS[i % len(TOPICS)]} in depth, case {i}. {CUE}"
        r = drv.chat((r1, r2)[i % 2], rkey, text=prompt)
        assert r.status_code == 200, r.text
    last_sent = time.time()
    total = n_throttle + n_block + N_RISK
    assert len(drv.sent) == total
    poll(lambda: len(deployment.event_ids()), lambda n: n >= total, "the events of both replicas")
    # the worker stays lag_s (1 s) behind the clock so that it never skips a late batch: let it pass
    time.sleep(max(0.0, last_sent + 1.2 - time.time()))
    out = deployment.run_cli(
        "analyze",
        "--once",
        ANTIDISTILL_RISK__EMBEDDER="hashing",
        ANTIDISTILL_RISK__CALIBRATION_FILE=str(cal_file),
    )
    summary = parse_json_lines(out.stdout)[-1]
    assert summary["events"] == total and summary["errors"] == 0, summary
    assert summary["findings"] >= 1, summary
    views = [admin_get(rep, f"/v1/admin/risk/accounts/{racct}") for rep in (r1, r2)]
    assert views[0] == views[1]  # one state, whichever replica is asked
    state = views[0]["state"]
    assert state is not None and state["requests_seen"] == N_RISK, state  # both replicas' traffic
    assert views[0]["findings"] and views[0]["findings"][0]["id"] == state["last_finding_id"]
    listings = [admin_get(rep, "/v1/admin/risk/accounts?limit=500") for rep in (r1, r2)]
    assert listings[0] == listings[1] and racct in {s["subject_id"] for s in listings[0]["data"]}
    n_flagged = 0
    if state["flagged"]:
        # the policy reads the shared state within policy.cache_ttl_s (1 s) on every replica:
        # flagged, standard tier -> parameters are capped (n <= 1) on both
        for rep in (r1, r2):
            poll(
                lambda rep=rep: drv.chat(rep, rkey, n=2).status_code,  # type: ignore[misc]
                lambda status: status == 400,
                f"the flag to apply on {rep.name}",
                timeout=5,
            )
        n_flagged = len(drv.sent) - total

    # (d) no lost or duplicated event rows ------------------------------------------------------
    for rep in (r1, r2):
        rep.stop()  # SIGTERM: in-flight requests finish, then the event writer flushes
        log = rep.log_path.read_text()
        assert "gateway stopped; events flushed" in log and "Traceback" not in log, rep.log_tail()
        assert "circuit open" not in log  # the limiter never left Redis
    ids = deployment.event_ids()
    assert len(drv.sent) == total + n_flagged
    assert len(ids) == len(set(ids)), "duplicated event rows"
    assert sorted(ids) == sorted(drv.sent), (
        f"lost: {sorted(set(drv.sent) - set(ids))[:5]}, unexpected: {sorted(set(ids) - set(drv.sent))[:5]}"
    )
    with deployment.sql() as conn:
        by_status = dict(conn.execute("SELECT status, count(*) FROM events GROUP BY status").fetchall())
    assert by_status[429] == 4 * RPM + 2 - (RPM - 4) and by_status[403] == 4, by_status
    print(
        f"\nreplicas ready in {started:.1f} s; flagged={state['flagged']} "
        f"(score {state['score']:.3f}); {len(ids)} event rows; whole test {time.monotonic() - t0:.1f} s"
    )
