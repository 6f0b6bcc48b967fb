"""The policy file: its schema (validated, frozen) and how it is loaded over the shipped defaults.

Every problem is one ConfigError line naming the file and the key, raised at start-up, e.g.
``policy file p.toml: tiers.new.flagged[0]: 'ban' is not an action (watermark_canary, ...)``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from antidistill.errors import ConfigError
from antidistill.limits.types import LimitSpec
from antidistill.policy.defaults import DEFAULT_POLICY_TOML
from antidistill.store.base import TIERS

Action = Literal["watermark_canary", "strip_reasoning", "cap_params", "throttle", "reverify", "block"]
ACTIONS: tuple[Action, ...] = (
    "watermark_canary",
    "strip_reasoning",
    "cap_params",
    "throttle",
    "reverify",
    "block",
)
"""Every policy action, mild to severe."""
RiskLevel = Literal["none", "elevated", "flagged"]
LEVELS: tuple[RiskLevel, ...] = ("none", "elevated", "flagged")

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class LevelThresholds(BaseModel):
    model_config = _FROZEN
    elevated_score: float = Field(0.9, ge=0.0, le=1.0)
    flagged_score: float | None = Field(None, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> LevelThresholds:
        if self.flagged_score is not None and self.flagged_score <= self.elevated_score:
            raise ValueError(
                f"flagged_score ({self.flagged_score}) must be above elevated_score ({self.elevated_score})"
            )
        return self


class ThrottleConfig(BaseModel):
    model_config = _FROZEN
    rpm: int | None = Field(None, ge=1, description="Requests per period (0 or unset: not limited).")
    tpm: int | None = Field(
        None, ge=1, description="Tokens (prompt + completion) per period (0: not limited)."
    )
    period_s: float = Field(60.0, gt=0.0, le=86_400.0)

    @field_validator("rpm", "tpm", mode="before")
    @classmethod
    def _zero_is_unlimited(cls, v: Any) -> Any:
        return None if v == 0 and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _something(self) -> ThrottleConfig:
        if self.rpm is None and self.tpm is None:
            raise ValueError("set rpm and/or tpm")
        return self

    def spec(self) -> LimitSpec:
        return LimitSpec(rpm=self.rpm, tpm=self.tpm, period_s=float(self.period_s))


class CapsConfig(BaseModel):
    model_config = _FROZEN
    max_n: int = Field(1, ge=1)
    allow_logprobs: bool = True
    max_top_logprobs: int = Field(0, ge=0, le=20)
    refuse_logprobs_with_logit_bias: bool = True
    over_cap: Literal["refuse", "cap"] = "refuse"


_TAG_NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,31}$"


class StripReasoningConfig(BaseModel):
    """How ``strip_reasoning`` treats reasoning (see ``antidistill.hardening``)."""

    model_config = _FROZEN
    mode: Literal["remove", "summary"] = "remove"
    tags: tuple[str, ...] = Field(("think", "thinking", "reasoning", "thought"), min_length=1, max_length=16)
    implicit_open: bool = False
    detect_copies: bool = True
    min_copy_words: int = Field(8, ge=4, le=64)
    window_chars: int = Field(256, ge=64, le=65_536)
    max_hold_chars: int = Field(4096, ge=256, le=1_048_576)
    max_reasoning_chars: int = Field(262_144, ge=1024, le=16_777_216)

    @field_validator("tags")
    @classmethod
    def _tag_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, tag in enumerate(v):
            if not re.match(_TAG_NAME, tag):
                raise ValueError(
                    f"item {i}: {tag!r} is not a tag name (a letter, then letters, digits, _ or -)"
                )
        return tuple(dict.fromkeys(t.lower() for t in v))

    @model_validator(mode="after")
    def _window_fits_a_copy(self) -> StripReasoningConfig:
        need = 12 * self.min_copy_words
        if self.window_chars < need:
            raise ValueError(
                f"window_chars ({self.window_chars}) must be at least 12 x min_copy_words ({need}) "
                "so that a copy is seen whole before it is released"
            )
        if self.max_hold_chars < self.window_chars:
            raise ValueError(f"max_hold_chars ({self.max_hold_chars}) must be >= window_chars")
        return self


class ReverifyConfig(BaseModel):
    model_config = _FROZEN
    message: str = Field(min_length=1, max_length=1000)


class TierRules(BaseModel):
    model_config = _FROZEN
    none: tuple[Action, ...] = ()
    elevated: tuple[Action, ...] = ()
    flagged: tuple[Action, ...] = ()
    throttle: ThrottleConfig | None = None

    @field_validator("none", "elevated", "flagged", mode="before")
    @classmethod
    def _known_actions(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            for i, a in enumerate(v):
                if a not in ACTIONS:
                    raise ValueError(f"item {i}: {a!r} is not an action ({', '.join(ACTIONS)})")
        return v

    def actions(self, level: RiskLevel) -> tuple[Action, ...]:
        chosen: tuple[Action, ...] = getattr(self, level)
        return tuple(a for a in ACTIONS if a in chosen)  # severity order, no duplicates


class PolicyConfig(BaseModel):
    model_config = _FROZEN
    version: Literal[1] = 1
    levels: LevelThresholds
    throttle: ThrottleConfig
    cluster_throttle: ThrottleConfig | None = None  # None: throttled accounts share no cluster budget
    cap_params: CapsConfig
    strip_reasoning: StripReasoningConfig = StripReasoningConfig()
    reverify: ReverifyConfig
    tiers: dict[str, TierRules]

    @field_validator("tiers")
    @classmethod
    def _known_tiers(cls, v: dict[str, TierRules]) -> dict[str, TierRules]:
        unknown = sorted(set(v) - set(TIERS))
        if unknown:
            raise ValueError(f"unknown tier {unknown[0]!r} (tiers: {', '.join(TIERS)})")
        missing = [t for t in TIERS if t not in v]
        if missing:
            raise ValueError(f"tier {missing[0]!r} has no rules")
        return v


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(top level)"


def parse_policy(data: dict[str, Any], source: str = "policy") -> PolicyConfig:
    """``data`` (a parsed policy file) merged over the shipped defaults and validated."""
    merged = _deep_merge(tomllib.loads(DEFAULT_POLICY_TOML), data)
    try:
        return PolicyConfig.model_validate(merged)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ConfigError(f"{source}: {_where(tuple(err['loc']))}: {msg}{more}") from None


def load_policy_config(path: str | Path | None) -> PolicyConfig:
    """The policy of ``policy.file``: the shipped defaults when ``path`` is None. ConfigError (one
    line) when the file is missing, not TOML or not a valid policy."""
    if path is None:
        return parse_policy({}, "shipped policy")
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"policy file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"policy file {p} cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"policy file {p} is not valid TOML: {e}") from None
    return parse_policy(data, f"policy file {p}")
