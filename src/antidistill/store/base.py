"""The Store protocol: the durable state of antidistill (accounts, API keys, events, risk findings,
decisions, ...).

One interface, two engines (SQLite default, Postgres for multi-replica deployments), same contract
tests. Methods are synchronous and thread-safe; async callers run them through
``anyio.to_thread``. The event writer (store/writer.py) batches inserts off the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from antidistill.errors import AlreadyExistsError, RejectedDataError
from antidistill.risk.types import Finding

Tier = Literal["trusted", "standard", "new"]
TIERS: tuple[str, ...] = ("trusted", "standard", "new")
ACCOUNT_STATUSES: tuple[str, ...] = ("active", "blocked")
SUBJECT_KINDS: tuple[str, ...] = ("account", "cluster")
DECISION_ACTIONS: tuple[str, ...] = (
    "allow",
    "watermark",
    "throttle",
    "strip_reasoning",
    "cap_params",
    "reverify",
    "block",
    "reset",
)

__all__ = [
    "ACCOUNT_STATUSES",
    "DECISION_ACTIONS",
    "SUBJECT_KINDS",
    "TIERS",
    "Account",
    "AlreadyExistsError",
    "ApiKey",
    "Decision",
    "Event",
    "Finding",
    "RejectedDataError",
    "RiskState",
    "Store",
]


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    tier: str
    created_at: float
    metadata: dict[str, Any] = field(default_factory=dict)
    status: str = "active"  # active | blocked (used by policy later)


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str  # public key id (the part of the token before the secret)
    account_id: str
    created_at: float
    revoked_at: float | None
    label: str = ""

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class Event:
    """One request/response exchange as recorded at the gateway."""

    id: str  # request id, unique: re-inserting the same id is a no-op (replayed spill)
    ts: float
    account_id: str | None
    key_id: str | None
    client_ip: str | None
    user_agent: str | None
    endpoint: str  # "chat" | "completion"
    model: str | None
    request: dict[str, Any]  # {"messages": [...]} or {"prompt": "..."}
    params: dict[str, Any]
    response: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    status: int
    error_code: str | None = None
    stream: bool = False
    watermark_key_id: str | None = None
    watermark_config_hash: str | None = None


@dataclass(frozen=True, slots=True)
class RiskState:
    """The latest finding of one subject (a row of ``risk_state``)."""

    subject_kind: str  # account | cluster
    subject_id: str
    score: float
    flagged: bool
    reasons: tuple[str, ...]
    features: dict[str, float]
    cluster: str | None
    requests_seen: int
    ts: float  # ts of the finding this state reflects (the engine's clock, i.e. event time)
    updated_at: float  # store clock of the last write
    first_flagged_at: float | None  # ts of the first flagged finding; set once, never overwritten
    last_finding_id: int  # id of the finding this state reflects


@dataclass(frozen=True, slots=True)
class Decision:
    """An enforcement decision on a subject, by the engine or an operator."""

    id: int
    ts: float
    subject_kind: str  # account | cluster
    subject_id: str
    action: str  # one of DECISION_ACTIONS
    actor: str  # "engine" | "operator:<name>"
    reason: str
    finding_id: int | None
    params: dict[str, Any]
    active: bool  # at most one active decision per subject
    reversed_at: float | None  # when it was superseded or reversed
    reversed_by: str | None  # the actor who did


class Store(Protocol):
    url: str

    def migrate(self) -> None:
        """Create or upgrade the schema to the latest migration (idempotent)."""
        ...

    def close(self) -> None: ...

    # accounts
    def create_account(
        self, name: str, tier: str = "standard", metadata: dict[str, Any] | None = None
    ) -> Account: ...

    def get_account(self, account_id_or_name: str) -> Account | None: ...

    def list_accounts(self, limit: int = 1000, offset: int = 0) -> list[Account]: ...

    def update_account(
        self,
        account_id: str,
        *,
        tier: str | None = None,
        status: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Account:
        """Change tier, status (active | blocked) and/or metadata; NotFoundError if unknown."""
        ...

    # API keys; the plaintext token exists only in create_api_key's return value
    def create_api_key(self, account_id: str, label: str = "") -> tuple[str, ApiKey]: ...

    def authenticate(self, token: str) -> tuple[ApiKey, Account] | None:
        """Constant-time check of a presented token; None if unknown, malformed or revoked."""
        ...

    def revoke_api_key(self, key_id: str) -> bool: ...

    def list_api_keys(self, account_id: str | None = None) -> list[ApiKey]: ...

    # events
    def insert_events(self, events: Sequence[Event]) -> int:
        """Insert a batch in one transaction; ids already present are skipped. Returns rows added."""
        ...

    def count_events(self, account_id: str | None = None) -> int: ...

    def iter_events(
        self,
        since_ts: float | None = None,
        account_id: str | None = None,
        batch: int = 1000,
        *,
        after: tuple[float, str] | None = None,
    ) -> Iterator[Event]:
        """Events in (ts, id) order; ``after=(ts, id)`` starts strictly after that event (a cursor)."""
        ...

    # watermark key records (public part; secrets are re-derived from the master secret)
    def record_watermark_key(self, record: dict[str, Any], config_hash: str) -> bool: ...

    def watermark_key_records(
        self, scope: str | None = None, ident: str | None = None
    ) -> list[dict[str, Any]]: ...

    # risk engine output: findings (append-only history) and risk_state (latest per subject)
    def record_findings(self, findings: Sequence[Finding]) -> int:
        """Append the findings and upsert each subject's risk state, in one transaction.
        Returns the number of findings appended."""
        ...

    def risk_state(self, subject_kind: str, subject_id: str) -> RiskState | None: ...

    def top_risk(
        self, subject_kind: str, limit: int = 50, offset: int = 0, flagged_only: bool = False
    ) -> list[RiskState]:
        """Risk states by score, highest first."""
        ...

    def findings_for(self, subject_kind: str, subject_id: str, limit: int = 100) -> list[Finding]:
        """A subject's findings, newest first."""
        ...

    def findings_with_ids(
        self, subject_kind: str, subject_id: str, limit: int = 100
    ) -> list[tuple[int, Finding]]:
        """``findings_for`` with each finding's id (what ``record_decision(finding_id=)`` refers to)."""
        ...

    def count_flagged(self, subject_kind: str) -> int: ...

    # enforcement decisions
    def record_decision(
        self,
        subject_kind: str,
        subject_id: str,
        action: str,
        actor: str,
        reason: str,
        finding_id: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> Decision:
        """A new active decision; the subject's previous active decision is superseded."""
        ...

    def record_engine_decision(
        self,
        subject_kind: str,
        subject_id: str,
        action: str,
        reason: str,
        finding_id: int | None = None,
        params: dict[str, Any] | None = None,
        *,
        finding_ts: float | None = None,
    ) -> Decision | None:
        """``record_decision`` by actor ``engine``, unless it would change nothing or overrule an
        operator; then None and nothing is written. Checked in the write transaction, so replicas
        that see the same transition record it once. An operator's active decision is kept, except
        a ``reset`` older than ``finding_ts`` (the engine acts on a finding made after the reset);
        an active engine decision with the same action and params is kept."""
        ...

    def active_decision(self, subject_kind: str, subject_id: str) -> Decision | None: ...

    def account_risk(self, account_id: str) -> tuple[RiskState | None, Decision | None]:
        """An account's risk state and active decision, read together (one connection)."""
        ...

    def decisions_for(self, subject_kind: str, subject_id: str, limit: int = 100) -> list[Decision]:
        """A subject's decisions, newest first."""
        ...

    def reverse_decision(self, decision_id: int, actor: str) -> bool:
        """Deactivate an active decision; False if unknown or no longer active."""
        ...

    # cursors of background workers over the event log, in iter_events' (ts, id) order
    def get_cursor(self, name: str) -> tuple[float, str] | None: ...

    def set_cursor(self, name: str, ts: float, event_id: str) -> None: ...

    # one active worker per name across processes: take/renew (True) or see another's live lease
    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool: ...

    def release_lease(self, name: str, holder: str) -> None: ...
