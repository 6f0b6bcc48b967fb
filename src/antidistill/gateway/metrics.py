"""Prometheus metrics of one gateway app (own registry: several apps can live in one process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _WriterCollector(Collector):
    """Reads the event writer's counters at scrape time (no hot-path cost)."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def collect(self) -> Any:
        w = self._writer
        for name in (
            "events_submitted",
            "events_written",
            "events_spilled",
            "events_replayed",
            "events_rejected",
            "events_lost",
            "write_errors",
        ):
            c = CounterMetricFamily(f"antidistill_{name}", f"Event writer: {name.replace('_', ' ')}.")
            c.add_metric([], float(getattr(w, name, 0)))
            yield c
        g = GaugeMetricFamily("antidistill_event_queue_depth", "Events waiting to be written.")
        qsize = getattr(w, "queue_depth", None)
        g.add_metric([], float(qsize() if callable(qsize) else 0))
        yield g


_BREAKER_STATES = ("closed", "open", "half_open")


class _OverloadCollector(Collector):
    """Load shedding (gateway/overload.py): requests refused while saturated, and the loop's lag."""

    def __init__(self, guard: Any) -> None:
        self._guard = guard

    def collect(self) -> Any:
        g = self._guard
        c = CounterMetricFamily(
            "antidistill_requests_shed", "Generation requests refused (503 overloaded) while saturated."
        )
        c.add_metric([], float(g.shed))
        yield c
        lag = GaugeMetricFamily(
            "antidistill_event_loop_lag_seconds", "Lag of the event loop + worker threads (last sample)."
        )
        lag.add_metric([], float(g.last_lag_s))
        yield lag
        peak = GaugeMetricFamily(
            "antidistill_event_loop_lag_max_seconds", "Largest lag of the event loop + worker threads."
        )
        peak.add_metric([], float(g.max_lag_s))
        yield peak
        limit = GaugeMetricFamily(
            "antidistill_inflight_limit", "Adaptive limit of generation requests in flight (load shedding)."
        )
        limit.add_metric([], float(g.limit))
        yield limit


class _AuthCacheCollector(Collector):
    """The auth cache's counters (gateway/auth_cache.py): hits, store reads, requests served
    without the cache because Redis could not say whether an operator changed something, and
    operator changes seen."""

    def __init__(self, auth: Any) -> None:
        self._auth = auth

    def collect(self) -> Any:
        c = CounterMetricFamily(
            "antidistill_auth_cache", "Authentications by how they were answered.", labels=["result"]
        )
        for result in ("hits", "reads", "uncached", "changes"):
            c.add_metric([result], float(self._auth.stats[result]))
        yield c


class _EnforcementCollector(Collector):
    """Reads the enforcer's, its decision cache's and its limiter's counters at scrape time.

    The limiter is a ``RedisLimiter`` (shared counters, circuit breaker, local fallback) or a
    ``LocalLimiter`` (single node); both have ``stats()``. A counter the limiter does not keep is
    simply not exported."""

    def __init__(self, enforcer: Any) -> None:
        self._enforcer = enforcer

    def collect(self) -> Any:
        e = self._enforcer
        yield from self._policy(e)
        limiter = e.limiter
        stats: dict[str, Any] = dict(limiter.stats()) if callable(getattr(limiter, "stats", None)) else {}
        shared = "state" in stats
        info = GaugeMetricFamily(
            "antidistill_limiter_backend",
            "Where throttle counters live: redis (shared by replicas) or local (this process).",
            labels=["backend"],
        )
        info.add_metric(["redis" if shared else "local"], 1.0)
        yield info
        if shared:
            calls = CounterMetricFamily(
                "antidistill_limiter_redis_calls",
                "Limiter calls to Redis by result (failed: error or timeout; slow: over the latency "
                "budget, still used).",
                labels=["result"],
            )
            for result in ("ok", "failed", "slow"):
                calls.add_metric([result], float(stats.get(f"redis_{result}", 0)))
            yield calls
            c = CounterMetricFamily(
                "antidistill_limiter_fallback_decisions",
                "Reservations decided by the local fallback (Redis failed, slow or circuit open).",
            )
            c.add_metric([], float(stats.get("fallback_decisions", 0)))
            yield c
            c = CounterMetricFamily("antidistill_limiter_breaker_opens", "Times the Redis circuit opened.")
            c.add_metric([], float(stats.get("breaker_opens", 0)))
            yield c
            g = GaugeMetricFamily(
                "antidistill_limiter_breaker_state", "1 for the circuit's current state.", labels=["state"]
            )
            for state in _BREAKER_STATES:
                g.add_metric([state], 1.0 if stats.get("state") == state else 0.0)
            yield g
        prefix = "fallback_" if shared else ""
        g = GaugeMetricFamily(
            "antidistill_limiter_local_subjects",
            "Subjects held by the in-process limiter (the fallback when Redis is configured).",
        )
        g.add_metric([], float(stats.get(f"{prefix}subjects", 0)))
        yield g
        c = CounterMetricFamily(
            "antidistill_limiter_local_evictions",
            "Subjects dropped from the in-process limiter when full (active: still draining).",
            labels=["kind"],
        )
        for kind in ("idle", "active"):
            c.add_metric([kind], float(stats.get(f"{prefix}evicted_{kind}", 0)))
        yield c

    @staticmethod
    def _policy(e: Any) -> Any:
        c = CounterMetricFamily(
            "antidistill_policy_enforced", "Requests refused or changed by the policy.", labels=["outcome"]
        )
        for outcome in ("blocked", "reverify", "throttled", "capped"):
            c.add_metric([outcome], float(e.stats.get(outcome, 0)))
        yield c
        c = CounterMetricFamily(
            "antidistill_policy_transitions", "Engine decisions recorded by this replica (level changes)."
        )
        c.add_metric([], float(e.stats.get("transitions", 0)))
        yield c
        cache = e.cache
        c = CounterMetricFamily(
            "antidistill_decision_cache_lookups",
            "Risk state / decision lookups: hit (cached) or read (from the store).",
            labels=["result"],
        )
        c.add_metric(["hit"], float(cache.hits))
        c.add_metric(["read"], float(cache.reads))
        yield c


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "antidistill_requests", "Requests by endpoint and status.", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "antidistill_request_seconds",
            "Gateway request latency (to the last byte).",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("antidistill_tokens", "Tokens served.", ["kind"], registry=r)
        self.inflight = Gauge("antidistill_inflight_requests", "Requests being served.", registry=r)

    def watch_writer(self, writer: Any) -> None:
        self.registry.register(_WriterCollector(writer))

    def watch_overload(self, guard: Any) -> None:
        self.registry.register(_OverloadCollector(guard))

    def watch_auth(self, auth: Any) -> None:
        self.registry.register(_AuthCacheCollector(auth))

    def watch_enforcer(self, enforcer: Any) -> None:
        self.registry.register(_EnforcementCollector(enforcer))

    def render(self) -> bytes:
        return generate_latest(self.registry)
