"""The policy enforced by the gateway, end to end: in-process app (Starlette TestClient, lifespan on),
fake backend, SQLite store. Risk states are written as the risk worker writes them
(``store.record_findings``); operators act through the admin API and the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from antidistill.cli.main import app as cli
from antidistill.clock import ManualClock
from antidistill.errors import ConfigError
from antidistill.gateway.app import create_app
from antidistill.gateway.runtime import Runtime
from antidistill.risk.types import Finding
from antidistill.store.base import Decision, Event
from tests.helpers import ADMIN_TOKEN, gateway_settings
from tests.integration import test_gateway_risk as risk_e2e
from tests.integration.test_gateway_risk import (
    CUE,
    N_HARVEST,
    ORDINARY,
    TOPICS,
    create_account,
    risk_settings,
    with_client_ip,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
cal_file = risk_e2e.cal_file  # fixture: the risk engine's small benign calibration, built once here
HELLO = [{"role": "user", "content": "hello there world"}]
T = TypeVar("T")
runner = CliRunner()


@dataclass
class Env:
    client: TestClient
    app: Any
    keys: dict[str, str]
    ids: dict[str, str]
    db: str
    clock: ManualClock | None

    @property
    def rt(self) -> Runtime:
        rt: Runtime = self.app.state.rt
        return rt

    def chat(self, who: str, stream: bool = False, path: str = "/v1/chat/completions", **body: Any) -> Any:
        payload: dict[str, Any] = {"model": "test-model", "max_tokens": 100, "stream": stream, **body}
        if path.endswith("chat/completions"):
            payload.setdefault("messages", HELLO)
        else:
            payload.setdefault("prompt", "hello there world")
        return self.client.post(path, json=payload, headers={"Authorization": f"Bearer {self.keys[who]}"})

    def decide(self, who: str, action: str, **body: Any) -> Any:
        r = self.client.post(
            f"/v1/admin/accounts/{who}/decision", json={"action": action, **body}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        return r.json()

    def flag(
        self,
        who: str,
        score: float = 0.97,
        flagged: bool = True,
        ts: float | None = None,
        cluster: str | None = None,
    ) -> int:
        """Store a finding for the account, as the risk worker does; returns its id."""
        store = self.rt.store
        f = Finding(
            subject_kind="account",
            subject_id=self.ids[who],
            ts=time.time() if ts is None else ts,
            score=score,
            flagged=flagged,
            reasons=("asks for step-by-step reasoning in 96% of requests",),
            requests_seen=400,
            cluster=cluster,
        )
        store.record_findings([f])
        state = store.risk_state("account", self.ids[who])
        assert state is not None
        return state.last_finding_id

    def refresh(self) -> None:
        """Let the decision cache's TTL pass (the bound within which store writes apply)."""
        assert self.clock is not None
        self.clock.advance(self.rt.settings.policy.cache_ttl_s)

    def decisions(self, who: str) -> list[Decision]:
        return self.rt.store.decisions_for("account", self.ids[who])

    def events(self, who: str) -> list[Event]:
        self.rt.events.flush()  # type: ignore[attr-defined]
        return list(self.rt.store.iter_events(account_id=self.ids[who]))


