"""Authentication without a store read per request, for replicas on a networked store (Postgres).

Without it, every request pays one store read in a worker thread (~0.7 ms on Postgres here, most
of the gateway's added latency). With it, a request pays one Redis round trip on the event loop
(~0.1 ms, ``RedisEpoch.current``) and a dict lookup.

Correctness: the cache maps a key id to ``(sha256(secret), key, account)`` as last read from the
store. It is used only while the operators' change token (``store/epoch.py``) is the one it was
filled under; any operator change (block, decision, reversal, key revocation) replaces the token
after committing, so every replica's very next request reads the store again. The same change also
clears the enforcer's decision cache (``on_change``), so an operator's decision of any kind applies
at once on every replica. When the token can't be read (Redis down or slow), nothing is served from
the cache. Entries also expire after ``ttl_s``, which bounds changes made behind the operators'
back (SQL by hand). Unknown or wrong tokens are never cached: they always cost a store read.
The secret is compared in constant time against the stored hash, exactly as the store does.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass

import anyio

from antidistill.clock import Clock
from antidistill.store import tokens
from antidistill.store.base import Account, ApiKey, Store
from antidistill.store.epoch import RedisEpoch


@dataclass(frozen=True, slots=True)
class _Entry:
    secret_hash: str
    key: ApiKey
    account: Account
    read_at: float


class AuthCache:
    def __init__(
        self,
        store: Store,
        epoch: RedisEpoch,
        clock: Clock,
        *,
        ttl_s: float = 30.0,
        max_keys: int = 100_000,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        if ttl_s <= 0 or max_keys < 1:
            raise ValueError("need ttl_s > 0 and max_keys >= 1")
        self.store = store
        self.epoch = epoch
        self.clock = clock
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self.on_change = on_change
        self._token: str | None = None
        self._entries: dict[str, _Entry] = {}
        self.stats = {"hits": 0, "reads": 0, "uncached": 0, "changes": 0}

    async def authenticate(self, token: str) -> tuple[ApiKey, Account] | None:
        parsed = tokens.parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        current = await self.epoch.current()
        if current is None:  # can't tell whether an operator changed something: read the store
            self.stats["uncached"] += 1
            return await self._read(token)
        if current != self._token:
            self._entries.clear()
            if self._token is not None:
                self.stats["changes"] += 1
                if self.on_change is not None:
                    self.on_change()
            self._token = current
        now = self.clock.monotonic()
        entry = self._entries.get(key_id)
        if entry is not None and now - entry.read_at < self.ttl_s:
            self.stats["hits"] += 1
            if not hmac.compare_digest(entry.secret_hash, tokens.hash_secret(secret)):
                return None
            return entry.key, entry.account
        found = await self._read(token)
        if found is not None and self._token == current:  # no change arrived while we read
            self._keep(key_id, _Entry(tokens.hash_secret(secret), found[0], found[1], now))
        return found

    async def _read(self, token: str) -> tuple[ApiKey, Account] | None:
        self.stats["reads"] += 1
        return await anyio.to_thread.run_sync(self.store.authenticate, token)

    def _keep(self, key_id: str, entry: _Entry) -> None:
        self._entries.pop(key_id, None)
        self._entries[key_id] = entry
        while len(self._entries) > self.max_keys:
            del self._entries[next(iter(self._entries))]

    def forget_all(self) -> None:
        """This replica's own operator change: drop everything now (the token changes too)."""
        self._entries.clear()
        self._token = None

    async def announce(self) -> bool:
        """After an operator change is committed: tell every replica (and this one)."""
        self.forget_all()
        if self.on_change is not None:
            self.on_change()
        return await self.epoch.bump()

    def __len__(self) -> int:
        return len(self._entries)

    async def aclose(self) -> None:
        await self.epoch.aclose()
