"""Validation of OpenAI request bodies into backend GenerationRequests.

Unknown fields are accepted and kept (the official SDK and other clients send extras; an upstream
backend may understand them). Every problem becomes an InvalidRequestError whose ``param`` names the
offending field the way OpenAI does (``messages[0].content``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from antidistill.backends.base import ChatMessage, GenerationRequest, SamplingParams
from antidistill.errors import InvalidRequestError
from antidistill.settings import LimitSettings


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", strict=False)


class ContentPart(_Lenient):
    type: str
    text: str | None = None


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts: list[str] = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise InvalidRequestError(
                    f"content part of type {part.type!r} is not supported by this model; send text parts",
                    param="messages",
                    code="unsupported_content",
                )
            parts.append(part.text)
        return "".join(parts)


class StreamOptions(_Lenient):
    include_usage: bool = False


class _Sampling(_Lenient):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logprobs: bool | int | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return v

    def stop_tuple(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        items = [self.stop] if isinstance(self.stop, str) else self.stop
        return tuple(s for s in items if s)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None


def _param_name(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[ContentPart]", "list[str]", "int", "bool", "float"):
            continue  # union branch labels pydantic adds
        else:
            out += ("." if out else "") + str(part)
    return out


def _parse(model: type[_Sampling], body: Any) -> Any:
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object", code="invalid_body")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        param = _param_name(tuple(err["loc"]))
        if err["type"] == "missing":
            msg = f"missing required parameter: {param!r}"
            code = "missing_required_parameter"
        else:
            msg = f"invalid value for {param!r}: {err['msg']}"
            code = "invalid_value"
        raise InvalidRequestError(msg, param=param or None, code=code) from None


def _params(req: _Sampling, max_tokens: int | None, limits: LimitSettings) -> SamplingParams:
    if max_tokens is not None and max_tokens > limits.max_tokens_cap:
        raise InvalidRequestError(
            f"max_tokens is {max_tokens}, above this deployment's limit of {limits.max_tokens_cap}",
            param="max_tokens",
            code="invalid_value",
        )
    if req.n > limits.max_n:
        raise InvalidRequestError(
            f"n is {req.n}, above this deployment's limit of {limits.max_n}", param="n", code="invalid_value"
        )
    if req.logprobs or req.top_logprobs:
        raise InvalidRequestError(
            "logprobs are not available from this deployment", param="logprobs", code="unsupported_parameter"
        )
    return SamplingParams(
        max_tokens=max_tokens or limits.default_max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        n=req.n,
        stop=req.stop_tuple(),
        seed=req.seed,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
    )


def parse_chat(body: Any, request_id: str, limits: LimitSettings) -> tuple[ChatRequest, GenerationRequest]:
    req: ChatRequest = _parse(ChatRequest, body)
    if len(req.messages) > limits.max_messages:
        raise InvalidRequestError(
            f"{len(req.messages)} messages is above this deployment's limit of {limits.max_messages}",
            param="messages",
            code="invalid_value",
        )
    messages = tuple(ChatMessage(role=m.role, content=m.text()) for m in req.messages)
    params = _params(req, req.max_completion_tokens or req.max_tokens, limits)
    gen = GenerationRequest(
        request_id=request_id, model=req.model, kind="chat", params=params, messages=messages, extra=body
    )
    return req, gen


def parse_completion(
    body: Any, request_id: str, limits: LimitSettings
) -> tuple[CompletionRequest, GenerationRequest]:
    req: CompletionRequest = _parse(CompletionRequest, body)
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise InvalidRequestError(
                "send one prompt per request (batched prompts are not supported)", param="prompt"
            )
        prompt = prompt[0]
    if req.echo or req.suffix:
        raise InvalidRequestError("echo and suffix are not supported", param="echo" if req.echo else "suffix")
    gen = GenerationRequest(
        request_id=request_id,
        model=req.model,
        kind="completion",
        params=_params(req, req.max_tokens, limits),
        prompt=prompt,
        extra=body,
    )
    return req, gen


def request_record(gen: GenerationRequest) -> dict[str, Any]:
    """What the event log keeps of the request's content."""
    if gen.kind == "chat":
        return {"messages": [{"role": m.role, "content": m.content} for m in gen.messages]}
    return {"prompt": gen.prompt}


__all__ = ["ChatRequest", "CompletionRequest", "parse_chat", "parse_completion", "request_record"]
