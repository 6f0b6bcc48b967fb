"""A deterministic backend for tests and gateway benchmarks (no model, no network).

The reply is ``settings.reply`` or an echo of the last user message (the prompt for completions),
cut at the first stop string and truncated to ``max_tokens`` "tokens" (whitespace-separated words).
Streams yield one chunk per word per choice. ``delay_ms`` is waited before the reply and a quarter of
it between streamed chunks; both waits are cancellable, so a cancelled request stops at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from antidistill.backends.base import Choice, Chunk, Completion, FinishReason, GenerationRequest, Usage
from antidistill.settings import FakeBackendSettings


class FakeBackend:
    name = "fake"

    def __init__(self, settings: FakeBackendSettings | None = None, served_model: str = "fake-model") -> None:
        self._settings = settings or FakeBackendSettings()
        self._served_model = served_model
        self._fail: BaseException | None = None
        self.calls = 0  # requests started (complete or stream)
        self.cancelled = 0  # requests cancelled or streams closed before their end

    def fail_next(self, exc: BaseException) -> None:
        """Make the next ``complete``/``stream`` call raise ``exc`` (streams: at their first step)."""
        self._fail = exc

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def model_ids(self) -> list[str]:
        return [self._served_model]

    def _begin(self) -> None:
        self.calls += 1
        exc, self._fail = self._fail, None
        if exc is not None:
            raise exc

    def _reply(self, req: GenerationRequest) -> tuple[list[str], FinishReason, Usage]:
        source = self._prompt_text(req)
        text = self._settings.reply if self._settings.reply is not None else source
        finish: FinishReason = "stop"
        cut = min((i for i in (text.find(s) for s in req.params.stop) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        words = text.split()
        if len(words) > req.params.max_tokens:
            words, finish = words[: req.params.max_tokens], "length"
        prompt_tokens = sum(len(m.content.split()) for m in req.messages) + len(req.prompt.split())
        return words, finish, Usage(prompt_tokens, len(words) * req.params.n)

    @staticmethod
    def _prompt_text(req: GenerationRequest) -> str:
        if req.kind == "completion":
            return req.prompt
        users = [m.content for m in req.messages if m.role == "user"]
        return users[-1] if users else ""

    async def _wait(self, ms: float) -> None:
        if ms > 0:
            await asyncio.sleep(ms / 1000.0)

    async def complete(self, req: GenerationRequest) -> Completion:
        self._begin()
        try:
            await self._wait(self._settings.delay_ms)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        words, finish, usage = self._reply(req)
        text = " ".join(words)
        choices = tuple(Choice(index=i, text=text, finish_reason=finish) for i in range(req.params.n))
        return Completion(choices=choices, usage=usage)

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        self._begin()
        words, finish, usage = self._reply(req)
        n, finished = req.params.n, False
        try:
            await self._wait(self._settings.delay_ms)
            for w, word in enumerate(words):
                if w:
                    await self._wait(self._settings.delay_ms / 4)
                piece = word if w == 0 else " " + word
                last = w == len(words) - 1
                for i in range(n):
                    yield Chunk(index=i, text=piece, finish_reason=finish if last else None)
            if not words:
                for i in range(n):
                    yield Chunk(index=i, finish_reason=finish)
            finished = True
            yield Chunk(usage=usage)
        finally:
            if not finished:
                self.cancelled += 1
