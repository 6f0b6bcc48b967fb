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

    def render(self) -> bytes:
        return generate_latest(self.registry)
