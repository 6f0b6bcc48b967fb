"""Builds the event row of one exchange as the request progresses and submits it exactly once."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from antidistill.backends.base import Chunk, Completion, GenerationRequest, WatermarkAssignment
from antidistill.gateway.runtime import Runtime
from antidistill.gateway.schemas import request_record
from antidistill.store.base import Event


@dataclass
class ExchangeRecord:
    rt: Runtime
    request_id: str
    endpoint: str
    t0: float
    ts: float
    client_ip: str | None
    user_agent: str | None
    account_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    watermark_key_id: str | None = None
    watermark_config_hash: str | None = None
    stream: bool = False
    _texts: dict[int, list[str]] = field(default_factory=dict)
    _prompt_tokens: int = 0
    _completion_tokens: int = 0
    _done: bool = False
    usage_total: int | None = None  # prompt + completion tokens, once a stream reported its usage

    def set_request(self, gen: GenerationRequest) -> None:
        self.model = gen.model
        if self.rt.settings.events.store_text:
            self.request = request_record(gen)
        p = gen.params
        self.params = {
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "n": p.n,
            "stop": list(p.stop),
            "seed": p.seed,
            "presence_penalty": p.presence_penalty,
            "frequency_penalty": p.frequency_penalty,
        }

    def set_watermark(self, wm: WatermarkAssignment | None) -> None:
        if wm is not None:
            self.watermark_key_id, self.watermark_config_hash = wm.key_id, wm.config_hash
            if wm.canary_key_id is not None:
                self.params["canary_key_id"] = wm.canary_key_id

    def add_chunk(self, chunk: Chunk) -> None:
        if chunk.text:
            self._texts.setdefault(chunk.index, []).append(chunk.text)
        if chunk.usage is not None:
            self._prompt_tokens = chunk.usage.prompt_tokens
            self._completion_tokens = chunk.usage.completion_tokens
            self.usage_total = chunk.usage.total_tokens

    def _response_text(self, result: Completion | None) -> str | None:
        if result is not None:
            texts = [c.text for c in sorted(result.choices, key=lambda c: c.index)]
        elif self._texts:
            texts = ["".join(self._texts[i]) for i in sorted(self._texts)]
        else:
            return None
        # n > 1: choices are separated by a record separator so they can be split again
        return "\x1e".join(texts)

    def finish(
        self,
        status: int,
        *,
        result: Completion | None = None,
        error_code: str | None = None,
    ) -> None:
        if self._done:
            return
        self._done = True
        if result is not None:
            self._prompt_tokens = result.usage.prompt_tokens
            self._completion_tokens = result.usage.completion_tokens
            if result.watermark_key_id:
                self.watermark_key_id = result.watermark_key_id
                self.watermark_config_hash = result.watermark_config_hash
        latency = time.perf_counter() - self.t0
        rt = self.rt
        rt.metrics.requests.labels(self.endpoint, str(status)).inc()
        rt.metrics.latency.labels(self.endpoint).observe(latency)
        if self._completion_tokens:
            rt.metrics.tokens.labels("completion").inc(self._completion_tokens)
            rt.metrics.tokens.labels("prompt").inc(self._prompt_tokens)
        rt.events.submit(
            Event(
                id=self.request_id,
                ts=self.ts,
                account_id=self.account_id,
                key_id=self.key_id,
                client_ip=self.client_ip,
                user_agent=self.user_agent,
                endpoint=self.endpoint,
                model=self.model,
                request=self.request,
                params=self.params,
                response=self._response_text(result) if rt.settings.events.store_text else None,
                prompt_tokens=self._prompt_tokens,
                completion_tokens=self._completion_tokens,
                latency_ms=latency * 1000.0,
                status=status,
                error_code=error_code,
                stream=self.stream,
                watermark_key_id=self.watermark_key_id,
                watermark_config_hash=self.watermark_config_hash,
            )
        )
