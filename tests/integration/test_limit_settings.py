"""``limits.shared`` settings reach the limiter the gateway builds, and the limiter's and the
policy's counters are exported on ``/metrics``. In-process gateway (TestClient), fake backend."""

from __future__ import annotations

import re
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from antidistill.errors import ConfigError
from antidistill.limits import LocalLimiter, RedisLimiter
from antidistill.settings import load_settings
from tests.integration.test_enforcement import gateway


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample of the Prometheus text exposition (fails when it is missing)."""
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert m is not None, f"{name}{labels} not in /metrics:\n{text}"
    return float(m.group(1))


def test_shared_limit_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTIDISTILL_LIMITS__SHARED__EXPECTED_REPLICAS", "3")
    monkeypatch.setenv("ANTIDISTILL_LIMITS__SHARED__KEY_PREFIX", "prod-eu:rl")
    monkeypatch.setenv("ANTIDISTILL_LIMITS__SHARED__REDIS_TIMEOUT_S", "0.1")
    monkeypatch.setenv("ANTIDISTILL_LIMITS__SHARED__COOLDOWN_S", "2.5")
    shared = load_settings(None, {"limits.shared.failure_threshold": 7}).limits.shared
    assert shared.limiter_options() == {
        "prefix": "prod-eu:rl",
        "expected_replicas": 3,
        "timeout_s": 0.1,
        "latency_budget_s": 0.02,
        "failure_threshold": 7,
        "min_outage_s": 0.2,
        "cooldown_s": 2.5,
        "max_inflight": 64,
        "max_local_subjects": 100_000,
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"limits.shared.latency_budget_s": 0.2}, "latency_budget_s (0.2) must not exceed redis_timeout_s"),
        ({"limits.shared.expected_replicas": 0}, "limits.shared.expected_replicas"),
        ({"limits.shared.key_prefix": "has space"}, "limits.shared.key_prefix"),
        ({"limits.shared.cooldown_s": 0}, "limits.shared.cooldown_s"),
    ],
)
def test_bad_shared_limit_settings_fail_at_load(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(None, overrides)


def test_the_gateway_builds_its_limiter_from_the_settings(tmp_path: Path) -> None:
    # a closed port: building the limiter does no I/O, so the gateway starts anyway
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    overrides: dict[str, Any] = {
        "redis_url": dead,
        "limits.shared.expected_replicas": 4,
        "limits.shared.key_prefix": "unit:rl",
        "limits.shared.failure_threshold": 1,
        "limits.shared.min_outage_s": 0.0,
        "limits.shared.cooldown_s": 30.0,
    }
    with gateway(tmp_path, manual_clock=False, **overrides) as env:
        assert env.rt.enforcer is not None
        limiter = env.rt.enforcer.limiter
        assert isinstance(limiter, RedisLimiter)
        assert limiter._prefix == "unit:rl" and limiter.fallback._share == 0.25
        env.decide("alice", "throttle", params={"rpm": 8})
        # Redis is down: the first call fails, the circuit opens at once (threshold 1), and every
        # replica's fallback admits its quarter of the limit: 2 of 8
        codes = [env.chat("alice").status_code for _ in range(4)]
        assert codes == [200, 200, 429, 429]
        text = env.client.get("/metrics").text
        assert metric(text, "antidistill_limiter_backend", '{backend="redis"}') == 1
        assert metric(text, "antidistill_limiter_redis_calls_total", '{result="failed"}') == 1
        assert metric(text, "antidistill_limiter_redis_calls_total", '{result="ok"}') == 0
        assert metric(text, "antidistill_limiter_fallback_decisions_total") == 4
        assert metric(text, "antidistill_limiter_breaker_opens_total") == 1
        assert metric(text, "antidistill_limiter_breaker_state", '{state="open"}') == 1
        assert metric(text, "antidistill_limiter_breaker_state", '{state="closed"}') == 0
        assert metric(text, "antidistill_limiter_local_subjects") == 1
        assert metric(text, "antidistill_policy_enforced_total", '{outcome="throttled"}') == 2
        assert metric(text, "antidistill_decision_cache_lookups_total", '{result="read"}') >= 1


def test_single_node_metrics_without_redis(tmp_path: Path) -> None:
    small: dict[str, Any] = {"limits.shared.max_local_subjects": 10}
    with gateway(tmp_path, **small) as env:
        assert env.rt.enforcer is not None
        limiter = env.rt.enforcer.limiter
        assert isinstance(limiter, LocalLimiter) and limiter._max == 10
        env.decide("alice", "throttle", params={"rpm": 1})
        assert env.chat("alice").status_code == 200 and env.chat("alice").status_code == 429
        env.decide("bob", "block")
        assert env.chat("bob").status_code == 403
        text = env.client.get("/metrics").text
        assert metric(text, "antidistill_limiter_backend", '{backend="local"}') == 1
        assert "antidistill_limiter_redis_calls_total" not in text
        assert metric(text, "antidistill_limiter_local_subjects") == 1
        assert metric(text, "antidistill_policy_enforced_total", '{outcome="throttled"}') == 1


@pytest.mark.redis
def test_redis_limiter_metrics_when_redis_answers(tmp_path: Path) -> None:
    from tests.integration.conftest import REDIS_URL, _redis_problem

    problem = _redis_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    prefix = f"test-{uuid.uuid4().hex[:12]}:rl"
    shared: dict[str, Any] = {"redis_url": REDIS_URL, "limits.shared.key_prefix": prefix}
    with gateway(tmp_path, manual_clock=False, **shared) as env:
        env.decide("alice", "throttle", params={"rpm": 2})
        assert [env.chat("alice").status_code for _ in range(3)] == [200, 200, 429]
        text = env.client.get("/metrics").text
        assert metric(text, "antidistill_limiter_redis_calls_total", '{result="failed"}') == 0
        # 3 reserves (+ settles where the throttle has a TPM: none here)
        assert (
            metric(text, "antidistill_limiter_redis_calls_total", '{result="ok"}')
            + metric(text, "antidistill_limiter_redis_calls_total", '{result="slow"}')
            == 3
        )
        assert metric(text, "antidistill_limiter_fallback_decisions_total") == 0
        assert metric(text, "antidistill_limiter_breaker_state", '{state="closed"}') == 1
        import redis

        with redis.Redis.from_url(REDIS_URL) as r:
            keys = [k.decode() for k in r.scan_iter(f"{prefix}:*")]
            assert keys == [f"{prefix}:account:{env.ids['alice']}"]
            r.delete(*keys)
