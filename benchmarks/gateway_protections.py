"""The gateway with every protection on, against the same fake upstream called directly.

Protections on the measured path, per request: API-key authentication (cached in process; one Redis
read of the operators' change token per request, a Postgres read on a miss), the
policy with the account's risk state and active decision (``DecisionCache``: one Postgres read per
account per ``policy.cache_ttl_s``), an operator throttle on every account so that the shared limiter
runs on every request (reserve before the upstream call + settle after it: two Lua calls to Redis),
and the event log written to Postgres (batched by the event writer). The risk *engine* itself is not
in the gateway: in a multi-replica deployment it is a separate ``antidistill analyze`` process
(``--with-analyze`` runs one next to the gateway during the measurements).

Measured:
1. added latency at ``--rate`` requests/s offered (open loop, no coordinated omission): p50/p99 of
   the gateway minus direct, JSON and streaming (time to first token);
2. the gateway's RSS over ``--rss-requests`` requests after a warm-up (closed loop);
3. capacity (closed loop) and the answers at 2x capacity offered for ``--overload-s`` seconds:
   200 / 429 / 503 (with or without ``retry-after``) / other / client timeouts (``--timeout-s``);
4. that every answered request has its row in Postgres (after a graceful stop).

    .venv/bin/python benchmarks/gateway_protections.py [--rate 300] [--duration 20] [--delay-ms 20]

Layout on a 2-core machine: the gateway is pinned to core 1; the fake upstream, this load generator,
Postgres and Redis share core 0. Needs PostgreSQL and Redis (defaults: the test servers on
127.0.0.1); a fresh schema and Redis key prefix are used and removed afterwards.
Writes benchmarks/results/gateway_protections.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._litellm import LITELLM_KEY, start_litellm
from benchmarks._load import BODY, Targets, closed_loop, open_loop, start_fake_upstream, stop_all
from benchmarks._load import free_port as _free_port
from benchmarks._load import pinned as _pinned
from benchmarks._load import wait_http as _wait_http
from benchmarks._util import print_table, write_results

VENV_BIN = Path(sys.executable).parent
ADMIN_TOKEN = "bench-admin-token"


# the processes -----------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def load_avg() -> float:
    return os.getloadavg()[0]


def preflight(database_url: str, redis_url: str) -> None:
    import psycopg
    import redis

    problems = []
    try:
        with psycopg.connect(database_url, connect_timeout=3):
            pass
    except Exception as e:
        problems.append(f"PostgreSQL not reachable at {database_url} ({str(e).strip().splitlines()[0]})")
    try:
        with redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=2) as r:
            r.ping()
    except Exception as e:
        problems.append(f"Redis not reachable at {redis_url} ({e})")
    if problems:
        sys.exit("gateway_protections: " + "; ".join(problems))


def cleanup(database_url: str, schema: str, redis_url: str, prefix: str) -> None:
    import psycopg
    import redis

    with contextlib.suppress(Exception), psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    with contextlib.suppress(Exception), redis.Redis.from_url(redis_url) as r:
        keys = list(r.scan_iter(f"{prefix}:*"))
        if keys:
            r.delete(*keys)


def count_rows(database_url: str, schema: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute(f'SELECT count(*), count(DISTINCT id) FROM "{schema}".events').fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


def setup_accounts(gw: str, n: int, rpm: int, tpm: int) -> list[str]:
    """``n`` accounts, each with an operator throttle (so the shared limiter runs on every request)."""
    keys = []
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=gw, headers=admin, timeout=30) as c:
        for i in range(n):
            r = c.post("/admin/accounts", json={"name": f"bench-{i}"})
            r.raise_for_status()
            acct, key = r.json()["account"]["id"], r.json()["api_key"]
            r = c.post(
                f"/v1/admin/accounts/{acct}/decision",
                json={"action": "throttle", "params": {"rpm": rpm, "tpm": tpm}, "reason": "benchmark"},
            )
            r.raise_for_status()
            keys.append(key)
    return keys


def latency_pair(t: Targets, rate: float, duration: float) -> dict[str, Any]:
    return {
        "json": asyncio.run(open_loop(t, rate, duration, False)),
        "stream": asyncio.run(open_loop(t, rate, duration, True)),
    }


def added(target: dict[str, Any], direct: dict[str, Any]) -> dict[str, float]:
    return {
        "json_added_p50_ms": target["json"]["p50_ms"] - direct["json"]["p50_ms"],
        "json_added_p99_ms": target["json"]["p99_ms"] - direct["json"]["p99_ms"],
        "stream_added_ttft_p50_ms": target["stream"]["ttft_p50_ms"] - direct["stream"]["ttft_p50_ms"],
        "stream_added_ttft_p99_ms": target["stream"]["ttft_p99_ms"] - direct["stream"]["ttft_p99_ms"],
    }


def rss_run(t: Targets, pid: int, requests: int) -> dict[str, Any]:
    rss0 = rss_mb(pid)
    peak = rss0
    t0 = time.perf_counter()

    async def run() -> dict[str, Any]:
        nonlocal peak
        task = asyncio.ensure_future(closed_loop(t, 32, total=requests))
        while not task.done():
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.5)
        return await task

    rr = asyncio.run(run())
    rss1 = rss_mb(pid)
    return {
        "requests": rr["requests"],
        "seconds": time.perf_counter() - t0,
        "start_mb": rss0,
        "end_mb": rss1,
        "peak_mb": max(peak, rss1),
        "growth_mb": rss1 - rss0,
        "non_200": rr["non_200"],
    }


def overload(t: Targets, seconds: float, timeout_s: float) -> tuple[float, dict[str, Any]]:
    """Capacity (closed loop, 64 connections, 10 s: answers 200 per second), then 2x that offered
    for ``seconds``."""
    cap = asyncio.run(closed_loop(t, 64, duration=10.0))
    over = asyncio.run(open_loop(t, 2 * cap["rps"], seconds, False, timeout_s=timeout_s, warmup_s=0.0))
    return cap["rps"], {
        **over,
        "client_timeout_s": timeout_s,
        "capacity_requests": cap["requests"],
        "capacity_non_200": cap["non_200"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=300.0, help="offered requests/s for the latency test")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per latency run")
    ap.add_argument("--delay-ms", type=float, default=20.0, help="the fake upstream's delay")
    ap.add_argument("--accounts", type=int, default=50)
    ap.add_argument("--rss-requests", type=int, default=20_000)
    ap.add_argument("--overload-s", type=float, default=10.0)
    ap.add_argument("--timeout-s", type=float, default=10.0, help="client timeout in the 2x-capacity test")
    ap.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--with-analyze", action="store_true", help="run `antidistill analyze` meanwhile")
    ap.add_argument(
        "--latency-only", action="store_true", help="only the added latency (no RSS, overload, peers)"
    )
    ap.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the gateway, e.g. ANTIDISTILL_SERVER__AUTH_CACHE_TTL_S=0 (repeatable)",
    )
    ap.add_argument(
        "--litellm",
        type=Path,
        default=None,
        help="also measure LiteLLM's proxy: its `litellm` executable (e.g. .venv-litellm/bin/litellm)",
    )
    args = ap.parse_args()
    preflight(args.database_url, args.redis_url)

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    tmp = Path(tempfile.mkdtemp(prefix="adprot-"))
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    prefix = f"bench-{uuid.uuid4().hex[:8]}:rl"
    db = f"{args.database_url}?schema={schema}"
    up_port, gw_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTIDISTILL_")}
    env.update(
        {
            "ANTIDISTILL_DATABASE_URL": db,
            "ANTIDISTILL_REDIS_URL": args.redis_url,
            "ANTIDISTILL_LIMITS__SHARED__KEY_PREFIX": prefix,
            "ANTIDISTILL_SERVER__ADMIN_TOKEN": ADMIN_TOKEN,
            "ANTIDISTILL_EVENTS__SPILL_DIR": str(tmp / "spill"),
            "ANTIDISTILL_WATERMARK__MASTER_SECRET_FILE": str(tmp / "wm.secret"),
            "ANTIDISTILL_RISK__ENABLED": "false",
            "ANTIDISTILL_RISK__EMBEDDER": "hashing",
            "HF_HUB_OFFLINE": "1",
        }
    )
    for item in args.gateway_env:
        k, sep, v = item.partition("=")
        if not sep or not k:
            ap.error(f"--gateway-env takes KEY=VALUE, got {item!r}")
        env[k] = v
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, Any] = {
        "rate": args.rate,
        "duration_s": args.duration,
        "delay_ms": args.delay_ms,
        "accounts": args.accounts,
        "protections": [
            "auth (in-process cache checked against the operators' change token in Redis per request; "
            "Postgres on a miss)",
            "policy + risk state/decision lookup (Postgres, 1 s cache)",
            "throttle on every account: reserve + settle in Redis (2 Lua calls/request)",
            "event log to Postgres (batched)",
        ],
        "in_gateway_risk_engine": False,
        "analyze_process": args.with_analyze,
        "load_avg_1m": {"before": load_avg()},
    }
    rows: list[dict[str, Any]] = []

    def row(name: str, target: str, r: dict[str, Any]) -> None:
        rows.append({"test": name, "target": target, **r})

    try:
        procs.append(start_fake_upstream(up_port, env, delay_ms=args.delay_ms, core=0))
        _wait_http(f"http://127.0.0.1:{up_port}/v1/models")
        upstream = f"http://127.0.0.1:{up_port}/v1"
        rate = f"{args.rate:.0f} req/s"

        # 0. the upstream alone
        direct = latency_pair(Targets(f"{upstream}/chat/completions", None), args.rate, args.duration)
        results["direct"] = direct
        for mode in ("json", "stream"):
            row(f"{rate} {mode}", "direct", direct[mode])

        # 1. the gateway: added latency at the offered rate
        gw_proc = subprocess.Popen(
            [
                *_pinned(1),
                str(VENV_BIN / "antidistill"),
                "serve",
                "--backend",
                "openai",
                "--served-model",
                "bench",
                "--upstream-url",
                upstream,
                "--port",
                str(gw_port),
                "--log-level",
                "warning",
            ],
            env=env,
        )
        procs.append(gw_proc)
        gw = f"http://127.0.0.1:{gw_port}"
        _wait_http(f"{gw}/healthz")
        keys = setup_accounts(gw, args.accounts, rpm=10_000_000, tpm=1_000_000_000)
        if args.with_analyze:
            procs.append(
                subprocess.Popen(
                    [*_pinned(0), str(VENV_BIN / "antidistill"), "analyze", "--interval", "2"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
            )
        via = Targets(f"{gw}/v1/chat/completions", keys)
        g = latency_pair(via, args.rate, args.duration)
        results["gateway"] = {**g, **added(g, direct)}
        for mode in ("json", "stream"):
            row(f"{rate} {mode}", "antidistill", g[mode])
        sent = sum(r["sent"] for r in g.values())
        with httpx.Client() as c:  # the protections really ran
            r = c.post(via.url, json=BODY, headers=via.h(0))
            sent += 1
            assert r.status_code == 200 and "x-ratelimit-limit-requests" in r.headers, r.headers

        results["gateway_env"] = args.gateway_env
        if args.latency_only:
            results["load_avg_1m"]["after"] = load_avg()
            path = write_results("gateway_protections_latency", results)
            print_table(
                rows, ["test", "target", "achieved_rps", "p50_ms", "p99_ms", "ttft_p99_ms", "outcomes"]
            )
            a = results["gateway"]
            print(
                f"gateway: added p50/p99 {a['json_added_p50_ms']:.2f}/{a['json_added_p99_ms']:.2f} ms (json)"
            )
            print(f"wrote {path}")
            return

        # 2. RSS over --rss-requests requests
        results["gateway"]["rss"] = rss_run(via, gw_proc.pid, args.rss_requests)
        sent += results["gateway"]["rss"]["requests"]

        # 3. capacity, then 2x capacity offered
        cap, over = overload(via, args.overload_s, args.timeout_s)
        sent += over["capacity_requests"] + over["sent"]
        results["gateway"]["capacity_rps"] = cap
        results["gateway"]["overload_2x"] = over
        row(f"2x capacity ({2 * cap:.0f} req/s)", "antidistill", over)

        # 4. every request has its row (after a graceful stop: the writer flushes), except those shed
        # by the overload guard before authentication (503 overloaded: no account, no event)
        gw_proc.terminate()
        gw_proc.wait(60)
        rows_n, distinct = count_rows(args.database_url, schema)
        shed = over["outcomes"].get("503+retry-after", 0) + over["capacity_non_200"].get(503, 0)
        shed += results["gateway"]["rss"]["non_200"].get(503, 0)
        shed += sum(g[mode]["outcomes"].get("503+retry-after", 0) for mode in ("json", "stream"))
        results["gateway"]["event_rows"] = {
            "rows": rows_n,
            "distinct_ids": distinct,
            "requests_sent": sent,
            "shed_503": shed,
            "expected_rows": sent - shed,
        }

        # 5. LiteLLM's proxy on the same upstream, same load
        if args.litellm is not None:
            lproc, lurl = start_litellm(args.litellm, upstream, args.redis_url, tmp, env)
            procs.append(lproc)
            lt = Targets(f"{lurl}/v1/chat/completions", [LITELLM_KEY])
            # a fresh proxy first: its capacity and 2x that; then half its capacity (where it keeps
            # up) against the upstream at that rate; then the gateway's load, --rate
            lcap, lover = overload(lt, args.overload_s, args.timeout_s)
            row(f"2x capacity ({2 * lcap:.0f} req/s)", "litellm", lover)
            time.sleep(5)  # let the refused/abandoned work drain
            half = max(1.0, round(lcap / 2))
            dhalf = latency_pair(Targets(f"{upstream}/chat/completions", None), half, args.duration)
            lhalf = latency_pair(lt, half, args.duration)
            for mode in ("json", "stream"):
                row(f"{half:.0f} req/s {mode}", "direct", dhalf[mode])
                row(f"{half:.0f} req/s {mode}", "litellm", lhalf[mode])
            lres = latency_pair(lt, args.rate, args.duration)
            for mode in ("json", "stream"):
                row(f"{rate} {mode}", "litellm", lres[mode])
            results["litellm"] = {
                **lres,
                **added(lres, direct),
                "at_half_capacity": {"rate": half, "direct": dhalf, **lhalf, **added(lhalf, dhalf)},
                "capacity_rps": lcap,
                "overload_2x": lover,
                "rss_mb_after": rss_mb(lproc.pid),
                "version": subprocess.run(
                    [
                        str(args.litellm.parent / "python"),
                        "-c",
                        "import litellm, importlib.metadata as m; print(m.version('litellm'))",
                    ],
                    capture_output=True,
                    text=True,
                ).stdout.strip(),
                "notes": (
                    "master-key auth, per-deployment rpm/tpm counted in Redis (usage-based-routing-v2, "
                    "pre-call checks). Postgres logging OFF: LiteLLM's DB layer needs Prisma engines "
                    "downloaded from binaries.prisma.sh at start, unreachable here (ENOTFOUND); without "
                    "a DB it has no virtual keys, so no per-key limits either."
                ),
            }
            lproc.terminate()
        results["load_avg_1m"]["after"] = load_avg()

        path = write_results("gateway_protections", results)
        print_table(
            rows,
            ["test", "target", "achieved_rps", "p50_ms", "p99_ms", "ttft_p50_ms", "ttft_p99_ms", "outcomes"],
        )
        for name in ("gateway", "litellm"):
            if name in results:
                a = results[name]
                print(
                    f"{name}: added p50/p99 {a['json_added_p50_ms']:.2f}/{a['json_added_p99_ms']:.2f} ms "
                    f"(json), TTFT {a['stream_added_ttft_p50_ms']:.2f}/{a['stream_added_ttft_p99_ms']:.2f} "
                    "ms (stream); "
                    f"capacity {a['capacity_rps']:.0f} req/s; at 2x: {a['overload_2x']['outcomes']}"
                )
        if "litellm" in results:
            h = results["litellm"]["at_half_capacity"]
            print(
                f"litellm at half its capacity ({h['rate']:.0f} req/s): added p50/p99 "
                f"{h['json_added_p50_ms']:.2f}/{h['json_added_p99_ms']:.2f} ms (json), TTFT "
                f"{h['stream_added_ttft_p50_ms']:.2f}/{h['stream_added_ttft_p99_ms']:.2f} ms (stream)"
            )
        rss = results["gateway"]["rss"]
        print(
            f"gateway RSS over {rss['requests']} requests: {rss['start_mb']:.1f} -> {rss['end_mb']:.1f} MB "
            f"(growth {rss['growth_mb']:+.1f} MB, peak {rss['peak_mb']:.1f} MB)"
        )
        ev = results["gateway"]["event_rows"]
        print(
            f"event rows: {ev['rows']} ({ev['distinct_ids']} distinct ids) for {ev['requests_sent']} "
            f"requests, of which {ev['shed_503']} shed with 503 (no row): expected {ev['expected_rows']}"
        )
        print(f"load average (1 min) before/after: {results['load_avg_1m']}")
        print(f"wrote {path}")
    finally:
        stop_all(procs)
        cleanup(args.database_url, schema, args.redis_url, prefix)


if __name__ == "__main__":
    main()
