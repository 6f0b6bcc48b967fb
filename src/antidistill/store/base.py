"""The Store protocol: the durable state of antidistill (accounts, API keys, events, ...).

One interface, two engines (SQLite default, Postgres for multi-replica deployments), same contract
tests. Methods are synchronous and thread-safe; async callers run them through
``anyio.to_thread``. The event writer (store/writer.py) batches inserts off the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from antidistill.errors import AlreadyExistsError, RejectedDataError

Tier = Literal["trusted", "standard", "new"]
TIERS: tuple[str, ...] = ("trusted", "standard", "new")
ACCOUNT_STATUSES: tuple[str, ...] = ("active", "blocked")

__all__ = [
    "ACCOUNT_STATUSES",
    "TIERS",
    "Account",
    "AlreadyExistsError",
    "ApiKey",
    "Event",
    "RejectedDataError",
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
        self, since_ts: float | None = None, account_id: str | None = None, batch: int = 1000
    ) -> Iterator[Event]:
        """Events in (ts, id) order."""
        ...

    # watermark key records (public part; secrets are re-derived from the master secret)
    def record_watermark_key(self, record: dict[str, Any], config_hash: str) -> bool: ...

    def watermark_key_records(
        self, scope: str | None = None, ident: str | None = None
    ) -> list[dict[str, Any]]: ...
