"""The policy: (account tier, risk level, operator decision) -> actions, declarative and validated.

    policy = Policy.load(settings.policy.file)          # ConfigError (one line) if the file is bad
    decision = policy.evaluate(account.tier, risk_state, active_decision)
    decision.actions, decision.reasons, decision.throttle, decision.caps, decision.reasoning,
    decision.watermark_scheme

Pure code (no I/O, no clock) except ``operator.py``, the operators' store writes shared by the CLI
and the admin API. The gateway applies decisions in ``antidistill.gateway.enforcement``.
"""

from __future__ import annotations

from antidistill.policy.config import (
    ACTIONS,
    LEVELS,
    Action,
    CapsConfig,
    PolicyConfig,
    RiskLevel,
    StripReasoningConfig,
    ThrottleConfig,
    load_policy_config,
    parse_policy,
)
from antidistill.policy.defaults import DEFAULT_POLICY_TOML
from antidistill.policy.evaluate import CANARY_SCHEME, Policy, PolicyDecision
from antidistill.policy.params import apply_param_caps

__all__ = [
    "ACTIONS",
    "CANARY_SCHEME",
    "DEFAULT_POLICY_TOML",
    "LEVELS",
    "Action",
    "CapsConfig",
    "Policy",
    "PolicyConfig",
    "PolicyDecision",
    "RiskLevel",
    "StripReasoningConfig",
    "ThrottleConfig",
    "apply_param_caps",
    "load_policy_config",
    "parse_policy",
]
