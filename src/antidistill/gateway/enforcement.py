"""The policy on the request path: right after authentication, ``Enforcer.admit(account)`` looks up
the account's risk state and active decision (``DecisionCache``: at most ``policy.cache_ttl_s`` old)
and evaluates the policy; then

- ``block`` -> 403 ``account_blocked`` with ``x-should-retry: false``;
- ``reverify`` -> 403 ``reverification_required`` with the policy's message (what to do);
- ``cap_params`` -> the body is capped or refused (400 naming the parameter) before it is parsed;
- ``throttle`` -> ``reserve`` takes 1 request + (prompt estimate + n x max_tokens) tokens before the
  backend is called, from the account's budget and, for an account linked to a cluster, from the
  cluster's shared budget too (``cluster:<id>``; a refusal by either gives the other back); 429
  with ``retry-after`` and ``x-ratelimit-*``, so a stream is refused before its first byte; and
  ``Admission.settle`` corrects the tokens to the usage after the response
  (a backend failure gives the budget back; a client that hangs up keeps it charged);
- ``watermark_canary`` -> the decision's ``watermark_scheme`` (recorded in the event).

Outcomes are logged on the request's event (``error_code``, and ``params.policy`` when an action or
an operator's decision applies). When the engine's level moves an account to a new set of actions
(or back to none), the new outcome is stored once as a decision by actor ``engine``, off the
request path (``Store.record_engine_decision``: never over an operator's decision, once across
replicas). The evaluation is memoized per cache entry, so a cached request does no store read and
no policy work.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import Any

import anyio

from antidistill.backends.base import GenerationRequest
from antidistill.clock import Clock
from antidistill.errors import AccountBlockedError, ReverificationRequiredError
from antidistill.gateway.decision_cache import AccountRisk, DecisionCache
from antidistill.limits import Limiter, Reservation, make_limiter, rate_limit_error
from antidistill.policy.evaluate import Policy, PolicyDecision, is_operator
from antidistill.policy.params import Changes, apply_param_caps
from antidistill.settings import Settings
from antidistill.store.base import Account, Store

log = logging.getLogger("antidistill.policy")
MAX_REASON = 2000


def token_estimate(gen: GenerationRequest) -> int:
    """Tokens a request may use: its prompt (about 4 characters a token) and every choice in full."""
    chars = sum(len(m.content) for m in gen.messages) + len(gen.prompt)
    return math.ceil(chars / 4) + gen.params.max_tokens * gen.params.n


@dataclass
class Admission:
    """A throttled request's reservations (the account's, and its cluster's when it has one): give
    back or correct their tokens once the answer is known."""

    limiter: Limiter
    reservation: Reservation
    cluster: Reservation | None = None

    def _all(self) -> list[Reservation]:
        return [self.reservation] if self.cluster is None else [self.reservation, self.cluster]

    def headers(self) -> dict[str, str]:
        """``x-ratelimit-*`` of the account's own budget (the one its owner can reason about)."""
        return self.limiter.headers(self.reservation)

    async def settle(self, tokens: int) -> None:
        for r in self._all():
            try:
                await self.limiter.settle(r, max(0, tokens))
            except Exception:
                log.exception("could not settle a rate-limit reservation")

    async def cancel(self) -> None:
        for r in self._all():
            try:
                await self.limiter.cancel(r)
            except Exception:
                log.exception("could not cancel a rate-limit reservation")


