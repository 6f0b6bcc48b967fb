"""Feed the risk engine from the store and store its findings.

One class for both deployments: inside the gateway (single node; ``run_async`` is a background task
that does every step in a worker thread, so the event loop never waits on embeddings or SQL) and as
``antidistill analyze`` (a separate process over the shared Postgres store, ``run_forever``).

The worker reads the ``events`` table in ``(ts, id)`` order after its saved cursor. On start it first
rebuilds the engine's in-memory state by replaying the ``rebuild_s`` seconds before the cursor without
storing findings again. It stays ``lag_s`` behind the clock, so that events committed a little late
(another replica's batch, a replayed spill) are not skipped. Only successful requests are scored.

One worker per deployment scores: every step first takes or renews a lease in the store
(``Store.acquire_lease``, ``lease_ttl_s``), renewed again between batches. Other workers (each gateway
replica's embedded engine, a second ``antidistill analyze``) stand by and take over within
``lease_ttl_s`` when the holder stops or dies; a worker that (re)gains the lease starts from a fresh
engine and rebuilds from the store, so no event is counted twice in memory. A clean stop releases the
lease at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from antidistill.clock import Clock, SystemClock
from antidistill.risk.engine import RiskEngine
from antidistill.risk.types import Message, RiskEvent
from antidistill.store.base import Event

log = logging.getLogger("antidistill.risk")

CURSOR = "risk-engine"


def to_risk_event(e: Event, payment: str | None = None) -> RiskEvent | None:
    """The risk engine's view of a stored event; None for events it does not score."""
    if e.account_id is None or e.status >= 400:
        return None
    req = e.request or {}
    msgs: list[Message] = []
    raw = req.get("messages")
    if isinstance(raw, list):
        for m in raw:
            if isinstance(m, dict):
                content = m.get("content")
                if isinstance(content, list):  # content parts
                    content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
                msgs.append(Message(str(m.get("role", "user")), str(content or "")))
    elif "prompt" in req:
        prompt = req["prompt"]
        msgs.append(Message("user", prompt if isinstance(prompt, str) else " ".join(map(str, prompt))))
    return RiskEvent(
        ts=e.ts,
        account=e.account_id,
        messages=tuple(msgs),
        ip=e.client_ip or "",
        user_agent=e.user_agent or "",
        payment_fingerprint=payment,
        response=e.response,
        prompt_tokens=e.prompt_tokens,
        completion_tokens=e.completion_tokens,
    )


@dataclass
class WorkerStats:
    events: int = 0
    scored: int = 0
    findings: int = 0
    flagged_accounts: int = 0
    last_ts: float | None = None
    errors: int = 0


