"""``Policy.evaluate(tier, risk_state, decision) -> PolicyDecision``: pure, no I/O, no clock.

Precedence:

1. An active operator decision (actor ``operator:<name>``) overrides the engine's level:
   ``allow`` = no action at all (even when flagged), ``block``, ``reverify``, ``throttle`` (the
   decision's ``rpm``/``tpm``/``period_s`` params, else the tier's throttle) = that action only.
   ``watermark`` and ``cap_params`` likewise. ``reset`` is not an override but a horizon: findings
   up to the reset time are ignored (level ``none``) and a later finding applies normally.
2. Otherwise the tier's rules for the risk level of the account's latest risk state.

``block`` and ``reverify`` stand alone: an account under either gets nothing else.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from antidistill.limits.types import LimitSpec
from antidistill.policy.config import (
    ACTIONS,
    Action,
    CapsConfig,
    PolicyConfig,
    RiskLevel,
    StripReasoningConfig,
    ThrottleConfig,
    TierRules,
    load_policy_config,
)
from antidistill.store.base import Decision, RiskState

OPERATOR_PREFIX = "operator:"
CANARY_SCHEME = "kgw_canary"
"""The watermark scheme ``watermark_canary`` assigns: KGW LeftHash, window 2, gamma 0.25 (DESIGN.md)."""
MAX_STATE_REASONS = 5

# how an operator's decision maps to policy actions ("reset" is handled apart; any other action
# is not enforced by this version and leaves the engine's level in charge)
OPERATOR_ACTIONS: dict[str, tuple[Action, ...]] = {
    "allow": (),
    "block": ("block",),
    "throttle": ("throttle",),
    "reverify": ("reverify",),
    "watermark": ("watermark_canary",),
    "strip_reasoning": ("strip_reasoning",),
    "cap_params": ("cap_params",),
}
# the store's decision action recorded for a policy action (DECISION_ACTIONS)
STORE_ACTIONS: dict[Action, str] = {
    "watermark_canary": "watermark",
    "strip_reasoning": "strip_reasoning",
    "cap_params": "cap_params",
    "throttle": "throttle",
    "reverify": "reverify",
    "block": "block",
}


def when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def is_operator(decision: Decision | None) -> bool:
    return decision is not None and decision.actor.startswith(OPERATOR_PREFIX)


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """What the gateway does to one account's requests, and why."""

    actions: tuple[Action, ...]  # severity order; ("block",) or ("reverify",) alone
    reasons: tuple[str, ...]
    level: RiskLevel
    source: Literal["engine", "operator"]  # operator: an operator's decision overrides the level
    tier: str
    throttle: LimitSpec | None = None
    cluster: str | None = None  # the account's linked cluster (risk state), when throttled with one
    cluster_throttle: LimitSpec | None = None  # the cluster's shared budget
    caps: CapsConfig | None = None
    reasoning: StripReasoningConfig | None = None  # set under strip_reasoning
    reverify_message: str | None = None
    finding_id: int | None = None  # the finding behind the risk level
    decision_id: int | None = None  # the operator decision that applies (override or reset)

    @property
    def blocked(self) -> bool:
        return "block" in self.actions

    @property
    def watermark_scheme(self) -> str | None:
        return CANARY_SCHEME if "watermark_canary" in self.actions else None

    def store_action(self) -> str:
        """The decision action that records this outcome (the most severe one; ``allow`` if none)."""
        return STORE_ACTIONS[self.actions[-1]] if self.actions else "allow"

    def record_params(self) -> dict[str, Any]:
        """The params of the engine decision recording this outcome: what a transition compares."""
        out: dict[str, Any] = {"actions": list(self.actions), "level": self.level, "tier": self.tier}
        if self.throttle is not None:
            out["throttle"] = throttle_json(self.throttle)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "actions": list(self.actions),
            "level": self.level,
            "source": self.source,
            "tier": self.tier,
            "reasons": list(self.reasons),
            "throttle": None if self.throttle is None else throttle_json(self.throttle),
            "cluster": self.cluster,
            "cluster_throttle": None
            if self.cluster_throttle is None
            else throttle_json(self.cluster_throttle),
            "caps": None if self.caps is None else self.caps.model_dump(),
            "reasoning": None if self.reasoning is None else self.reasoning.mode,
            "watermark_scheme": self.watermark_scheme,
            "finding_id": self.finding_id,
            "decision_id": self.decision_id,
        }


def _cluster_of(state: RiskState | None) -> str | None:
    return None if state is None else state.cluster


def throttle_json(spec: LimitSpec) -> dict[str, Any]:
    return {"rpm": spec.rpm, "tpm": spec.tpm, "period_s": spec.period_s}