@contextmanager
def gateway(
    tmp_path: Path, manual_clock: bool = True, accounts: bool = True, **overrides: Any
) -> Iterator[Env]:
    settings = gateway_settings(tmp_path, **overrides)
    clock = ManualClock(time.time()) if manual_clock else None
    app = create_app(settings, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as client:
        rt: Runtime = app.state.rt
        keys, ids = {}, {}
        for name, tier in (("alice", "standard"), ("bob", "standard"), ("nina", "new"), ("tara", "trusted")):
            if accounts:
                acc = rt.store.create_account(name, tier)
                keys[name], ids[name] = rt.store.create_api_key(acc.id)[0], acc.id
        yield Env(client, app, keys, ids, settings.database_url, clock)


def poll(fetch: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; last value: {value!r:.2000}")
        time.sleep(0.02)


def assert_error(r: Any, status: int, code: str | None, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")  # also for stream=True: no SSE
    err: dict[str, Any] = r.json()["error"]
    assert err["code"] == code and err["param"] == param, err
    return err


def assert_blocked(r: Any) -> None:
    err = assert_error(r, 403, "account_blocked")
    assert r.headers["x-should-retry"] == "false" and err["type"] == "permission_error"


# operator block ---------------------------------------------------------------------------------
def test_operator_block_applies_to_the_very_next_request(tmp_path: Path) -> None:
    with gateway(tmp_path, manual_clock=False) as env:
        assert env.chat("alice").status_code == 200  # the decision cache now holds alice
        body = env.decide("alice", "block", reason="confirmed harvesting", by="carol")
        d = body["decision"]
        assert d["action"] == "block" and d["actor"] == "operator:carol" and d["active"]
        assert d["reason"] == "confirmed harvesting" and body["account"]["status"] == "blocked"
        assert_blocked(env.chat("alice"))
        assert_blocked(env.chat("alice", stream=True))
        assert_blocked(env.chat("alice", path="/v1/completions"))
        assert_blocked(env.client.get("/v1/models", headers={"Authorization": f"Bearer {env.keys['alice']}"}))
        assert env.chat("bob").status_code == 200  # other accounts are unaffected
        assert env.chat("bob", stream=True).status_code == 200
        refused = [e for e in env.events("alice") if e.status == 403]
        assert len(refused) == 3 and all(e.error_code == "account_blocked" for e in refused)

        r = env.client.delete("/v1/admin/accounts/alice/decision?by=carol", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert (
            r.json()["reversed"]["active"] is False
            and r.json()["reversed"]["reversed_by"] == "operator:carol"
        )
        assert r.json()["account"]["status"] == "active"
        assert env.chat("alice").status_code == 200  # reversed: the very next request is served
        r = env.client.delete("/v1/admin/accounts/alice/decision", headers=ADMIN)
        assert_error(r, 404, "not_found", "account")


def test_a_decision_written_elsewhere_applies_within_the_cache_ttl(tmp_path: Path) -> None:
    with gateway(tmp_path) as env:
        assert env.rt.enforcer is not None
        cache = env.rt.enforcer.cache
        for _ in range(5):
            assert env.chat("alice").status_code == 200
        assert cache.reads == 1 and cache.hits == 4  # no store read per request while cached
        # another replica's operator (the store only: this replica's cache is not told)
        env.rt.store.record_decision("account", env.ids["alice"], "block", "operator:dan", "elsewhere")
        env.clock.advance(0.5)  # type: ignore[union-attr]
        assert env.chat("alice").status_code == 200  # within the TTL: the cached entry still applies
        env.clock.advance(0.5)  # type: ignore[union-attr]
        assert_blocked(env.chat("alice"))  # TTL (1 s) reached: read again, blocked by the policy
        assert env.chat("bob").status_code == 200


# the engine's level -----------------------------------------------------------------------------
def test_a_flagged_account_gets_the_tiers_actions_and_one_recorded_transition(tmp_path: Path) -> None:
    with gateway(tmp_path) as env:
        assert env.chat("alice", n=2).status_code == 200  # not flagged: nothing applies
        finding_id = env.flag("alice")
        env.refresh()
        err = assert_error(env.chat("alice", n=2), 400, "parameter_limited", "n")
        assert "limit of 1" in err["message"]
        r = env.chat("alice", logprobs=True, logit_bias={"50256": -100})
        assert_error(r, 400, "logprobs_with_logit_bias", "logit_bias")
        r = env.chat("alice", path="/v1/completions", logprobs=2, logit_bias={"1": 3})
        assert_error(r, 400, "logprobs_with_logit_bias", "logit_bias")
        for stream in (False, True):
            r = env.chat("alice", stream=stream)
            assert r.status_code == 200, r.text
            assert r.headers["x-ratelimit-limit-requests"] == "20"
            assert r.headers["x-ratelimit-limit-tokens"] == "20000"
        # bob is not flagged: no caps (the deployment allows n=3), no limit headers
        r = env.chat("bob", n=3)
        assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers

        served = [e for e in env.events("alice") if e.status == 200]
        assert "policy" not in served[0].params  # before the flag
        assert served[-1].params["policy"] == {
            "actions": ["watermark_canary", "strip_reasoning", "cap_params", "throttle"],
            "level": "flagged",
            "source": "engine",
            "watermark_scheme": "kgw_canary",
        }
        refused = sorted(e.error_code or "" for e in env.events("alice") if e.status == 400)
        assert refused == [*["logprobs_with_logit_bias"] * 2, "parameter_limited"]

        # the transition is stored once, by the engine, with the finding behind it
        [d] = poll(lambda: env.decisions("alice"), lambda ds: len(ds) == 1, "the engine's decision")
        assert d.actor == "engine" and d.action == "throttle" and d.active and d.finding_id == finding_id
        assert d.params["actions"] == ["watermark_canary", "strip_reasoning", "cap_params", "throttle"]
        assert "flagged by the risk engine (score 0.970)" in d.reason and "step-by-step" in d.reason
        for _ in range(3):
            env.refresh()
            assert env.chat("alice").status_code == 200
        assert len(env.decisions("alice")) == 1  # not per request: only on transitions

        env.flag("alice", score=0.2, flagged=False)  # a later look finds nothing
        env.refresh()
        assert env.chat("alice", n=2).status_code == 200
        back = poll(lambda: env.decisions("alice"), lambda ds: len(ds) == 2, "the transition back")
        assert back[0].action == "allow" and back[0].actor == "engine" and back[0].active
        assert back[1].reversed_by == "engine" and not back[1].active
        assert env.decisions("bob") == []


def test_reverify_and_allow_overrides_a_flag(tmp_path: Path) -> None:
    with gateway(tmp_path) as env:
        env.flag("nina")  # tier "new": flagged -> re-verification
        for stream in (False, True):
            r = env.chat("nina", stream=stream)
            err = assert_error(r, 403, "reverification_required")
            assert "re-verified" in err["message"] and "then retry" in err["message"]
            assert r.headers["x-should-retry"] == "false"
        poll(lambda: env.decisions("nina"), lambda ds: len(ds) == 1, "the engine's decision")

        d = env.decide("nina", "allow", reason="known customer, verified by phone")["decision"]
        assert d["actor"] == "operator:admin" and d["action"] == "allow" and d["finding_id"] is not None
        r = env.chat("nina", n=3)  # the very next request: no action at all, even flagged
        assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers
        [served] = [e for e in env.events("nina") if e.status == 200]
        assert served.params["policy"] == {
            "actions": [],
            "level": "flagged",
            "source": "operator",
            "decision_id": d["id"],
        }
        for _ in range(3):
            env.refresh()
            assert env.chat("nina").status_code == 200
        active = env.rt.store.active_decision("account", env.ids["nina"])
        assert active is not None and active.id == d["id"]  # the engine never overrules an operator

        shown = env.client.get("/v1/admin/accounts/nina", headers=ADMIN).json()
        assert shown["policy"]["source"] == "operator" and shown["policy"]["actions"] == []
        assert shown["reasons"] == ["asks for step-by-step reasoning in 96% of requests"]
        assert [x["actor"] for x in shown["decisions"]] == ["operator:admin", "engine"]


def test_reset_ignores_earlier_findings_only(tmp_path: Path) -> None:
    with gateway(tmp_path) as env:
        env.flag("alice", ts=time.time() - 60)
        env.refresh()
        assert env.chat("alice", n=2).status_code == 400
        env.decide("alice", "reset", reason="false positive: load test", by="erin")
        r = env.chat("alice", n=2)
        assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers
        shown = env.client.get("/v1/admin/accounts/alice", headers=ADMIN).json()
        assert shown["policy"]["level"] == "none" and shown["active_decision"]["action"] == "reset"

        env.flag("alice", ts=time.time() + 5)  # a finding made after the reset applies again
        env.refresh()
        assert_error(env.chat("alice", n=2), 400, "parameter_limited", "n")
        latest = poll(
            lambda: env.decisions("alice"), lambda ds: ds[0].actor == "engine", "the engine's decision"
        )
        assert latest[0].active and latest[1].action == "reset" and latest[1].reversed_by == "engine"


# operators: admin API, CLI, replicas ------------------------------------------------------------
def test_admin_decision_api_refuses_bad_requests(tmp_path: Path) -> None:
    with gateway(tmp_path) as env:
        url = "/v1/admin/accounts/alice/decision"
        cases = [
            ({"action": "ban"}, "action"),
            ({"reason": "x"}, "action"),
            ({"action": "block", "params": {"rpm": 1}}, "params"),
            ({"action": "throttle", "params": {"rpm": 0, "tpm": 0}}, "params"),
            ({"action": "throttle", "params": {"rps": 1}}, "params"),
            ({"action": "throttle", "params": [1]}, "params"),
            ({"action": "allow", "by": "two words"}, "by"),
            ({"action": "allow", "why": "x"}, "why"),
        ]
        for body, param in cases:
            assert_error(env.client.post(url, json=body, headers=ADMIN), 400, None, param)
        r = env.client.post("/v1/admin/accounts/nobody/decision", json={"action": "allow"}, headers=ADMIN)
        assert_error(r, 404, "not_found", "account")
        assert_error(env.client.get("/v1/admin/accounts/nobody", headers=ADMIN), 404, "not_found", "account")
        for headers in ({}, {"Authorization": f"Bearer {env.keys['alice']}"}):
            r = env.client.post(url, json={"action": "allow"}, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_token"
        assert env.decisions("alice") == []
        assert env.client.get("/v1/admin/accounts/alice", headers=ADMIN).json()["policy"]["actions"] == []


def test_two_replicas_on_one_store(tmp_path: Path) -> None:
    with gateway(tmp_path) as a, gateway(tmp_path, accounts=False) as b:
        # replica b serves alice (it now caches her state), replica a takes the operator's decisions
        b.keys, b.ids = a.keys, a.ids
        assert b.chat("alice").status_code == 200
        a.decide("alice", "throttle", params={"rpm": 1})
        assert b.chat("alice").status_code == 200 and b.chat("alice").status_code == 200  # cached
        b.refresh()  # within cache_ttl_s the decision reaches b
        assert b.chat("alice").status_code == 200
        assert_error(b.chat("alice"), 429, "rate_limit_exceeded")
        a.decide("alice", "block")
        assert_blocked(b.chat("alice"))  # a block: on every replica at once (the account's status)
        assert b.chat("bob").status_code == 200


def run(*args: str) -> Any:
    return runner.invoke(cli, list(args))


def test_cli_accounts_commands(tmp_path: Path) -> None:
    with gateway(tmp_path) as env:
        db = ["--database-url", env.db]
        finding_id = env.flag("alice")
        r = run("accounts", "block", "alice", "--reason", "harvesting", "--by", "carol", *db)
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        assert out["decision"]["actor"] == "operator:carol" and out["decision"]["finding_id"] == finding_id
        assert out["account"]["status"] == "blocked" and "metadata" not in out["account"]
        assert_blocked(env.chat("alice"))  # the gateway process sees it on the very next request

        r = run("accounts", "show", "alice", *db)
        assert r.exit_code == 0, r.output
        shown = json.loads(r.stdout)
        assert shown["account"]["name"] == "alice" and shown["state"]["flagged"] is True
        assert shown["reasons"] == ["asks for step-by-step reasoning in 96% of requests"]
        assert shown["active_decision"]["action"] == "block"
        assert shown["policy"]["actions"] == ["block"] and shown["policy"]["source"] == "operator"

        assert run("accounts", "allow", env.ids["alice"], "--reason", "ok", "--by", "dan", *db).exit_code == 0
        env.refresh()
        assert env.chat("alice", n=3).status_code == 200
        assert run("accounts", "reset", "alice", "--by", "dan", *db).exit_code == 0
        r = run("accounts", "throttle", "alice", "--rpm", "5", "--by", "dan", *db)
        assert r.exit_code == 0 and json.loads(r.stdout)["decision"]["params"] == {"rpm": 5, "period_s": 60.0}
        r = run("accounts", "reverse", "alice", "--by", "dan", *db)
        assert r.exit_code == 0 and json.loads(r.stdout)["reversed"]["action"] == "throttle"

        shown = json.loads(run("accounts", "show", "alice", *db).stdout)
        assert shown["active_decision"] is None
        assert [(d["action"], d["actor"]) for d in shown["decisions"]] == [
            ("throttle", "operator:dan"),
            ("reset", "operator:dan"),
            ("allow", "operator:dan"),
            ("block", "operator:carol"),
        ]
        assert shown["policy"]["level"] == "flagged" and shown["policy"]["source"] == "engine"

        for args, message in [
            (("accounts", "reverse", "alice"), "has no active decision"),
            (("accounts", "block", "nobody"), "no account with id or name 'nobody'"),
            (("accounts", "allow", "alice", "--by", "two words"), "operator name must be"),
            (("accounts", "throttle", "alice", "--period", "-1"), "invalid throttle params: period_s"),
        ]:
            r = run(*args, *db)
            assert r.exit_code == 2, (args, r.output)
            assert r.output.startswith("antidistill: error: ") and message in r.output
            assert len(r.output.strip().splitlines()) == 1


# the policy file ------------------------------------------------------------------------------
def test_a_bad_policy_file_fails_at_start_up_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text('[tiers.standard]\nflagged = ["watermark_canary", "shadowban"]\n')
    with pytest.raises(ConfigError, match=r"tiers\.standard\.flagged: item 1: 'shadowban' is not an action"):
        create_app(gateway_settings(tmp_path, **{"policy.file": str(bad)}))
    config = tmp_path / "antidistill.toml"
    config.write_text(f'database_url = "sqlite:///{tmp_path}/c.db"\n[policy]\nfile = "{bad}"\n')
    for args in (
        ("serve", "--config", str(config), "--backend", "fake"),
        ("policy", "show", "--file", str(bad)),
    ):
        r = run(*args)
        assert r.exit_code == 2, r.output
        assert r.output.strip().splitlines() == [
            f"antidistill: error: policy file {bad}: tiers.standard.flagged: item 1: 'shadowban' is not an "
            "action (watermark_canary, strip_reasoning, cap_params, throttle, reverify, block)"
        ]
    good = tmp_path / "good.toml"
    good.write_text("[throttle]\nrpm = 7\n")
    r = run("policy", "show", "--file", str(good))
    assert r.exit_code == 0 and json.loads(r.stdout)["throttle"]["rpm"] == 7


def test_policy_disabled_enforces_nothing(tmp_path: Path) -> None:
    with gateway(tmp_path, **{"policy.enabled": False}) as env:
        assert env.rt.enforcer is None
        env.flag("nina")
        assert env.chat("nina", n=3).status_code == 200
        env.decide("nina", "block")  # the account's status still blocks
        assert_blocked(env.chat("nina"))
        assert env.client.get("/v1/admin/accounts/nina", headers=ADMIN).json()["policy"] is None


# the store's conditional engine decision --------------------------------------------------------
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_engine_decisions_never_overrule_an_operator_and_are_recorded_once(kind: str, tmp_path: Path) -> None:
    import threading

    from tests.conftest_store import fresh_store

    with fresh_store(kind, tmp_path) as store:
        params = {"actions": ["throttle"], "level": "flagged"}
        record = store.record_engine_decision
        first = record("account", "a", "throttle", "flagged", 1, params, finding_ts=10.0)
        assert first is not None and first.actor == "engine" and first.active
        assert record("account", "a", "throttle", "flagged again", 2, params) is None  # no change
        changed = record("account", "a", "throttle", "tier changed", 2, {**params, "tier": "new"})
        assert changed is not None and store.active_decision("account", "a") == changed

        allow = store.record_decision("account", "a", "allow", "operator:carol", "known customer")
        assert record("account", "a", "block", "flagged", 3, {"actions": ["block"]}, finding_ts=1e12) is None
        assert store.active_decision("account", "a") == allow  # never over an operator's decision

        reset = store.record_decision("account", "a", "reset", "operator:carol", "false positive")
        assert record("account", "a", "throttle", "old", 3, params, finding_ts=reset.ts - 1) is None
        after = record("account", "a", "throttle", "new finding", 4, params, finding_ts=reset.ts + 1)
        assert after is not None and store.active_decision("account", "a") == after

        # replicas that see the same transition at once record it once
        results: list[Any] = []
        barrier = threading.Barrier(8)

        def worker() -> None:
            barrier.wait()
            results.append(
                record("account", "b", "watermark", "elevated", 5, {"actions": ["watermark_canary"]})
            )

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r is not None for r in results) == 1 and len(store.decisions_for("account", "b")) == 1


# detection -> enforcement, with the real risk worker in the gateway ------------------------------
def test_the_risk_engine_flags_a_harvester_and_its_next_requests_are_throttled(
    tmp_path: Path, cal_file: Path
) -> None:
    settings = risk_settings(tmp_path, cal_file, **{"policy.enabled": True, "policy.cache_ttl_s": 0.2})
    app = create_app(settings)
    with TestClient(with_client_ip(app), raise_server_exceptions=False) as client:
        a_id, a_key = create_account(client, "harvester")
        b_id, b_key = create_account(client, "ordinary-user")

        def ask(key: str, text: str, ip: str, **body: Any) -> Any:
            payload = {"model": "test-model", "messages": [{"role": "user", "content": text}], **body}
            headers = {"Authorization": f"Bearer {key}", "x-test-client-ip": ip}
            return client.post("/v1/chat/completions", json=payload, headers=headers)

        statuses = []
        for i in range(N_HARVEST):  # the harvester may be throttled before its run ends: not asserted
            prompt = f"Explain {TOPICS[i % len(TOPICS)]} in depth, case {i}. {CUE}"
            statuses.append(ask(a_key, prompt, "203.0.113.10", max_tokens=64).status_code)
            if i % 30 == 0:
                assert ask(b_key, ORDINARY[i // 30], "198.51.100.20").status_code == 200
        assert set(statuses) <= {200, 429} and statuses[0] == 200
        store = app.state.rt.store
        poll(lambda: store.risk_state("account", a_id), lambda s: s is not None and s.flagged, "a flag")
        time.sleep(0.25)  # > policy.cache_ttl_s: every replica now applies the flag

        assert_error(ask(a_key, "one more", "203.0.113.10", n=2), 400, "parameter_limited", "n")
        codes = [ask(a_key, f"next {i}", "203.0.113.10").status_code for i in range(21)]
        assert codes[-1] == 429  # standard tier, flagged: 20 requests a minute
        # the engine may first have raised the account to "elevated" (one earlier transition); the
        # flagged transition is recorded once and is the only active decision
        ds = poll(
            lambda: store.decisions_for("account", a_id),
            lambda ds: any(x.params.get("level") == "flagged" for x in ds),
            "the flagged decision",
        )
        assert len([x for x in ds if x.params.get("level") == "flagged"]) == 1
        assert [x.active for x in ds].count(True) == 1
        d = ds[0]  # newest first
        assert d.active and d.actor == "engine" and d.action == "throttle" and d.params["level"] == "flagged"
        found = {i for i, _ in store.findings_with_ids("account", a_id)}
        assert d.finding_id in found  # cites a stored finding (the one current at the transition)
        r = ask(b_key, "What time zone is Tokyo in?", "198.51.100.20", n=2)
        assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers
        assert store.decisions_for("account", b_id) == []
