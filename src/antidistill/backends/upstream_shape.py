"""The OpenAI wire format as ``UpstreamBackend`` sees it: the request body it sends, and the
completions, stream chunks and error bodies it reads back. Lenient about what vLLM, TGI, Ollama and
hosted APIs differ on (finish reasons, ``text`` vs ``content``, reasoning fields, missing usage);
strict about the shape, raising ``Invalid`` for anything else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

from antidistill.backends.base import Choice, Chunk, Completion, FinishReason, GenerationRequest, Usage

INVALID_RESPONSE = "upstream returned an invalid response"
_FINISH: dict[str, FinishReason] = {
    "stop": "stop", "eos": "stop", "eos_token": "stop", "stop_sequence": "stop", "end_turn": "stop",
    "tool_calls": "stop", "function_call": "stop", "length": "length", "max_tokens": "length",
    "max_length": "length", "model_length": "length", "content_filter": "content_filter",
}  # fmt: skip
# body fields set from the validated request; every other field of the client's body passes through
_OWNED = frozenset(
    ("model", "messages", "prompt", "stream", "stream_options", "n", "max_tokens", "max_completion_tokens",
     "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")
)  # fmt: skip


class Invalid(ValueError):
    """The upstream's body does not have the OpenAI shape."""


class UpstreamFailure(Exception):
    """The upstream sent an error object in the middle of a stream."""


def _finish(value: Any) -> FinishReason | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid("finish_reason")
    return _FINISH.get(value, "stop")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Invalid("text")
    return value


def _reasoning(obj: Mapping[str, Any]) -> str | None:
    return _text(obj.get("reasoning_content") or obj.get("reasoning")) or None


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    p, c = value.get("prompt_tokens"), value.get("completion_tokens")
    if type(p) is int and type(c) is int:
        return Usage(p, c)
    return None


def _approx_tokens(chars: int) -> int:
    # about 4 characters per token for English text; only used when the upstream reports no usage
    return math.ceil(chars / 4)


def _prompt_estimate(req: GenerationRequest) -> int:
    return _approx_tokens(sum(len(m.content) for m in req.messages) + len(req.prompt))


def error_fields(content: bytes) -> tuple[str | None, str | None, str | None]:
    """(message, param, code) from an OpenAI / vLLM / TGI / Ollama error body, if it has one."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None, None, None
    if not isinstance(data, dict):
        return None, None, None
    err = data.get("error", data)
    if isinstance(err, str):
        return err, None, None
    if not isinstance(err, dict) or not isinstance(err.get("message"), str):
        return None, None, None
    param, code = err.get("param"), err.get("code")
    return err["message"], param if isinstance(param, str) else None, code if isinstance(code, str) else None


def request_body(req: GenerationRequest, model: str, stream: bool) -> bytes:
    """The JSON body sent upstream: the client's extra fields, overridden by the validated request."""
    p = req.params
    body = {k: v for k, v in req.extra.items() if k not in _OWNED}
    body.update(model=model, stream=stream, n=p.n, max_tokens=p.max_tokens)
    body.update(temperature=p.temperature, top_p=p.top_p)
    if req.kind == "chat":
        sent = req.extra.get("messages")
        if not isinstance(sent, list) or len(sent) != len(req.messages):
            sent = [{}] * len(req.messages)
        body["messages"] = [  # keep fields such as name / tool_call_id the client sent
            {**(orig if isinstance(orig, dict) else {}), "role": m.role, "content": m.content}
            for orig, m in zip(sent, req.messages, strict=True)
        ]
    else:
        body["prompt"] = req.prompt
    if p.stop:
        body["stop"] = list(p.stop)
    if p.seed is not None:
        body["seed"] = p.seed
    if p.presence_penalty:
        body["presence_penalty"] = p.presence_penalty
    if p.frequency_penalty:
        body["frequency_penalty"] = p.frequency_penalty
    if stream:
        body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def completion(data: Any, req: GenerationRequest) -> Completion:
    """A non-streamed answer (already JSON-decoded) as a Completion."""
    raw = data["choices"] if isinstance(data, dict) else None
    if not isinstance(raw, list) or not raw:
        raise Invalid("choices")
    choices: list[Choice] = []
    chars = 0
    for pos, c in enumerate(raw):
        msg = c.get("message")
        src = msg if isinstance(msg, dict) else c
        text = _text(src.get("content", src.get("text")))
        index = c.get("index", pos)
        if type(index) is not int:
            raise Invalid("index")
        chars += len(text)
        finish = _finish(c.get("finish_reason")) or "stop"
        choices.append(Choice(index=index, text=text, finish_reason=finish, reasoning=_reasoning(src)))
    usage = _usage(data.get("usage"))
    if usage is None:  # approximate (~4 characters per token) when the upstream reports none
        usage = Usage(_prompt_estimate(req), _approx_tokens(chars))
    return Completion(choices=tuple(sorted(choices, key=lambda ch: ch.index)), usage=usage)


class StreamTally:
    """Turns the stream's JSON payloads into Chunks and keeps what the final chunk needs."""

    def __init__(self, req: GenerationRequest) -> None:
        self._req = req
        self.usage: Usage | None = None
        self.finished: set[int] = set()
        self._chars = 0
        self._deltas = 0

    def chunks(self, payload: bytes) -> list[Chunk]:
        data = orjson.loads(payload)
        if not isinstance(data, dict):
            raise Invalid("chunk")
        if data.get("error") is not None:
            raise UpstreamFailure(error_fields(payload)[0] or "unknown error")
        self.usage = _usage(data.get("usage")) or self.usage
        choices = data.get("choices")
        if not isinstance(choices, list) or (not choices and "usage" not in data):
            raise Invalid("choices")
        out: list[Chunk] = []
        for c in choices:
            delta = c.get("delta")
            src = delta if isinstance(delta, dict) else c
            text, reasoning = _text(src.get("content", src.get("text"))), _reasoning(src)
            finish = _finish(c.get("finish_reason"))
            index = c.get("index", 0)
            if type(index) is not int:
                raise Invalid("index")
            if finish is not None:
                self.finished.add(index)
            if text or reasoning or finish:
                self._chars += len(text)
                self._deltas += bool(text)
                out.append(Chunk(index=index, text=text, finish_reason=finish, reasoning=reasoning))
        return out

    def final(self) -> Chunk:
        usage = self.usage
        if usage is None:  # approximate: most servers send one token per delta, ~4 chars per token
            usage = Usage(_prompt_estimate(self._req), max(self._deltas, _approx_tokens(self._chars)))
        return Chunk(usage=usage)


# what a malformed body raises while being decoded into the types above
SHAPE_ERRORS = (orjson.JSONDecodeError, Invalid, KeyError, TypeError, AttributeError)