class Enforcer:
    def __init__(
        self,
        policy: Policy,
        store: Store,
        limiter: Limiter,
        clock: Clock,
        *,
        cache_ttl_s: float = 1.0,
        cache_max_accounts: int = 100_000,
    ) -> None:
        self.policy = policy
        self.store = store
        self.limiter = limiter
        self.cache = DecisionCache(store, clock, cache_ttl_s, cache_max_accounts)
        self._recording: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = {
            "blocked": 0,
            "reverify": 0,
            "throttled": 0,
            "cluster_throttled": 0,
            "capped": 0,
            "transitions": 0,
        }

    @classmethod
    def from_settings(cls, settings: Settings, store: Store, clock: Clock, policy: Policy) -> Enforcer:
        redis_url = settings.redis_url
        limiter = make_limiter(
            redis_url,
            clock=clock if redis_url is None else None,  # Redis: its own TIME, one clock for all replicas
            **settings.limits.shared.limiter_options(),
        )
        p = settings.policy
        return cls(
            policy, store, limiter, clock, cache_ttl_s=p.cache_ttl_s, cache_max_accounts=p.cache_max_accounts
        )

    # the request path -------------------------------------------------------------------------
    async def admit(self, account: Account) -> PolicyDecision:
        """The account's decision; raises for ``block`` and ``reverify``."""
        entry = await self.cache.get(account.id)
        memo = entry.memo.get(account.tier)
        if memo is None:
            memo = self._evaluate(account, entry)
        decision: PolicyDecision = memo
        if decision.actions:
            if decision.blocked:
                self.stats["blocked"] += 1
                raise AccountBlockedError()
            if decision.reverify_message is not None:
                self.stats["reverify"] += 1
                raise ReverificationRequiredError(decision.reverify_message)
        return decision

    def cap_params(self, decision: PolicyDecision, body: Any) -> tuple[Any, Changes]:
        if decision.caps is None:
            return body, {}
        body, changes = apply_param_caps(decision.caps, body)
        if changes:
            self.stats["capped"] += 1
        return body, changes

    async def reserve(
        self, account: Account, decision: PolicyDecision, gen: GenerationRequest
    ) -> Admission | None:
        """Take the throttle's budget for this request (None when not throttled); 429 if exhausted."""
        if decision.throttle is None:
            return None
        tokens = token_estimate(gen)
        r = await self.limiter.reserve(f"account:{account.id}", decision.throttle, tokens)
        if not r.allowed:
            self.stats["throttled"] += 1
            raise rate_limit_error(r)
        admission = Admission(self.limiter, r)
        if decision.cluster is not None and decision.cluster_throttle is not None:
            c = await self.limiter.reserve(f"cluster:{decision.cluster}", decision.cluster_throttle, tokens)
            if not c.allowed:  # the account's own budget is given back: nothing was served
                await admission.cancel()
                self.stats["throttled"] += 1
                self.stats["cluster_throttled"] += 1
                raise rate_limit_error(c)
            admission.cluster = c
        return admission

    @staticmethod
    def event_field(decision: PolicyDecision, changes: Changes) -> dict[str, Any] | None:
        """``params.policy`` of the request's event: set when an action or an operator's decision
        applies, or a parameter was lowered."""
        if not decision.actions and decision.source == "engine" and not changes:
            return None
        out: dict[str, Any] = {"actions": list(decision.actions), "level": decision.level}
        out["source"] = decision.source
        if decision.watermark_scheme:
            out["watermark_scheme"] = decision.watermark_scheme
        if decision.decision_id is not None:
            out["decision_id"] = decision.decision_id
        if decision.cluster is not None:
            out["cluster"] = decision.cluster
        if changes:
            out["capped"] = changes
        return out

    # operators and housekeeping ------------------------------------------------------------------
    def forget(self, account_id: str) -> None:
        """Apply the store's current state to the account's very next request (after a decision)."""
        self.cache.forget(account_id)

    def forget_all(self) -> None:
        """Re-read every account's state on its next request (an operator changed something)."""
        self.cache.clear()

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.limiter.aclose()

    # transitions ------------------------------------------------------------------------------
    def _evaluate(self, account: Account, entry: AccountRisk) -> PolicyDecision:
        decision = self.policy.evaluate(account.tier, entry.state, entry.decision)
        entry.memo[account.tier] = decision
        if decision.source == "engine" and self._is_transition(decision, entry):
            self._start_recording(account.id, decision, entry)
        return decision

    @staticmethod
    def _is_transition(decision: PolicyDecision, entry: AccountRisk) -> bool:
        active = entry.decision
        recorded = None if active is None or is_operator(active) else active
        action = decision.store_action()
        if recorded is None:
            return action != "allow"  # nothing recorded and nothing to do: no transition
        return recorded.action != action or recorded.params != decision.record_params()

    def _start_recording(self, account_id: str, decision: PolicyDecision, entry: AccountRisk) -> None:
        if account_id in self._recording:
            return
        self._recording.add(account_id)
        finding_ts = None if entry.state is None else entry.state.ts
        task = asyncio.ensure_future(self._record(account_id, decision, finding_ts))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, account_id: str, decision: PolicyDecision, finding_ts: float | None) -> None:
        reason = "; ".join(decision.reasons) or f"risk level {decision.level}"
        try:
            recorded = await anyio.to_thread.run_sync(
                lambda: self.store.record_engine_decision(
                    "account",
                    account_id,
                    decision.store_action(),
                    reason[:MAX_REASON],
                    decision.finding_id,
                    decision.record_params(),
                    finding_ts=finding_ts,
                )
            )
            if recorded is not None:
                self.stats["transitions"] += 1
                log.info(
                    "account %s: %s (risk level %s, actions %s)",
                    account_id,
                    recorded.action,
                    decision.level,
                    ",".join(decision.actions) or "none",
                )
        except Exception:  # the request path must not care; the next refresh tries again
            log.exception("could not record the engine's decision for account %s", account_id)
        finally:
            self._recording.discard(account_id)
            self.cache.forget(account_id)  # the next request sees what the store now holds
