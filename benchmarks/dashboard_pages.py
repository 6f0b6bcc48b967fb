"""Load time of every dashboard page on a big PostgreSQL store (issue 7: 100k accounts, 10M events).

    .venv/bin/python benchmarks/dashboard_pages.py                  # 100k accounts, 10M events
    .venv/bin/python benchmarks/dashboard_pages.py --events 1000000 # a smaller run

It creates its own database (``antidistill_bench_dashboard`` on the test server; dropped at the end
unless ``--keep``), migrates it, and fills it:

* accounts (COPY): ``--accounts``; the last 10% are campaign accounts in 58 hydra clusters (one of
  2,000 accounts, one of 1,000, ... 50 of 100) plus 442 small unflagged clusters of ordinary accounts;
* risk state (COPY): every account scored (about 0.1% of ordinary accounts flagged, every campaign
  account flagged), 3 findings per account, an engine decision per flagged account and operator
  blocks on two clusters;
* events (server side: ``INSERT ... SELECT FROM generate_series`` in chunks of 1M, faster than any
  client-side COPY since no row crosses the wire): ``--events`` over ``--days`` days up to now; 85%
  from ordinary accounts with a heavy-tailed volume (a few accounts make ~1% each), 15% from campaign
  accounts (shared /24s, one user agent, one template); the two secondary indexes are built after
  the load, then VACUUM ANALYZE.

Then a real gateway (uvicorn in a thread, fake backend, risk engine off) serves the dashboard, the
script logs in and times every page over HTTP: the first load ("cold": empty caches, the overview
counts its whole range) and ``--repeat`` more loads (p50/p95). Results go to
``benchmarks/results/dashboard/dashboard_pages.json`` and a short table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._util import RESULTS, percentile, print_table, write_results

PG_SERVER = os.environ.get("ANTIDISTILL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
DB = "antidistill_bench_dashboard"
ADMIN_TOKEN = "bench-admin-token"
CLUSTER_SIZES = [2000, 1000, 500, 500, 300, 300, 200, 200] + [100] * 50
SMALL_CLUSTERS = 442
CHUNK = 1_000_000


def server_url(db: str) -> str:
    return PG_SERVER.rsplit("/", 1)[0] + "/" + db


def aid(n: int) -> str:
    return f"acct_{n:06d}"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- seeding -----------------------------------------------------------------------------------------
def create_db() -> None:
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB}")
        conn.execute(f"CREATE DATABASE {DB}")


def drop_db() -> None:
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def copy_rows(
    conn: psycopg.Connection[Any], table: str, columns: list[str], rows: list[tuple[Any, ...]]
) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
        for r in rows:
            cp.write_row(r)


def seed(n_accounts: int, n_events: int, days: float, now: float, rng: random.Random) -> dict[str, Any]:
    from antidistill.store import SqlStore

    t_start = time.perf_counter()
    store = SqlStore(server_url(DB))
    store.migrate()
    store.close()
    campaign_start = int(n_accounts * 0.9)
    n_campaign = n_accounts - campaign_start
    sizes = [max(1, round(s * n_campaign / 10_000)) for s in CLUSTER_SIZES]
    cluster_of: dict[int, str] = {}
    n = campaign_start
    for i, size in enumerate(sizes):
        for _ in range(size):
            if n < n_accounts:
                cluster_of[n] = f"c{i + 1}"
                n += 1
    small = {}
    for j in range(SMALL_CLUSTERS):
        cid = f"c{1000 + j}"
        for k in range(3):
            small[j * 200 + k] = cid
    span = days * 86400.0
    t0 = now - span
    with psycopg.connect(server_url(DB)) as conn:
        accounts_rows = []
        for i in range(n_accounts):
            meta = {"payment_fingerprint": f"pm_{cluster_of[i]}"} if i in cluster_of and i % 3 == 0 else {}
            created = t0 + rng.random() * span * 0.5
            accounts_rows.append((aid(i), f"user-{i:06d}", "standard", "active", json.dumps(meta), created))
        copy_rows(conn, "accounts", ["id", "name", "tier", "status", "metadata", "created_at"], accounts_rows)
        log(f"accounts: {n_accounts:,} rows")

        states, finds, decs = [], [], []
        flagged_at: dict[str, float] = {}
        fid = 0
        for i in range(n_accounts):
            camp = i in cluster_of
            flagged = camp or rng.random() < 0.001
            score = 0.99 + rng.random() * 0.0099 if flagged else rng.random() ** 4 * 0.95
            cluster = cluster_of.get(i) or small.get(i)
            seen = rng.randint(20, 400) if camp else max(4, int(2000 * rng.random() ** 8))
            first = t0 + span * (0.3 + 0.7 * rng.random()) if flagged else None
            last_ts = first if first else t0 + span * rng.random()
            reasons = (
                [f"member of cluster {cluster}: linked by an IP network, prompt templates"] if camp else []
            )
            reasons.append(f"{seen} prompts; benign accounts of this size reach it with p = 1e-05")
            for k in range(3):
                fid += 1
                finds.append(
                    (
                        "account",
                        aid(i),
                        last_ts - (2 - k) * 600,
                        min(score, 0.5 + 0.25 * k),
                        k == 2 and flagged,
                        json.dumps(reasons),
                        "{}",
                        cluster,
                        seen // (3 - k),
                    )
                )
            states.append(
                (
                    "account",
                    aid(i),
                    score,
                    flagged,
                    json.dumps(reasons),
                    "{}",
                    cluster,
                    seen,
                    last_ts,
                    now,
                    first,
                    fid,
                )
            )
            if flagged:
                flagged_at[aid(i)] = first or now
        cluster_members: dict[str, list[int]] = {}
        for i, c in {**cluster_of, **small}.items():
            cluster_members.setdefault(c, []).append(i)
        for cid, members in cluster_members.items():
            camp = cid in set(cluster_of.values())
            fid += 1
            ts = t0 + span * (0.3 + 0.7 * rng.random())
            reasons = json.dumps(
                [f"member of cluster {cid}: {len(members)} accounts linked by an IP network"]
            )
            feats = json.dumps({"members": len(members)})
            score = 0.9999 if camp else 0.3 * rng.random()
            volume = len(members) * (200 if camp else 20)
            finds.append(("cluster", cid, ts, score, camp, reasons, feats, cid, volume))
            states.append(
                ("cluster", cid, score, camp, reasons, feats, cid, volume, ts, now, ts if camp else None, fid)
            )
        cols = [
            "subject_kind",
            "subject_id",
            "ts",
            "score",
            "flagged",
            "reasons",
            "features",
            "cluster",
            "requests_seen",
        ]
        copy_rows(conn, "findings", cols, finds)
        copy_rows(
            conn,
            "risk_state",
            [
                *cols[:2],
                "score",
                "flagged",
                "reasons",
                "features",
                "cluster",
                "requests_seen",
                "ts",
                "updated_at",
                "first_flagged_at",
                "last_finding_id",
            ],
            states,
        )
        blocked = {aid(i) for c in ("c3", "c4") for i in cluster_members.get(c, [])}
        for sid, ts in flagged_at.items():
            action, actor = ("block", "operator:bench") if sid in blocked else ("throttle", "engine")
            decs.append((ts + 60, "account", sid, action, actor, "flagged", None, "{}", True, None, None))
        copy_rows(
            conn,
            "decisions",
            [
                "ts",
                "subject_kind",
                "subject_id",
                "action",
                "actor",
                "reason",
                "finding_id",
                "params",
                "active",
                "reversed_at",
                "reversed_by",
            ],
            decs,
        )
        conn.execute("UPDATE accounts SET status = 'blocked' WHERE id = ANY(%s)", (sorted(blocked),))
        conn.commit()
        log(f"risk: {len(states):,} states, {len(finds):,} findings, {len(decs):,} decisions")
        t_events = time.perf_counter()
        conn.execute("DROP INDEX IF EXISTS ix_events_ts")
        conn.execute("DROP INDEX IF EXISTS ix_events_account_ts")
        conn.commit()
        sql = """
        INSERT INTO events (id, ts, account_id, key_id, client_ip, user_agent, endpoint, model, request,
                            params, response, prompt_tokens, completion_tokens, latency_ms, status,
                            error_code, stream, watermark_key_id, watermark_config_hash)
        SELECT 'ev' || lpad(g::text, 10, '0'), %(t0)s + y.u * %(span)s, 'acct_' || lpad(x.n::text, 6, '0'),
               'k' || x.n, CASE WHEN y.camp THEN '198.51.' || (x.n %% 200) || '.' || (g %% 250)
                           ELSE '10.' || (x.n %% 250) || '.' || (x.n %% 199) || '.' || (g %% 250) END,
               CASE WHEN y.camp THEN 'harvest-client/2.7' ELSE 'Mozilla/5.0' END, 'chat', 'bench-model',
               json_build_object('messages', json_build_array(json_build_object('role', 'user', 'content',
                   CASE WHEN y.camp THEN 'Question: topic ' || (g %% 5000) ||
                        E'\\nExplain your reasoning step by step, then give the final answer.'
                        ELSE 'Hi, can you help me with item ' || (g %% 977) || '?' END))),
               '{}'::json, 'answer ' || g, 40, 200, 30.0, 200, NULL, false, 'wk_' || x.n, NULL
        FROM (SELECT g, random() AS u, random() < 0.15 AS camp, random() AS v
              FROM generate_series(%(lo)s, %(hi)s) g) y
        CROSS JOIN LATERAL (SELECT
            CASE WHEN y.camp THEN %(cstart)s + floor(y.v * %(ncamp)s)::int
                 ELSE floor(%(cstart)s * power(y.v, 3))::int END AS n) x
        """
        for lo in range(0, n_events, CHUNK):
            hi = min(n_events, lo + CHUNK) - 1
            params = {
                "t0": t0,
                "span": span,
                "lo": lo,
                "hi": hi,
                "cstart": campaign_start,
                "ncamp": n_campaign,
            }
            conn.execute(sql, params)
            conn.commit()
            log(f"events: {hi + 1:,} / {n_events:,}")
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("CREATE INDEX ix_events_ts ON events (ts, id)")
        conn.execute("CREATE INDEX ix_events_account_ts ON events (account_id, ts, id)")
        conn.commit()
        log("events: indexes built")
        t_events = time.perf_counter() - t_events
    with psycopg.connect(server_url(DB), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
    log(f"vacuum analyze done; database size {size[0] if size else '?'}")
    return {
        "seconds": round(time.perf_counter() - t_start, 1),
        "events_seconds": round(t_events, 1),
        "database_size": size[0] if size else None,
        "clusters": len(cluster_members),
        "campaign_accounts": n_campaign,
        "biggest_cluster": max(len(m) for m in cluster_members.values()),
    }


# -- measuring ---------------------------------------------------------------------------------------
@contextmanager
def gateway(tmp: Path) -> Iterator[str]:
    import socket

    import uvicorn

    from antidistill.gateway.app import create_app
    from antidistill.settings import load_settings

    settings = load_settings(
        None,
        {
            "database_url": server_url(DB),
            "backend.kind": "fake",
            "server.admin_token": ADMIN_TOKEN,
            "risk.enabled": False,
            "events.spill_dir": str(tmp / "spill"),
            "watermark.master_secret": "bench",
            "dashboard.audits_dir": str(tmp / "audits"),
        },
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the gateway did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def login(client: httpx.Client) -> None:
    page = client.get("/dashboard/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
    assert nonce is not None
    r = client.post(
        "/dashboard/login",
        data={"nonce": nonce.group(1), "next": "/dashboard/", "operator": "bench", "token": ADMIN_TOKEN},
    )
    assert r.status_code == 303, r.text[:300]


def pick_subjects(n_accounts: int) -> dict[str, str]:
    with psycopg.connect(server_url(DB)) as conn:
        heavy = conn.execute(
            "SELECT account_id FROM events WHERE account_id = %s LIMIT 1", (aid(0),)
        ).fetchone()
        member = conn.execute(
            "SELECT subject_id FROM risk_state WHERE subject_kind = 'account' AND cluster = 'c1' LIMIT 1"
        ).fetchone()
        counts = {
            a: conn.execute("SELECT count(*) FROM events WHERE account_id = %s", (a,)).fetchone()
            for a in (aid(0), member[0] if member else aid(n_accounts - 1))
        }
    log(f"heavy account {aid(0)}: {counts[aid(0)][0] if counts[aid(0)] else 0:,} events")
    return {
        "heavy": heavy[0] if heavy else aid(0),
        "member": member[0] if member else aid(n_accounts - 1),
        "heavy_events": str(counts[aid(0)][0] if counts[aid(0)] else 0),
    }


def measure(base: str, pages: dict[str, str], repeat: int) -> list[dict[str, Any]]:
    rows = []
    with httpx.Client(base_url=base, timeout=120, follow_redirects=False) as client:
        login(client)
        for name, path in pages.items():
            times = []
            size = 0
            for _ in range(repeat + 1):
                t = time.perf_counter()
                r = client.get(path)
                dt = (time.perf_counter() - t) * 1000
                if r.status_code != 200:
                    raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
                size = len(r.content)
                times.append(dt)
            warm = times[1:]
            rows.append(
                {
                    "page": name,
                    "path": path,
                    "cold_ms": round(times[0], 1),
                    "p50_ms": round(percentile(warm, 50), 1),
                    "p95_ms": round(percentile(warm, 95), 1),
                    "max_ms": round(max(warm), 1),
                    "kb": round(size / 1024, 1),
                    "n": len(warm),
                }
            )
            log(f"{name}: cold {times[0]:.0f} ms, p50 {percentile(warm, 50):.0f} ms")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--accounts", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the database (and reuse it with --reuse)")
    ap.add_argument("--reuse", action="store_true", help="measure a database kept by an earlier --keep run")
    args = ap.parse_args()
    import tempfile

    now = time.time()
    seeded: dict[str, Any] = {"reused": True}
    previous = RESULTS / "dashboard" / "dashboard_pages.json"
    if args.reuse and previous.exists():  # the seeding figures of the run that kept the database
        seeded = {**json.loads(previous.read_text()).get("seed", {}), "reused": True}
    if not args.reuse:
        create_db()
        log(f"seeding {args.accounts:,} accounts and {args.events:,} events over {args.days:g} days")
        seeded = seed(args.accounts, args.events, args.days, now, random.Random(args.seed))
    try:
        subjects = pick_subjects(args.accounts)
        pages = {
            "overview 30d (first page viewed)": "/dashboard/?range=30d",
            "overview 24h": "/dashboard/?range=24h",
            "overview 7d": "/dashboard/?range=7d",
            "accounts (flagged, page 1)": "/dashboard/accounts",
            "accounts (all, page 101)": "/dashboard/accounts?flagged=0&page=100",
            "accounts by volume": "/dashboard/accounts?flagged=0&order=volume",
            "clusters": "/dashboard/clusters",
            f"account, heaviest ({int(subjects['heavy_events']):,} events)": (
                f"/dashboard/accounts/{subjects['heavy']}"
            ),
            "account, 30d range": f"/dashboard/accounts/{subjects['heavy']}?range=30d",
            "account, campaign member": f"/dashboard/accounts/{subjects['member']}",
            "cluster, biggest (page 1)": "/dashboard/clusters/c1",
            "cluster, biggest (page 20)": "/dashboard/clusters/c1?page=19",
            "cluster, 100 accounts": "/dashboard/clusters/c20",
            "audits": "/dashboard/audits",
            "live feed": "/dashboard/api/live?after=1",
        }
        with tempfile.TemporaryDirectory() as tmp, gateway(Path(tmp)) as base:
            rows = measure(base, pages, args.repeat)
    finally:
        if not args.keep:
            drop_db()
            log("database dropped")
    (RESULTS / "dashboard").mkdir(parents=True, exist_ok=True)
    path = write_results(
        "dashboard/dashboard_pages",
        {
            "config": {
                "accounts": args.accounts,
                "events": args.events,
                "days": args.days,
                "repeat": args.repeat,
            },
            "seed": seeded,
            "pages": rows,
            "note": "cold = first load of the page after the gateway started; the 30-day overview is viewed "
            "first, so its cold load counts the whole range; the first overview also starts the background "
            "pre-count of the 7-day range, which the 7-day page's cold load may wait for; p50/p95 over the "
            "following loads, sequential, over HTTP on loopback",
        },
    )
    print()
    print_table(rows, ["page", "cold_ms", "p50_ms", "p95_ms", "kb"])
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
