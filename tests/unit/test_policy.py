"""The policy: levels, tier rules, operator overrides, the policy file's validation, parameter caps,
and the gateway's decision cache (with a fake store and a manual clock). No I/O."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from antidistill.clock import ManualClock
from antidistill.errors import ConfigError, InvalidRequestError
from antidistill.gateway.decision_cache import DecisionCache
from antidistill.limits import LimitSpec
from antidistill.policy import (
    ACTIONS,
    CANARY_SCHEME,
    DEFAULT_POLICY_TOML,
    CapsConfig,
    Policy,
    apply_param_caps,
    parse_policy,
)
from antidistill.store.base import DECISION_ACTIONS, Decision, RiskState

T0 = 1_700_000_000.0


def state(score: float = 0.5, flagged: bool = False, ts: float = T0, **kw: Any) -> RiskState:
    base: dict[str, Any] = {
        "subject_kind": "account",
        "subject_id": "acct_1",
        "score": score,
        "flagged": flagged,
        "reasons": ("asks for step-by-step reasoning in 97% of requests", "covers 40 topics evenly"),
        "features": {},
        "cluster": None,
        "requests_seen": 500,
        "ts": ts,
        "updated_at": ts,
        "first_flagged_at": ts if flagged else None,
        "last_finding_id": 42,
    }
    return RiskState(**{**base, **kw})


def decision(action: str, actor: str = "operator:alice", ts: float = T0 + 10, **kw: Any) -> Decision:
    base: dict[str, Any] = {
        "id": 7,
        "ts": ts,
        "subject_kind": "account",
        "subject_id": "acct_1",
        "action": action,
        "actor": actor,
        "reason": "reviewed",
        "finding_id": 42,
        "params": {},
        "active": True,
        "reversed_at": None,
        "reversed_by": None,
    }
    return Decision(**{**base, **kw})


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load(None)


# levels and tier rules ------------------------------------------------------------------------
def test_levels_from_the_risk_state(policy: Policy) -> None:
    assert policy.level(None) == ("none", [])
    assert policy.level(state(0.89))[0] == "none"
    level, why = policy.level(state(0.9))
    assert level == "elevated" and why[0] == "risk score 0.900 >= elevated_score 0.9"
    level, why = policy.level(state(0.95, flagged=True))
    assert level == "flagged" and why[0].startswith("flagged by the risk engine (score 0.950)")
    assert "asks for step-by-step reasoning in 97% of requests" in why  # the finding's own reasons


def test_thresholds_are_configurable() -> None:
    p = Policy(parse_policy({"levels": {"elevated_score": 0.5, "flagged_score": 0.8}}))
    assert p.level(state(0.49))[0] == "none"
    assert p.level(state(0.5))[0] == "elevated"
    assert p.level(state(0.8))[0] == "flagged"  # not flagged by the engine, but above flagged_score


@pytest.mark.parametrize(
    "tier, level_state, actions",
    [
        ("standard", None, ()),
        ("standard", state(0.3), ()),
        ("standard", state(0.93), ("watermark_canary", "cap_params")),
        ("standard", state(0.99, True), ("watermark_canary", "strip_reasoning", "cap_params", "throttle")),
        ("trusted", state(0.93), ("watermark_canary",)),
        ("trusted", state(0.99, True), ("watermark_canary", "strip_reasoning", "cap_params", "throttle")),
        ("new", state(0.93), ("watermark_canary", "cap_params", "throttle")),
        ("new", state(0.99, True), ("reverify",)),
    ],
)
def test_shipped_rules(policy: Policy, tier: str, level_state: RiskState | None, actions: tuple) -> None:
    d = policy.evaluate(tier, level_state, None)
    assert d.actions == actions and d.source == "engine" and d.tier == tier
    assert (d.throttle is not None) == ("throttle" in actions)
    assert (d.caps is not None) == ("cap_params" in actions)
    assert (d.reverify_message is not None) == ("reverify" in actions)
    assert (d.reasoning is not None) == ("strip_reasoning" in actions)
    assert d.watermark_scheme == (CANARY_SCHEME if "watermark_canary" in actions else None)
    assert d.finding_id == (None if not actions else 42)


def test_tier_throttle_and_explanations(policy: Policy) -> None:
    flagged = state(0.99, True)
    assert policy.evaluate("standard", flagged).throttle == LimitSpec(rpm=20, tpm=20_000, period_s=60.0)
    assert policy.evaluate("trusted", flagged).throttle == LimitSpec(rpm=120, tpm=200_000, period_s=60.0)
    d = policy.evaluate("standard", flagged)
    assert d.reasons[0] == "flagged by the risk engine (score 0.990)" and len(d.reasons) == 3
    assert d.store_action() == "throttle"
    assert d.record_params() == {
        "actions": ["watermark_canary", "strip_reasoning", "cap_params", "throttle"],
        "level": "flagged",
        "tier": "standard",
        "throttle": {"rpm": 20, "tpm": 20_000, "period_s": 60.0},
    }
    assert d.to_json()["caps"]["max_n"] == 1 and d.to_json()["watermark_scheme"] == CANARY_SCHEME
    assert policy.evaluate("standard", None).store_action() == "allow"
    assert all(d.store_action() in DECISION_ACTIONS for d in [d])


def test_unknown_tier_gets_the_standard_rules(policy: Policy) -> None:
    d = policy.evaluate("platinum", state(0.93))
    assert d.actions == ("watermark_canary", "cap_params") and "unknown tier" in d.reasons[0]


def test_block_and_reverify_stand_alone() -> None:
    p = Policy(parse_policy({"tiers": {"standard": {"flagged": ["throttle", "block", "watermark_canary"]}}}))
    d = p.evaluate("standard", state(0.99, True))
    assert d.actions == ("block",) and d.blocked and d.throttle is None and d.store_action() == "block"
    p = Policy(parse_policy({"tiers": {"standard": {"elevated": ["reverify", "cap_params", "reverify"]}}}))
    assert p.evaluate("standard", state(0.93)).actions == ("reverify",)


# operator decisions ---------------------------------------------------------------------------
def test_operator_allow_overrides_a_flag(policy: Policy) -> None:
    d = policy.evaluate("new", state(0.99, True), decision("allow"))
    assert d.actions == () and d.source == "operator" and d.level == "flagged" and d.decision_id == 7
    assert d.reasons[0].startswith("allow by operator:alice at 2023-11-14T22:13:30Z: reviewed")
    assert d.reasons[1] == "overrides risk level flagged"


def test_operator_block_and_throttle(policy: Policy) -> None:
    d = policy.evaluate("trusted", None, decision("block"))
    assert d.actions == ("block",) and d.blocked and d.source == "operator" and d.level == "none"
    d = policy.evaluate("standard", state(0.99, True), decision("throttle", params={"rpm": 2}))
    assert d.actions == ("throttle",) and d.throttle == LimitSpec(rpm=2, tpm=None, period_s=60.0)
    d = policy.evaluate("trusted", None, decision("throttle"))  # no params: the tier's throttle
    assert d.throttle == LimitSpec(rpm=120, tpm=200_000)
    d = policy.evaluate("standard", None, decision("throttle", params={"rpm": -1, "x": 1}))
    assert d.throttle == LimitSpec(rpm=20, tpm=20_000) and "invalid" in d.reasons[-1]
    assert policy.evaluate("standard", None, decision("reverify")).actions == ("reverify",)


def test_an_engine_decision_does_not_override(policy: Policy) -> None:
    d = policy.evaluate("standard", state(0.3), decision("block", actor="engine"))
    assert d.actions == () and d.source == "engine"


def test_an_unenforced_operator_action_leaves_the_level_in_charge(policy: Policy) -> None:
    d = policy.evaluate("standard", state(0.93), decision("quarantine"))  # a later version's action
    assert d.actions == ("watermark_canary", "cap_params") and d.source == "engine"
    assert "not enforced" in d.reasons[0]


def test_operator_strip_reasoning(policy: Policy) -> None:
    d = policy.evaluate("standard", None, decision("strip_reasoning"))
    assert d.actions == ("strip_reasoning",) and d.source == "operator"
    assert d.store_action() == "strip_reasoning"
    assert d.reasoning == policy.config.strip_reasoning and d.reasoning.mode == "remove"
    assert d.to_json()["reasoning"] == "remove"


def test_reset_ignores_findings_up_to_the_reset(policy: Policy) -> None:
    reset = decision("reset", ts=T0 + 10)
    d = policy.evaluate("standard", state(0.99, True, ts=T0), reset)
    assert d.actions == () and d.level == "none" and d.source == "engine" and d.decision_id == 7
    assert d.reasons[0].startswith("reset by operator:alice") and "predates the reset" in d.reasons[1]
    later = policy.evaluate("standard", state(0.99, True, ts=T0 + 11), reset)
    assert later.actions == ("watermark_canary", "strip_reasoning", "cap_params", "throttle")
    assert later.level == "flagged"


# the policy file ------------------------------------------------------------------------------
def test_defaults_parse_and_name_every_action() -> None:
    cfg = parse_policy({})
    assert set(cfg.tiers) == {"trusted", "standard", "new"}
    used = {
        a
        for rules in cfg.tiers.values()
        for level in ("none", "elevated", "flagged")
        for a in rules.actions(level)
    }
    assert used <= set(ACTIONS) and "block" not in used  # the engine alone never blocks by default
    assert all(rules.none == () for rules in cfg.tiers.values())  # ordinary accounts: no action at all
    assert "[tiers.standard]" in DEFAULT_POLICY_TOML


def test_a_file_is_merged_over_the_defaults(tmp_path: Path) -> None:
    f = tmp_path / "policy.toml"
    f.write_text('[tiers.new]\nflagged = ["block"]\n\n[throttle]\nrpm = 0\ntpm = 500\n')
    p = Policy.load(str(f))
    assert p.source == str(f)
    assert p.evaluate("new", state(0.99, True)).actions == ("block",)
    assert p.evaluate("new", state(0.93)).actions == ("watermark_canary", "cap_params", "throttle")
    assert p.evaluate("standard", state(0.99, True)).throttle == LimitSpec(rpm=None, tpm=500)  # rpm 0: off


@pytest.mark.parametrize(
    "text, message",
    [
        ('[tiers.new]\nflagged = ["ban"]', "tiers.new.flagged: item 0: 'ban' is not an action"),
        ("[tiers.gold]\nnone = []", "tiers: unknown tier 'gold' (tiers: trusted, standard, new)"),
        ("[levels]\nelevated_score = 1.5", "levels.elevated_score: Input should be less than or equal to 1"),
        (
            "[levels]\nflagged_score = 0.5",
            "levels: flagged_score (0.5) must be above elevated_score (0.9)",
        ),
        ("[throttle]\nrpm = 0\ntpm = 0", "throttle: set rpm and/or tpm"),
        ("[throttle]\nrps = 3", "throttle.rps: Extra inputs are not permitted"),
        ('[cap_params]\nover_cap = "drop"', "cap_params.over_cap: Input should be 'refuse' or 'cap'"),
        ('[strip_reasoning]\nmode = "rewrite"', "strip_reasoning.mode: Input should be 'remove' or"),
        ('[strip_reasoning]\ntags = ["<think>"]', "strip_reasoning.tags: item 0: '<think>' is not a"),
        ("[strip_reasoning]\nwindow_chars = 64", "strip_reasoning: window_chars (64) must be at least 12 x"),
        ("[strip_reasoning]\nmin_copy_words = 2", "strip_reasoning.min_copy_words: Input should be greater"),
        ("version = 2", "version: Input should be 1"),
        ('[tiers.new]\nflagged = "block"', "tiers.new.flagged: Input should be a valid tuple"),
    ],
)
def test_policy_file_errors_are_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        Policy.load(str(f))
    assert str(info.value).startswith(f"policy file {f}: {message}"), str(info.value)
    assert "\n" not in str(info.value)


def test_missing_or_broken_policy_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^policy file not found: .*nope\.toml$"):
        Policy.load(str(tmp_path / "nope.toml"))
    f = tmp_path / "bad.toml"
    f.write_text("[tiers\n")
    with pytest.raises(ConfigError, match=r"^policy file .*bad\.toml is not valid TOML"):
        Policy.load(str(f))


# parameter caps -------------------------------------------------------------------------------
REFUSE = CapsConfig()
CAP = CapsConfig(over_cap="cap", max_n=2, max_top_logprobs=3)


def refused(caps: CapsConfig, body: dict[str, Any]) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        apply_param_caps(caps, body)
    assert info.value.status == 400
    return info.value


def test_logprobs_with_logit_bias_is_refused() -> None:
    for caps in (REFUSE, CAP):
        for asks in ({"logprobs": True}, {"top_logprobs": 2}, {"logprobs": 3}):
            err = refused(caps, {"model": "m", "logit_bias": {"50256": -100}, **asks})
            assert err.param == "logit_bias" and err.code == "logprobs_with_logit_bias"
    body = {"model": "m", "logit_bias": {"1": 5}}  # either alone is fine
    assert apply_param_caps(REFUSE, body) == (body, {})
    assert apply_param_caps(REFUSE, {"logprobs": True, "logit_bias": {}})[1] == {}
    off = CapsConfig(refuse_logprobs_with_logit_bias=False, max_top_logprobs=5)
    assert apply_param_caps(off, {"logprobs": True, "top_logprobs": 5, "logit_bias": {"1": 5}})[1] == {}


def test_over_cap_is_refused_naming_the_parameter() -> None:
    err = refused(REFUSE, {"n": 3})
    assert err.param == "n" and err.code == "parameter_limited" and "limit of 1" in err.message
    assert refused(REFUSE, {"logprobs": True, "top_logprobs": 1}).param == "top_logprobs"
    assert refused(REFUSE, {"logprobs": 2}).param == "logprobs"  # /v1/completions style
    assert refused(CapsConfig(allow_logprobs=False), {"logprobs": True}).param == "logprobs"
    body = {"n": 1, "logprobs": True, "top_logprobs": 0}
    assert apply_param_caps(REFUSE, body) == (body, {})


def test_over_cap_is_lowered_silently_when_configured() -> None:
    body = {"n": 4, "logprobs": True, "top_logprobs": 20, "stream": True}
    out, changes = apply_param_caps(CAP, body)
    assert out == {"n": 2, "logprobs": True, "top_logprobs": 3, "stream": True}
    assert changes == {"n": [4, 2], "top_logprobs": [20, 3]}
    assert body["n"] == 4  # the client's body is not modified
    out, changes = apply_param_caps(CapsConfig(over_cap="cap", allow_logprobs=False), body)
    assert "logprobs" not in out and "top_logprobs" not in out and out["n"] == 1
    assert changes == {"n": [4, 1], "logprobs": [True, None], "top_logprobs": [20, None]}


def test_values_of_the_wrong_type_are_left_to_the_parser() -> None:
    for body in ({"n": "3"}, {"n": True}, {"top_logprobs": "x"}, [1, 2], "text"):
        assert apply_param_caps(REFUSE, body) == (body, {})


# the decision cache ---------------------------------------------------------------------------
class FakeStore:
    def __init__(self, inline: bool) -> None:
        self.inline_reads = inline
        self.states: dict[str, RiskState] = {}
        self.decisions: dict[str, Decision] = {}
        self.reads = 0

    def risk_state(self, kind: str, sid: str) -> RiskState | None:
        self.reads += 1
        return self.states.get(sid)

    def active_decision(self, kind: str, sid: str) -> Decision | None:
        return self.decisions.get(sid)

    def account_risk(self, sid: str) -> tuple[RiskState | None, Decision | None]:
        return self.risk_state("account", sid), self.active_decision("account", sid)


@pytest.mark.parametrize("inline", [True, False])
async def test_cache_reads_the_store_once_per_ttl(inline: bool) -> None:
    store, clock = FakeStore(inline), ManualClock()
    cache = DecisionCache(store, clock, ttl_s=1.0)  # type: ignore[arg-type]
    store.states["a"] = state(0.3)
    for _ in range(5):
        assert (await cache.get("a")).state == state(0.3)
    assert store.reads == 1 and cache.hits == 4
    store.decisions["a"] = decision("block")  # written by another replica
    clock.advance(0.999)
    assert (await cache.get("a")).decision is None  # still within the TTL
    clock.advance(0.001)
    assert (await cache.get("a")).decision == decision("block")  # TTL reached: read again
    assert store.reads == 2
    store.decisions["a"] = decision("allow")
    cache.forget("a")  # an operator's decision on this replica: the very next request sees it
    assert (await cache.get("a")).decision == decision("allow") and store.reads == 3


async def test_cache_one_read_in_flight_per_account_and_bounded_size() -> None:
    store = FakeStore(inline=False)
    cache = DecisionCache(store, ManualClock(), ttl_s=5.0, max_accounts=2)  # type: ignore[arg-type]
    got = await asyncio.gather(*(cache.get("a") for _ in range(20)))
    assert store.reads == 1 and all(g is got[0] for g in got)
    for sid in ("b", "c"):
        await cache.get(sid)
    assert len(cache) == 2 and store.reads == 3
    await cache.get("a")  # "a" was the oldest read: evicted, read again
    assert store.reads == 4


async def test_cache_ttl_zero_reads_every_time() -> None:
    store = FakeStore(inline=True)
    cache = DecisionCache(store, ManualClock(), ttl_s=0.0)  # type: ignore[arg-type]
    for _ in range(3):
        await cache.get("a")
    assert store.reads == 3


def test_decision_helpers_are_frozen(policy: Policy) -> None:
    d = policy.evaluate("standard", state(0.93))
    with pytest.raises(AttributeError):
        d.actions = ()  # type: ignore[misc]
    assert replace(d, actions=()).actions == ()
