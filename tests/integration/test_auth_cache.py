"""The gateway's auth cache (gateway/auth_cache.py) against the real Redis on 127.0.0.1:6379: hits
cost no store read, an operator change announced by another replica (or by the CLI) makes the very
next authentication read the store, a Redis restart can't bring back a stale token, and with Redis
down nothing is served from the cache. Redis down makes each test FAIL at once, never hang."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from antidistill.clock import ManualClock
from antidistill.gateway.auth_cache import AuthCache
from antidistill.store.base import Store
from antidistill.store.epoch import RedisEpoch, bump_epoch_sync, epoch_key
from tests.conftest_store import fresh_store
from tests.integration.conftest import REDIS_URL, _sync_client

pytestmark = pytest.mark.redis


class CountingStore:
    """The store, with its authentication reads counted."""

    def __init__(self, store: Store) -> None:
        self.inner = store
        self.auth_reads = 0

    def authenticate(self, token: str) -> Any:
        self.auth_reads += 1
        return self.inner.authenticate(token)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with fresh_store("sqlite", tmp_path) as s:
        yield s


@pytest.fixture
async def replicas(store: Store, prefix: str) -> AsyncIterator[tuple[AuthCache, AuthCache, CountingStore]]:
    counting = CountingStore(store)
    clock = ManualClock()
    caches = [
        AuthCache(counting, RedisEpoch.from_url(REDIS_URL, prefix, timeout_s=1.0), clock, ttl_s=30.0)  # type: ignore[arg-type]
        for _ in range(2)
    ]
    yield caches[0], caches[1], counting
    for c in caches:
        await c.aclose()


async def test_hits_skip_the_store_and_wrong_secrets_are_refused(
    replicas: tuple[AuthCache, AuthCache, CountingStore], store: Store
) -> None:
    a, _, counting = replicas
    acct = store.create_account("alice", "standard", {})
    token, key = store.create_api_key(acct.id)
    for _ in range(5):
        found = await a.authenticate(token)
        assert found is not None and found[0].id == key.id and found[1].id == acct.id
    assert counting.auth_reads == 1 and a.stats["hits"] == 4
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert await a.authenticate(wrong) is None  # same key id, wrong secret: refused from the cache
    assert await a.authenticate("ad-000000000000-" + "x" * 43) is None  # unknown: read, not cached
    assert await a.authenticate("not a token") is None
    assert counting.auth_reads == 2


async def test_a_change_announced_by_one_replica_applies_to_the_next_request_on_the_other(
    replicas: tuple[AuthCache, AuthCache, CountingStore], store: Store
) -> None:
    a, b, counting = replicas
    changes: list[int] = []
    a.on_change = lambda: changes.append(1)
    acct = store.create_account("bob", "standard", {})
    token, _ = store.create_api_key(acct.id)
    found = await a.authenticate(token)
    assert found is not None and found[1].status == "active"
    store.update_account(acct.id, status="blocked")  # the operator's commit...
    hit = await a.authenticate(token)
    assert hit is not None and hit[1].status == "active"  # ...not announced yet: still cached
    await b.announce()  # ...announced by the replica that took the decision
    again = await a.authenticate(token)
    assert again is not None and again[1].status == "blocked"
    assert changes == [1] and a.stats["changes"] == 1
    reads = counting.auth_reads
    bump_epoch_sync(REDIS_URL, b.epoch.key.removesuffix(":operator-epoch"))  # the CLI's way
    assert await a.authenticate(token) is not None and counting.auth_reads == reads + 1


async def test_a_revoked_key_is_refused_after_the_announcement(
    replicas: tuple[AuthCache, AuthCache, CountingStore], store: Store
) -> None:
    a, b, _ = replicas
    acct = store.create_account("carol", "standard", {})
    token, key = store.create_api_key(acct.id)
    assert await a.authenticate(token) is not None
    assert store.revoke_api_key(key.id)
    await b.announce()
    assert await a.authenticate(token) is None


async def test_a_lost_token_is_replaced_by_a_fresh_one_not_by_the_old(
    replicas: tuple[AuthCache, AuthCache, CountingStore], store: Store, prefix: str
) -> None:
    """Redis restarted (it keeps nothing on disk) or evicted the key: the cache must not survive it
    if a change happened meanwhile. With SET NX GET the first reader installs a value nobody cached
    under, so the cache is dropped whether or not a change happened."""
    a, _, counting = replicas
    acct = store.create_account("dave", "standard", {})
    token, _ = store.create_api_key(acct.id)
    assert await a.authenticate(token) is not None
    with _sync_client() as r:
        r.delete(epoch_key(prefix))
    store.update_account(acct.id, status="blocked")
    found = await a.authenticate(token)
    assert found is not None and found[1].status == "blocked" and counting.auth_reads == 2


async def test_with_redis_down_every_request_reads_the_store(store: Store) -> None:
    counting = CountingStore(store)
    dead = RedisEpoch.from_url("redis://127.0.0.1:1/0", "antidistill:test:dead", timeout_s=0.05)
    cache = AuthCache(counting, dead, ManualClock(), ttl_s=30.0)  # type: ignore[arg-type]
    acct = store.create_account("erin", "standard", {})
    token, _ = store.create_api_key(acct.id)
    try:
        for _ in range(4):
            assert await cache.authenticate(token) is not None
        store.update_account(acct.id, status="blocked")
        found = await cache.authenticate(token)
        assert found is not None and found[1].status == "blocked"
        assert counting.auth_reads == 5 and cache.stats["hits"] == 0 and cache.stats["uncached"] == 5
        deadline = time.monotonic() + 5.0  # a run of failures lasting min_outage_s opens the circuit
        while dead.breaker.state == "closed" and time.monotonic() < deadline:
            assert await cache.authenticate(token) is not None
            await asyncio.sleep(0.02)
        assert dead.breaker.state == "open"  # later calls skip the dead server at once
    finally:
        await cache.aclose()


async def test_entries_expire_after_the_ttl(store: Store, prefix: str) -> None:
    counting = CountingStore(store)
    clock = ManualClock()
    cache = AuthCache(counting, RedisEpoch.from_url(REDIS_URL, prefix, timeout_s=1.0), clock, ttl_s=5.0)  # type: ignore[arg-type]
    acct = store.create_account("frank", "standard", {})
    token, _ = store.create_api_key(acct.id)
    try:
        await cache.authenticate(token)
        clock.advance(4.9)
        await cache.authenticate(token)
        assert counting.auth_reads == 1
        clock.advance(0.2)
        await cache.authenticate(token)
        assert counting.auth_reads == 2
    finally:
        await cache.aclose()
