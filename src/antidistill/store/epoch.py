"""The operators' change token in Redis: lets every gateway replica cache authentication and policy
decisions and still apply an operator's change to the very next request.

Every operator change that must apply at once (a block, a reversal, any operator decision, a key
revocation) is first committed to the store, then ``bump`` sets ``epoch_key(prefix)`` to a fresh random
value. A replica reads the token at the start of each request (``current``, one Redis round trip
on the event loop, ~0.1 ms) and drops its caches whenever it differs from the token its caches were
filled under; so a request that starts after the operator's call returned reads the store.

Why a random value and not a counter: Redis here may keep nothing on disk. With a counter, a
restart (or an eviction) followed by one bump could bring back a value a replica cached under
(ABA), and that replica would keep serving a blocked account. ``current`` never returns "missing":
it runs ``SET key <fresh random> NX GET``, so after a restart the first reader installs a value no
replica has cached under.

When Redis fails or is slow, ``current`` returns None and callers must not use their caches (they
read the store on every request: correct, only slower). A circuit breaker keeps a dead Redis from
costing a timeout per request.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from antidistill.clock import Clock, SystemClock
from antidistill.limits.breaker import CircuitBreaker

log = logging.getLogger(__name__)


def epoch_key(prefix: str) -> str:
    """The token's key: under the deployment's Redis prefix (``limits.shared.key_prefix``)."""
    return f"{prefix}:operator-epoch"


def _fresh() -> str:
    return secrets.token_hex(16)


def bump_epoch_sync(redis_url: str | None, prefix: str, *, timeout_s: float = 2.0) -> bool:
    """Announce an operator change from a process without an event loop (the CLI). False (and a
    warning) when Redis can't be told: replicas then apply the change within their cache TTLs."""
    if redis_url is None:
        return False
    try:
        client = SyncRedis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        try:
            client.set(epoch_key(prefix), _fresh())
        finally:
            client.close()
        return True
    except Exception as e:
        log.warning(
            "could not announce the change to gateway replicas through Redis (%s); they apply it within "
            "server.auth_cache_ttl_s / policy.cache_ttl_s",
            e,
        )
        return False


class RedisEpoch:
    def __init__(
        self,
        client: Redis,
        prefix: str,
        *,
        clock: Clock | None = None,
        timeout_s: float = 0.05,
        owns_client: bool = False,
    ) -> None:
        self._redis = client
        self.key = epoch_key(prefix)
        self._timeout = timeout_s
        self._owns_client = owns_client
        self.breaker = CircuitBreaker(clock or SystemClock(), failure_threshold=3, min_outage_s=0.2)
        self.stats = {"reads": 0, "failed": 0, "bumps": 0}

    @classmethod
    def from_url(
        cls, url: str, prefix: str, *, timeout_s: float = 0.05, max_connections: int = 64
    ) -> RedisEpoch:
        client = Redis.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        return cls(client, prefix, timeout_s=timeout_s, owns_client=True)

    async def current(self) -> str | None:
        """The token now in Redis (installing a fresh one if there is none); None if unknown."""
        may, probe = self.breaker.acquire()
        if not may:
            return None
        self.stats["reads"] += 1
        fresh = _fresh()
        try:
            async with asyncio.timeout(self._timeout):
                old = await self._redis.set(self.key, fresh, nx=True, get=True)
        except asyncio.CancelledError:
            self.breaker.release(probe)
            raise
        except Exception as e:
            self.stats["failed"] += 1
            self.breaker.failure(probe, "timeout" if isinstance(e, TimeoutError) else repr(e))
            return None
        self.breaker.success(probe)
        if old is None:
            return fresh
        return old.decode() if isinstance(old, bytes) else str(old)

    async def bump(self) -> bool:
        """Announce a change (after it is committed to the store). Retried briefly: it matters."""
        deadline = time.monotonic() + 1.0
        while True:
            try:
                async with asyncio.timeout(max(self._timeout, 0.25)):
                    await self._redis.set(self.key, _fresh())
                self.stats["bumps"] += 1
                return True
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if time.monotonic() >= deadline:
                    log.warning("could not announce an operator change through Redis: %r", e)
                    return False
                await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        if self._owns_client:
            try:
                async with asyncio.timeout(1.0):
                    await self._redis.aclose()
            except Exception as e:
                log.debug("operator epoch: close failed: %r", e)