class Policy:
    """A validated policy (see ``defaults.py`` for the file format and the shipped rules)."""

    def __init__(self, config: PolicyConfig, source: str = "shipped") -> None:
        self.config = config
        self.source = source

    @classmethod
    def load(cls, path: str | None) -> Policy:
        return cls(load_policy_config(path), source=path or "shipped")

    def level(self, state: RiskState | None, reset_at: float | None = None) -> tuple[RiskLevel, list[str]]:
        """The risk level of a risk state, with its reasons; findings up to ``reset_at`` are ignored."""
        if state is None:
            return "none", []
        if reset_at is not None and state.ts <= reset_at:
            return "none", [f"the latest finding ({when(state.ts)}) predates the reset"]
        t = self.config.levels
        evidence = list(state.reasons[:MAX_STATE_REASONS])
        if state.flagged:
            return "flagged", [f"flagged by the risk engine (score {state.score:.3f})", *evidence]
        if t.flagged_score is not None and state.score >= t.flagged_score:
            return "flagged", [f"risk score {state.score:.3f} >= flagged_score {t.flagged_score}", *evidence]
        if state.score >= t.elevated_score:
            return "elevated", [
                f"risk score {state.score:.3f} >= elevated_score {t.elevated_score}",
                *evidence,
            ]
        return "none", []

    def evaluate(
        self, tier: str, state: RiskState | None, decision: Decision | None = None
    ) -> PolicyDecision:
        """The decision for an account of ``tier`` with this risk state and active decision (only an
        operator's decision counts; an engine decision is the record of an earlier evaluation)."""
        reasons: list[str] = []
        rules = self.config.tiers.get(tier)
        if rules is None:
            rules = self.config.tiers["standard"]
            reasons.append(f"unknown tier {tier!r}: the standard tier's rules apply")
        op = decision if decision is not None and is_operator(decision) else None
        reset_at = op.ts if op is not None and op.action == "reset" else None
        level, evidence = self.level(state, reset_at)
        finding_id = None if state is None or level == "none" else state.last_finding_id
        if op is not None and op.action in OPERATOR_ACTIONS:
            said = f": {op.reason}" if op.reason else ""
            reasons += [f"{op.action} by {op.actor} at {when(op.ts)}{said}", f"overrides risk level {level}"]
            actions = OPERATOR_ACTIONS[op.action]
            throttle = self._operator_throttle(rules, op, reasons) if "throttle" in actions else None
            return self._decision(
                actions,
                reasons,
                level,
                "operator",
                tier,
                rules,
                throttle,
                finding_id,
                decision_id=op.id,
                cluster=_cluster_of(state),
            )
        if reset_at is not None and op is not None:
            said = f" ({op.reason})" if op.reason else ""
            reasons.append(f"reset by {op.actor} at {when(op.ts)}{said}: earlier findings are ignored")
        elif op is not None:
            reasons.append(f"operator decision {op.action!r} is not enforced by this version")
        reasons += evidence
        return self._decision(
            rules.actions(level),
            reasons,
            level,
            "engine",
            tier,
            rules,
            None,
            finding_id,
            decision_id=None if op is None else op.id,
            cluster=_cluster_of(state),
        )

    def tier_throttle(self, rules: TierRules) -> LimitSpec:
        return (rules.throttle or self.config.throttle).spec()

    def _operator_throttle(self, rules: TierRules, op: Decision, reasons: list[str]) -> LimitSpec:
        if not op.params:
            return self.tier_throttle(rules)
        try:
            return ThrottleConfig.model_validate(op.params).spec()
        except ValidationError:
            reasons.append("the decision's throttle params are invalid: the tier's throttle applies")
            return self.tier_throttle(rules)

    def _decision(
        self,
        actions: tuple[Action, ...],
        reasons: list[str],
        level: RiskLevel,
        source: Literal["engine", "operator"],
        tier: str,
        rules: TierRules,
        throttle: LimitSpec | None,
        finding_id: int | None,
        decision_id: int | None,
        cluster: str | None = None,
    ) -> PolicyDecision:
        for alone in ("block", "reverify"):
            if alone in actions:
                actions = (alone,)
                break
        actions = tuple(a for a in ACTIONS if a in actions)
        if "throttle" in actions and throttle is None:
            throttle = self.tier_throttle(rules)
        shared = self.config.cluster_throttle
        throttled_cluster = cluster if "throttle" in actions and shared is not None else None
        if throttled_cluster is not None:
            reasons = [
                *reasons,
                f"linked cluster {throttled_cluster}: its throttled members share one budget",
            ]
        return PolicyDecision(
            actions=actions,
            reasons=tuple(reasons),
            level=level,
            source=source,
            tier=tier,
            throttle=throttle if "throttle" in actions else None,
            cluster=throttled_cluster,
            cluster_throttle=None if throttled_cluster is None or shared is None else shared.spec(),
            caps=self.config.cap_params if "cap_params" in actions else None,
            reasoning=self.config.strip_reasoning if "strip_reasoning" in actions else None,
            reverify_message=self.config.reverify.message if "reverify" in actions else None,
            finding_id=finding_id,
            decision_id=decision_id,
        )
