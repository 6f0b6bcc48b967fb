"""Rendering backend results as OpenAI wire objects (JSON bodies and SSE chunks)."""

from __future__ import annotations

from typing import Any

import orjson

from antidistill.backends.base import Choice, Chunk, Completion, GenerationRequest, Usage
from antidistill.errors import AntidistillError


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _message(c: Choice) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": c.text, "refusal": None}
    if c.reasoning is not None:  # a reasoning backend's trace, as vLLM / DeepSeek name it
        msg["reasoning_content"] = c.reasoning
    return msg


def completion_body(gen: GenerationRequest, result: Completion, created: int) -> dict[str, Any]:
    if gen.kind == "chat":
        choices: list[dict[str, Any]] = [
            {
                "index": c.index,
                "message": _message(c),
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
            for c in result.choices
        ]
        obj = "chat.completion"
    else:
        choices = [
            {"index": c.index, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
            for c in result.choices
        ]
        obj = "text_completion"
    return {
        "id": gen.request_id,
        "object": obj,
        "created": created,
        "model": gen.model,
        "choices": choices,
        "usage": usage_dict(result.usage),
        "system_fingerprint": None,
    }


class ChunkRenderer:
    """Turns backend Chunks into SSE ``data:`` frames for one streamed response."""

    def __init__(self, gen: GenerationRequest, created: int, include_usage: bool) -> None:
        self._gen = gen
        self._include_usage = include_usage
        self._chat = gen.kind == "chat"
        self._obj = "chat.completion.chunk" if self._chat else "text_completion"
        self._started: set[int] = set()
        self._head = {"id": gen.request_id, "object": self._obj, "created": created, "model": gen.model}

    def _frame(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        body: dict[str, Any] = dict(self._head)
        body["choices"] = choices
        if self._chat:
            body["system_fingerprint"] = None
        if self._include_usage:
            body["usage"] = usage_dict(usage) if usage is not None else None
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def frames(self, chunk: Chunk) -> list[bytes]:
        out: list[bytes] = []
        reasoning = chunk.reasoning if self._chat else None
        has_delta = bool(chunk.text) or bool(reasoning) or chunk.finish_reason is not None
        if has_delta:
            if self._chat:
                delta: dict[str, Any] = {"content": chunk.text} if chunk.text else {}
                if chunk.index not in self._started:
                    self._started.add(chunk.index)
                    delta = {"role": "assistant", "content": chunk.text}
                if reasoning:
                    delta["reasoning_content"] = reasoning
                choice: dict[str, Any] = {
                    "index": chunk.index,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": chunk.finish_reason,
                }
            else:
                choice = {
                    "index": chunk.index,
                    "text": chunk.text,
                    "logprobs": None,
                    "finish_reason": chunk.finish_reason,
                }
            out.append(self._frame([choice]))
        if chunk.usage is not None and self._include_usage:
            out.append(self._frame([], chunk.usage))
        return out


DONE_FRAME = b"data: [DONE]\n\n"


def error_frame(err: AntidistillError) -> bytes:
    """An error after the stream has started: OpenAI clients raise on a chunk with an ``error`` key."""
    return b"data: " + orjson.dumps(err.envelope()) + b"\n\n"
