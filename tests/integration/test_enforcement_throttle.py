"""Throttles enforced by the gateway: operator throttles, the cluster's shared budget, tokens reserved
then settled, and the shared limiter through Redis (helpers from ``test_enforcement``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_enforcement import ADMIN, assert_error, gateway


# throttle -------------------------------------------------------------------------------------
def test_operator_throttle_with_a_tiny_rpm(tmp_path: Path) -> None:
    with gateway(tmp_path) as env:
        d = env.decide("alice", "throttle", params={"rpm": 1}, reason="slow down")["decision"]
        assert d["params"] == {"rpm": 1, "period_s": 60.0}
        r = env.chat("alice")
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-requests"] == "1"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        for stream in (False, True):
            r = env.chat("alice", stream=stream)  # a stream is refused before its first byte
            err = assert_error(r, 429, "rate_limit_exceeded")
            assert err["type"] == "rate_limit_error" and "RPM" in err["message"]
            assert r.headers["retry-after"] == "60" and r.headers["retry-after-ms"] == "60000"
            assert r.headers["x-ratelimit-limit-requests"] == "1"
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
            assert r.headers["x-ratelimit-reset-requests"] == "1m0s"
            assert "x-should-retry" not in r.headers
        assert env.chat("bob").status_code == 200 and env.chat("bob").status_code == 200
        codes = sorted(e.error_code or "" for e in env.events("alice"))
        assert codes == ["", "rate_limit_exceeded", "rate_limit_exceeded"]
        env.clock.advance(60)  # type: ignore[union-attr]
        assert env.chat("alice", stream=True).status_code == 200


def test_throttled_members_of_a_linked_cluster_share_the_clusters_budget(tmp_path: Path) -> None:
    """Hydra: each account under its own throttle, and the cluster's budget over all of them."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        "[throttle]\nrpm = 10\nperiod_s = 3600.0\n[cluster_throttle]\nrpm = 3\nperiod_s = 3600.0\n"
    )
    with gateway(tmp_path, **{"policy.file": str(policy)}) as env:
        env.flag("alice", cluster="hydra-1")
        env.flag("bob", cluster="hydra-1")
        env.flag("tara", cluster="hydra-2")
        env.refresh()
        shown = env.client.get("/v1/admin/accounts/alice", headers=ADMIN).json()["policy"]
        assert shown["cluster"] == "hydra-1" and shown["cluster_throttle"]["rpm"] == 3
        assert any("linked cluster hydra-1" in r for r in shown["reasons"])
        ok = [env.chat(who) for who in ("alice", "bob", "alice")]
        assert [r.status_code for r in ok] == [200, 200, 200]
        assert ok[2].headers["x-ratelimit-remaining-requests"] == "8"  # the account's own budget: 10 - 2
        for who in ("bob", "alice"):
            r = env.chat(who, stream=who == "alice")  # the cluster's 3 are spent, by the two of them
            err = assert_error(r, 429, "rate_limit_exceeded")
            assert "RPM" in err["message"] and r.headers["x-ratelimit-limit-requests"] == "3"
        assert env.rt.enforcer is not None and env.rt.enforcer.stats["cluster_throttled"] == 2
        assert env.chat("tara").status_code == 200  # another cluster: its own budget
        served = [e for e in env.events("alice") if e.status == 200]
        assert served[-1].params["policy"]["cluster"] == "hydra-1"
        env.flag("alice")  # a new finding without the link: her own budget alone applies
        env.refresh()
        r = env.chat("alice")  # 2 served before + this one; the refused stream was given back
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == "7"


def test_throttled_tokens_are_reserved_then_settled(tmp_path: Path) -> None:
    with gateway(tmp_path) as env:
        env.decide("alice", "throttle", params={"tpm": 300})
        # reserve: ceil(17 chars / 4) = 5 prompt + 100 max_tokens; used: 3 + 3 words of the fake echo
        r = env.chat("alice")
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining-tokens"] == str(300 - 105)
        r = env.chat("alice", stream=True, stream_options={"include_usage": True})
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining-tokens"] == str(300 - 6 - 105)
        assert r.text.rstrip().endswith("data: [DONE]")
        r = env.chat("alice")  # both earlier requests were settled to their 6 tokens
        assert r.headers["x-ratelimit-remaining-tokens"] == str(300 - 6 - 6 - 105)
        r = env.chat("alice", max_tokens=400)  # more than the whole TPM: can never fit
        err = assert_error(r, 429, "rate_limit_exceeded")
        assert "Request too large" in err["message"] and "retry-after" not in r.headers


@pytest.mark.redis
def test_throttle_through_redis_when_configured(tmp_path: Path) -> None:
    from antidistill.limits import RedisLimiter

    with gateway(tmp_path, manual_clock=False, redis_url="redis://127.0.0.1:6379/0") as env:
        assert env.rt.enforcer is not None and isinstance(env.rt.enforcer.limiter, RedisLimiter)
        env.decide("alice", "throttle", params={"rpm": 1})
        r = env.chat("alice")
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "1"
        r = env.chat("alice", stream=True)
        assert_error(r, 429, "rate_limit_exceeded")
        assert int(r.headers["retry-after"]) >= 59
        assert env.rt.enforcer.limiter.stats()["redis_ok"] >= 2  # decided by Redis, not the fallback
