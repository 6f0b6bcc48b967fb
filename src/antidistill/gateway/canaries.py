"""Serving canaries (``watermark/canaries.py``) to accounts under the ``watermark_canary`` action.

    canary = canary_for(rt, decision, account_id, gen)      # before the backend is called
    result = canary_completion(result, canary, rec)         # JSON
    source = canary_stream(source, canary, rec)             # SSE: after the reasoning guard

For such an account, a share ``watermark.canary_rate`` of its answers (chosen per (account, prompt)
with HMAC, so a repeated prompt gets the same answer) ends with one short invented "fact" from the
account's secret subset of the pool, as its own last paragraph. Only choices that finish with
``stop`` carry it (an answer cut by ``max_tokens`` is left alone), every such choice of the request
gets the same sentence, and in a stream it is sent as one content chunk just before the choice's
finish chunk. The request's event records ``params.canary = {"id", "pool", "choices"}``: the pool
item and how many choices carried it (never the text); the audit reads it back
(``forensics/canary.py``). Works with every backend, also upstream ones the gateway cannot
watermark token by token.

The usage counts the backend's tokens only: the ~20 tokens of the sentence are not added.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Any

from antidistill.backends.base import Chunk, Completion, GenerationRequest
from antidistill.gateway.recorder import ExchangeRecord
from antidistill.gateway.runtime import Runtime
from antidistill.policy.evaluate import PolicyDecision
from antidistill.settings import Settings
from antidistill.watermark.canaries import CanaryBook, CanaryChoice, canary_suffix, prompt_key

log = logging.getLogger("antidistill.gateway")
ACTION = "watermark_canary"


@dataclass(frozen=True, slots=True)
class CanaryServer:
    book: CanaryBook
    rate: float

    @classmethod
    def from_settings(cls, settings: Settings) -> CanaryServer | None:
        wm = settings.watermark
        if not wm.canaries or wm.canary_rate <= 0.0:
            return None
        from antidistill.watermark.keystore import load_master_secret

        book = CanaryBook(load_master_secret(wm), wm.canary_pool_size, wm.canary_per_account)
        return cls(book, wm.canary_rate)

    def choose(self, account_id: str, gen: GenerationRequest) -> CanaryChoice | None:
        key = prompt_key([(m.role, m.content) for m in gen.messages], gen.prompt)
        return self.book.choose(account_id, key, self.rate)


def build_canary_server(settings: Settings) -> CanaryServer | None:
    """Built once in the app's lifespan (reads the master secret: never on the request path); None
    when disabled or when the master secret cannot be read (logged; answers are then served
    without canaries)."""
    try:
        return CanaryServer.from_settings(settings)
    except Exception:
        log.exception("canaries disabled: could not derive the canary pool")
        return None


def canary_server(rt: Runtime) -> CanaryServer | None:
    """The runtime's canary server (``rt.canaries``)."""
    return rt.canaries


def canary_for(
    rt: Runtime, decision: PolicyDecision | None, account_id: str, gen: GenerationRequest
) -> CanaryChoice | None:
    """The canary this request's answer carries (None unless the account is under the action)."""
    if decision is None or ACTION not in decision.actions:
        return None
    server = canary_server(rt)
    return None if server is None else server.choose(account_id, gen)


def _record(rec: ExchangeRecord, canary: CanaryChoice, choices: int) -> None:
    field: dict[str, Any] = {**canary.record(), "choices": choices}
    rec.params["canary"] = field


def canary_completion(result: Completion, canary: CanaryChoice, rec: ExchangeRecord) -> Completion:
    """``result`` with the canary appended to every choice that finished with ``stop``."""
    choices = tuple(
        replace(c, text=c.text + canary_suffix(bool(c.text.strip()), canary.text))
        if c.finish_reason == "stop"
        else c
        for c in result.choices
    )
    marked = sum(1 for c in result.choices if c.finish_reason == "stop")
    if marked:
        _record(rec, canary, marked)
    return replace(result, choices=choices)


async def canary_stream(
    chunks: AsyncGenerator[Chunk, None], canary: CanaryChoice, rec: ExchangeRecord
) -> AsyncGenerator[Chunk, None]:
    """``chunks`` with the canary sent as a content chunk before each ``stop`` finish chunk."""
    said: set[int] = set()  # choices that have sent visible (non-blank) text
    marked = 0
    try:
        async for chunk in chunks:
            if chunk.text.strip():
                said.add(chunk.index)
            if chunk.finish_reason != "stop":
                yield chunk
                continue
            if chunk.text or chunk.reasoning:  # the last piece of the answer, without its finish
                yield replace(chunk, finish_reason=None, usage=None)
            yield Chunk(index=chunk.index, text=canary_suffix(chunk.index in said, canary.text))
            marked += 1
            _record(rec, canary, marked)
            yield Chunk(index=chunk.index, finish_reason="stop", usage=chunk.usage)
    finally:
        await chunks.aclose()
