"""Value types shared by the risk engine: what one request looks like to it, what a request's cheap
signals are, and what a finding says. Frozen dataclasses; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SubjectKind = Literal["account", "cluster"]


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """One served request as the risk engine sees it: from a replay trace line or the gateway's
    event log. ``ts`` is epoch seconds. ``label``/``family`` are only set by the evaluation harness
    (ground truth); the engine never reads them."""

    ts: float
    account: str
    messages: tuple[Message, ...]
    ip: str = ""
    user_agent: str = ""
    payment_fingerprint: str | None = None
    response: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    label: str | None = None  # "benign" | "attack" (evaluation only)
    family: str | None = None  # attacker family or benign persona (evaluation only)

    @property
    def last_user(self) -> str:
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return self.messages[-1].content if self.messages else ""

    @property
    def system(self) -> str | None:
        for m in self.messages:
            if m.role == "system":
                return m.content
        return None


@dataclass(frozen=True, slots=True)
class RequestSignals:
    """Cheap per-request signals (computed on every request, bounded work)."""

    elicitation: float  # [0, 1]: how strongly the prompt asks for step-by-step reasoning
    elicitation_lang: str | None  # language of the cue that matched ("en", "zh", ...), if any
    skeleton: str  # hex hash of the prompt with its variable payload masked
    payload_chars: int  # length of the last user message
    payload_lines: int
    has_code: bool
    has_structure: bool  # lists, JSON, tables, numbered items
    system_hash: str | None  # hash of the system prompt, if any
    turns: int  # number of user turns in the conversation
    script: str  # dominant writing system: "latin", "cjk", "cyrillic", "arabic", "other"
    elicitation_cues: tuple[str, ...] = ()  # ids of the elicitation cues found, strongest first
    skeleton_head: str = ""  # hash of the skeleton's first few words (template prefix)
    skeleton_tail: str = ""  # hash of the skeleton's last few words (template suffix)


@dataclass(frozen=True, slots=True)
class Finding:
    """A scored subject (an account or a cluster) at a point in time, with reasons in words."""

    subject_kind: SubjectKind
    subject_id: str
    ts: float
    score: float  # calibrated: 1 - (benign tail probability), in [0, 1]
    flagged: bool
    reasons: tuple[str, ...] = ()
    features: dict[str, float] = field(default_factory=dict)
    cluster: str | None = None
    requests_seen: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "subject_kind": self.subject_kind,
            "subject_id": self.subject_id,
            "ts": self.ts,
            "score": self.score,
            "flagged": self.flagged,
            "reasons": list(self.reasons),
            "features": dict(self.features),
            "cluster": self.cluster,
            "requests_seen": self.requests_seen,
        }
