"""A tiny OpenAI-compatible server: the "fake upstream on loopback" for the gateway overhead benchmark
and the upstream backend's integration tests.

It answers ``POST /v1/chat/completions`` and ``POST /v1/completions`` (JSON, or SSE ending in
``data: [DONE]`` when ``stream`` is true) and ``GET /v1/models`` after a fixed delay. The reply is
``reply`` or an echo of the last user message / prompt, cut to ``max_tokens`` words. It is kept lean
(orjson, no per-request logging) so that it costs little next to the gateway being measured.

Per-request overrides (headers): ``x-fake-delay-ms``, ``x-fake-chunk-delay-ms`` and ``x-fake-mode``:
``garbage`` (non-JSON 200), ``500``, ``429``, ``400`` (OpenAI error envelope that echoes the caller's
Authorization header, to test redaction), ``slow`` (sleeps far beyond any sane timeout),
``broken-stream`` (cut mid-way without ``[DONE]``), ``stream-error`` (an error object mid-stream
that echoes the Authorization header), ``bad-shape`` (JSON without ``choices``),
``no-usage`` (no usage object) and ``reasoning`` (adds ``reasoning_content``).

A reasoning model (``evaluation.fake_reasoning``; chat and completions, ``max_tokens`` ignored):
``x-fake-mode: think`` writes ``<think>REASONING</think>\n\nANSWER`` into the content (tag name from
``x-fake-tag``), ``x-fake-mode: reasoning-field`` sends the reasoning as ``reasoning_content`` (before
the content; chat only, completions get the tags); ``x-fake-leak: KIND`` (``fake_reasoning.LEAK_KINDS``)
adds a copy of the reasoning to the answer. Streams are cut into pieces of ``x-fake-piece-chars``
characters (default 7, so tags are split across chunks). Since proxies do not forward a client's
headers, each of these may also come as a body field: ``x_fake_mode``, ``x_fake_tag``, ``x_fake_leak``,
``x_fake_piece_chars`` (a header wins).

Run: ``python -m antidistill.evaluation.fake_upstream --port 8001 --delay-ms 50``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Send

from antidistill.evaluation.fake_reasoning import reasoning_for, visible_reply

SLOW_SECONDS = 600.0
_JSON = "application/json"
REASONING_MODES = ("think", "reasoning-field")
DEFAULT_PIECE_CHARS = 7


@dataclass
class FakeUpstreamConfig:
    delay_ms: float = 0.0  # before every answer (time to first byte)
    reply: str | None = None  # fixed reply; None echoes the last user message / prompt
    stream_chunks: int = 0  # content chunks per streamed choice; 0 = one per word
    chunk_delay_ms: float = 0.0  # between streamed content chunks
    model: str = "fake-upstream"


@dataclass
class FakeUpstreamStats:
    """Counters the tests read (plain ints: cheap, and fine to read from another thread)."""

    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_aborted: int = 0
    last_body: dict[str, Any] = field(default_factory=dict)
    last_authorization: str | None = None


class _ClosingStreamingResponse(StreamingResponse):
    """Closes its generator however the response ends, so a client disconnect is always seen."""

    async def stream_response(self, send: Send) -> None:
        async with contextlib.aclosing(self.body_iterator):  # type: ignore[type-var]
            await super().stream_response(send)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _error(status: int, message: str, etype: str, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": {"message": message, "type": etype, "param": None, "code": None}})
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


def _frame(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _pieces(words: list[str], parts: int) -> list[str]:
    if not words:
        return []
    if parts <= 0 or parts >= len(words):
        return [w if i == 0 else " " + w for i, w in enumerate(words)]
    size = -(-len(words) // parts)
    groups = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [g if i == 0 else " " + g for i, g in enumerate(groups)]


class _Handler:
    def __init__(self, config: FakeUpstreamConfig, stats: FakeUpstreamStats) -> None:
        self.config, self.stats = config, stats

    async def models(self, request: Request) -> Response:
        data = {"object": "list", "data": [{"id": self.config.model, "object": "model", "owned_by": "fake"}]}
        return Response(orjson.dumps(data), media_type=_JSON)

    async def chat(self, request: Request) -> Response:
        return await self._answer(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._answer(request, chat=False)

    async def _answer(self, request: Request, chat: bool) -> Response:
        cfg, stats, headers = self.config, self.stats, request.headers
        stats.requests += 1
        stats.last_authorization = headers.get("authorization")
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "body is not JSON", "invalid_request_error")
        stats.last_body = body

        def option(name: str, default: str = "") -> str:
            value = headers.get(name)
            if value is None and isinstance(body, dict):
                value = body.get(name.replace("-", "_"))
            return default if value is None else str(value)

        mode = option("x-fake-mode")
        delay_ms = float(headers.get("x-fake-delay-ms", cfg.delay_ms))
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000.0)
        if mode == "slow":
            deadline = time.monotonic() + SLOW_SECONDS
            while time.monotonic() < deadline and not await request.is_disconnected():
                await asyncio.sleep(0.05)
            return _error(504, "too slow", "server_error")
        if mode in ("500", "429", "400"):
            if mode == "500":
                return _error(500, "the fake upstream exploded", "server_error")
            if mode == "429":
                return _error(429, "slow down", "rate_limit_error", {"retry-after": "1"})
            return _error(
                400, f"bad temperature; you sent {stats.last_authorization}", "invalid_request_error"
            )

        if chat:
            users = [m for m in body.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
            source = _text_of(users[-1].get("content")) if users else ""
            prompt_words = sum(len(_text_of(m.get("content")).split()) for m in body.get("messages", []))
        else:
            source = _text_of(body.get("prompt"))
            prompt_words = len(source.split())
        if mode in REASONING_MODES:
            return await self._reasoning_answer(body, chat, source, prompt_words, mode, option)
        words = (cfg.reply if cfg.reply is not None else source).split()
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or len(words)
        finish = "length" if len(words) > max_tokens else "stop"
        words = words[:max_tokens]
        n = int(body.get("n") or 1)
        usage = {"prompt_tokens": prompt_words, "completion_tokens": len(words) * n}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        head = {"id": "cmpl-fake", "created": int(time.time()), "model": body.get("model", cfg.model)}

        if body.get("stream"):
            opts = body.get("stream_options") or {}
            send_usage = bool(opts.get("include_usage")) and mode != "no-usage"
            chunk_ms = float(headers.get("x-fake-chunk-delay-ms", cfg.chunk_delay_ms))
            frames = self._frames(chat, head, _pieces(words, cfg.stream_chunks), finish, n, usage, send_usage,
                                  chunk_ms, mode)  # fmt: skip
            return _ClosingStreamingResponse(frames, media_type="text/event-stream")

        if mode == "garbage":
            return Response(b"<html>502 Bad Gateway</html>", media_type="text/html")
        if mode == "bad-shape":
            return Response(orjson.dumps({**head, "object": "chat.completion"}), media_type=_JSON)
        if mode == "broken-stream":
            return Response(orjson.dumps({**head, "choices": []})[:25], media_type=_JSON)
        text = " ".join(words)
        choices: list[dict[str, Any]] = []
        for i in range(n):
            if chat:
                msg: dict[str, Any] = {"role": "assistant", "content": text}
                if mode == "reasoning":
                    msg["reasoning_content"] = "let me think"
                choices.append({"index": i, "message": msg, "finish_reason": finish, "logprobs": None})
            else:
                choices.append({"index": i, "text": text, "finish_reason": finish, "logprobs": None})
        out = {**head, "object": "chat.completion" if chat else "text_completion", "choices": choices}
        if mode != "no-usage":
            out["usage"] = usage
        return Response(orjson.dumps(out), media_type=_JSON)

    async def _reasoning_answer(
        self, body: dict[str, Any], chat: bool, source: str, prompt_words: int, mode: str, option: Any
    ) -> Response:
        tag, leak = option("x-fake-tag", "think"), option("x-fake-leak") or None
        piece = max(1, int(option("x-fake-piece-chars", str(DEFAULT_PIECE_CHARS))))
        reasoning, visible = reasoning_for(source), visible_reply(source, leak)
        field = chat and mode == "reasoning-field"
        content = visible if field else f"<{tag}>{reasoning}</{tag}>\n\n{visible}"
        n = int(body.get("n") or 1)
        tokens = math.ceil((len(content) + (len(reasoning) if field else 0)) / 4)
        usage = {"prompt_tokens": prompt_words, "completion_tokens": tokens * n}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        head = {"id": "cmpl-fake", "created": int(time.time()), "model": body.get("model", self.config.model)}
        if body.get("stream"):
            opts = body.get("stream_options") or {}
            send_usage = bool(opts.get("include_usage"))
            frames = self._reasoning_frames(
                chat, head, content, reasoning if field else "", piece, n, usage, send_usage
            )
            return _ClosingStreamingResponse(frames, media_type="text/event-stream")
        choices: list[dict[str, Any]] = []
        for i in range(n):
            if chat:
                msg: dict[str, Any] = {"role": "assistant", "content": content}
                if field:
                    msg["reasoning_content"] = reasoning
                choices.append({"index": i, "message": msg, "finish_reason": "stop", "logprobs": None})
            else:
                choices.append({"index": i, "text": content, "finish_reason": "stop", "logprobs": None})
        out = {**head, "object": "chat.completion" if chat else "text_completion", "choices": choices}
        out["usage"] = usage
        return Response(orjson.dumps(out), media_type=_JSON)

    async def _reasoning_frames(
        self,
        chat: bool,
        head: dict[str, Any],
        content: str,
        reasoning: str,
        piece: int,
        n: int,
        usage: dict[str, int],
        send_usage: bool,
    ) -> AsyncIterator[bytes]:
        stats = self.stats
        stats.streams_started += 1
        base = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}

        def frame(field: str, text: str, fin: str | None = None) -> bytes:
            if chat:
                choices = [{"index": i, "delta": {field: text}, "finish_reason": fin} for i in range(n)]
            else:
                choices = [{"index": i, "text": text, "finish_reason": fin} for i in range(n)]
            return _frame({**base, "choices": choices})

        try:
            if chat:
                yield _frame({**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                   "finish_reason": None} for i in range(n)]})  # fmt: skip
            for k in range(0, len(reasoning), piece):
                yield frame("reasoning_content", reasoning[k : k + piece])
            for k in range(0, len(content), piece):
                yield frame("content", content[k : k + piece])
            yield frame("content", "", "stop")
            if send_usage:
                yield _frame({**base, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"
            stats.streams_completed += 1
        except (asyncio.CancelledError, GeneratorExit):
            stats.streams_aborted += 1
            raise

    async def _frames(
        self,
        chat: bool,
        head: dict[str, Any],
        pieces: list[str],
        finish: str,
        n: int,
        usage: dict[str, int],
        send_usage: bool,
        chunk_ms: float,
        mode: str,
    ) -> AsyncIterator[bytes]:
        stats = self.stats
        stats.streams_started += 1
        base = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}

        def choice(i: int, text: str, fin: str | None, first: bool = False) -> dict[str, Any]:
            if not chat:
                return {"index": i, "text": text, "finish_reason": fin, "logprobs": None}
            delta: dict[str, Any] = {"role": "assistant", "content": text} if first else {"content": text}
            return {"index": i, "delta": delta, "finish_reason": fin, "logprobs": None}

        try:
            if mode == "garbage":
                yield b"data: <html>oops</html>\n\n"
                return
            if mode == "bad-shape":
                yield _frame(base) + b"data: [DONE]\n\n"
                return
            if chat:
                first = {**base, "choices": [choice(i, "", None, first=True) for i in range(n)]}
                if mode == "reasoning":
                    first["choices"][0]["delta"]["reasoning_content"] = "let me think"
                yield _frame(first)
            for k, piece in enumerate(pieces):
                if k and chunk_ms > 0:
                    await asyncio.sleep(chunk_ms / 1000.0)
                if mode == "broken-stream" and k == max(1, len(pieces) // 2):
                    yield b'data: {"id": "cmpl-fake", "cho'  # cut mid-frame, no [DONE]
                    return
                if mode == "stream-error" and k == max(1, len(pieces) // 2):
                    auth = self.stats.last_authorization
                    yield _frame({"error": {"message": f"engine died; key {auth}", "type": "server_error"}})
                    return
                yield _frame({**base, "choices": [choice(i, piece, None) for i in range(n)]})
            yield _frame({**base, "choices": [choice(i, "", finish) for i in range(n)]})
            if send_usage:
                yield _frame({**base, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"
            stats.streams_completed += 1
        except (asyncio.CancelledError, GeneratorExit):  # the client went away mid-stream
            stats.streams_aborted += 1
            raise


def create_app(config: FakeUpstreamConfig | None = None) -> Starlette:
    """The fake upstream; its counters are on ``app.state.stats`` (a FakeUpstreamStats)."""
    stats = FakeUpstreamStats()
    h = _Handler(config or FakeUpstreamConfig(), stats)
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", h.chat, methods=["POST"]),
            Route("/v1/completions", h.completions, methods=["POST"]),
            Route("/v1/models", h.models, methods=["GET"]),
        ]
    )
    app.state.stats = stats
    return app


def run(
    host: str = "127.0.0.1",
    port: int = 8001,
    delay_ms: float = 0.0,
    reply: str | None = None,
    stream_chunks: int = 0,
    chunk_delay_ms: float = 0.0,
) -> None:
    """Serve the fake upstream until interrupted (no access log)."""
    import uvicorn

    config = FakeUpstreamConfig(delay_ms, reply, stream_chunks, chunk_delay_ms)
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=2)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="A fake OpenAI-compatible upstream with a fixed delay.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="delay before every answer")
    ap.add_argument("--reply", default=None, help="fixed reply text (default: echo the prompt)")
    ap.add_argument("--stream-chunks", type=int, default=0, help="content chunks per stream (0: per word)")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between streamed chunks")
    a = ap.parse_args(argv)
    run(a.host, a.port, a.delay_ms, a.reply, a.stream_chunks, a.chunk_delay_ms)


if __name__ == "__main__":
    main()