class RiskWorker:
    def __init__(
        self,
        store: Any,
        engine: RiskEngine,
        *,
        batch_size: int = 500,
        lag_s: float = 1.0,
        rebuild_s: float = 7 * 86400.0,
        clock: Clock | None = None,
        cursor_name: str = CURSOR,
        lease_ttl_s: float = 30.0,
    ) -> None:
        self.store = store
        self.engine = engine
        self.batch_size = batch_size
        self.lag_s = lag_s
        self.rebuild_s = rebuild_s
        self.clock = clock or SystemClock()
        self.cursor_name = cursor_name
        self.stats = WorkerStats()
        self._payments: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._rebuilt = False
        self.lease_ttl_s = lease_ttl_s
        self.holder = f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leading = False  # holds the lease now
        self.has_led = False  # has scored (or rebuilt) under a lease before

    def _payment(self, account_id: str) -> str | None:
        if account_id not in self._payments:
            acc = self.store.get_account(account_id)
            meta = acc.metadata if acc is not None else {}
            fp = meta.get("payment_fingerprint") if isinstance(meta, dict) else None
            self._payments[account_id] = str(fp) if fp else None
        return self._payments[account_id]

    def _events(self, after: tuple[float, str] | None, until: float) -> Iterator[Event]:
        since = after[0] if after else None
        for e in self.store.iter_events(since_ts=since, batch=self.batch_size, after=after):
            if e.ts > until:
                return
            yield e

    def _feed(self, events: list[Event], record: bool) -> None:
        batch = [r for r in (to_risk_event(e, self._payment(e.account_id or "")) for e in events) if r]
        findings = self.engine.process(batch) if batch else []
        self.stats.events += len(events)
        self.stats.scored += len(batch)
        if record and findings:
            self.stats.findings += self.store.record_findings(findings)
        if record and events:
            self.store.set_cursor(self.cursor_name, events[-1].ts, events[-1].id)
            self.stats.last_ts = events[-1].ts

    def rebuild(self) -> None:
        """Replay the window before the cursor into the engine (no findings stored)."""
        cursor = self.store.get_cursor(self.cursor_name)
        if cursor is None:
            self._rebuilt = True
            return
        start = cursor[0] - self.rebuild_s
        buf: list[Event] = []
        for e in self.store.iter_events(since_ts=start, batch=self.batch_size):
            if (e.ts, e.id) > cursor:
                break
            buf.append(e)
            if len(buf) >= self.batch_size:
                self._feed(buf, record=False)
                buf = []
        if buf:
            self._feed(buf, record=False)
        log.info("risk engine rebuilt from %d events before the cursor", self.stats.events)
        self._rebuilt = True

    def _lead(self) -> bool:
        """Take or renew the lease; on (re)gaining it after another worker may have scored, start
        from a fresh engine rebuilt from the store."""
        held = self.store.acquire_lease(self.cursor_name, self.holder, self.lease_ttl_s)
        if held and not self.leading:
            log.info("risk worker %s holds the lease: scoring", self.holder)
            if self.has_led:  # our in-memory state may be behind what another worker stored
                self.engine = self.engine.fresh()
                self._rebuilt = False
            self.has_led = True
        elif not held and self.leading:
            log.warning("risk worker %s lost the lease: standing by", self.holder)
        elif not held and not self.has_led and self.stats.events == 0:
            log.debug("risk worker %s stands by: another worker holds the lease", self.holder)
        self.leading = held
        return held

    def release(self) -> None:
        """Give up the lease (clean stop): a standby worker takes over at its next step."""
        with self._lock:
            if self.leading:
                try:
                    self.store.release_lease(self.cursor_name, self.holder)
                except Exception as e:  # a dead store: the lease just runs out
                    log.warning("could not release the risk worker's lease: %s", e)
                self.leading = False

    def step(self) -> int:
        """Score the events that arrived since the cursor; returns how many were read (0 while
        another worker holds the lease)."""
        with self._lock:
            if not self._lead():
                return 0
            if not self._rebuilt:
                self.rebuild()
                if not self._lead():  # the rebuild outlasted the lease
                    return 0
            cursor = self.store.get_cursor(self.cursor_name)
            until = self.clock.now() - self.lag_s
            n = 0
            buf: list[Event] = []
            for e in self._events(cursor, until):
                buf.append(e)
                if len(buf) >= self.batch_size:
                    if not self._lead():  # someone else scores now: stop before storing anything
                        return n
                    self._feed(buf, record=True)
                    n += len(buf)
                    buf = []
            if buf and self._lead():
                self._feed(buf, record=True)
                n += len(buf)
            self.stats.flagged_accounts = sum(
                1 for r in self.engine.accounts.values() if r.first_flag_ts is not None
            )
            return n

    async def run_async(self, interval_s: float, stop: asyncio.Event) -> None:
        """Background task for the gateway: every step runs in a thread."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.step)
            except Exception:  # the worker must outlive a bad batch or a database hiccup
                self.stats.errors += 1
                log.exception("risk engine step failed; retrying in %.1f s", interval_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
        await asyncio.to_thread(self.release)

    def run_forever(self, interval_s: float, stop: threading.Event) -> None:
        """Loop for ``antidistill analyze``."""
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                n = self.step()
                if n:
                    log.info(
                        "scored %d events (%d findings so far, %d accounts flagged)",
                        n,
                        self.stats.findings,
                        self.stats.flagged_accounts,
                    )
            except Exception:
                self.stats.errors += 1
                log.exception("risk engine step failed; retrying in %.1f s", interval_s)
            stop.wait(max(0.0, interval_s - (time.monotonic() - t0)))
        self.release()
