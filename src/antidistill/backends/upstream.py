"""A backend that forwards to any OpenAI-compatible server (vLLM, TGI, Ollama, a hosted API).

One shared ``httpx.AsyncClient`` (HTTP/1.1, pooled, timeouts from settings) serves every request.
Streams are passed through delta by delta as the upstream sends them; closing the iterator closes the
upstream response, which makes servers such as vLLM abort the generation. Every failure becomes a
``BackendError`` subclass (or ``InvalidRequestError`` for a request the upstream rejected); messages
never carry the upstream API key, URL credentials or host.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import orjson

from antidistill.backends.base import Choice, Chunk, Completion, FinishReason, GenerationRequest, Usage
from antidistill.backends.sse import DONE, SSEError, SSEParser
from antidistill.errors import (
    AntidistillError,
    BackendError,
    BackendOverloadedError,
    BackendTimeoutError,
    ConfigError,
    InvalidRequestError,
)
from antidistill.settings import UpstreamBackendSettings

log = logging.getLogger("antidistill.backends.upstream")
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
_TOKEN_LIKE = re.compile(r"(?i)\b(sk-|bearer\s+)[\w.*~+/=-]{4,}")


class _Invalid(ValueError):
    """The upstream's body does not have the OpenAI shape."""


def _finish(value: Any) -> FinishReason | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid("finish_reason")
    return _FINISH.get(value, "stop")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Invalid("text")
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


def _error_fields(content: bytes) -> tuple[str | None, str | None, str | None]:
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


class _UpstreamFailure(Exception):
    """The upstream sent an error object in the middle of a stream."""


async def _drain(body: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (normally just the end of the body) so that the connection goes
    back to the pool; give up after a second, the caller then closes the connection."""
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(1.0):
            async for _ in body:
                pass


class _StreamTally:
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
            raise _Invalid("chunk")
        if data.get("error") is not None:
            raise _UpstreamFailure(_error_fields(payload)[0] or "unknown error")
        self.usage = _usage(data.get("usage")) or self.usage
        choices = data.get("choices")
        if not isinstance(choices, list) or (not choices and "usage" not in data):
            raise _Invalid("choices")
        out: list[Chunk] = []
        for c in choices:
            delta = c.get("delta")
            src = delta if isinstance(delta, dict) else c
            text, reasoning = _text(src.get("content", src.get("text"))), _reasoning(src)
            finish = _finish(c.get("finish_reason"))
            index = c.get("index", 0)
            if type(index) is not int:
                raise _Invalid("index")
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


class UpstreamBackend:
    name = "openai"

    def __init__(
        self,
        settings: UpstreamBackendSettings,
        served_model: str,
        *,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        if not settings.url:
            raise ConfigError("backend 'openai' needs backend.upstream.url")
        url = httpx.URL(settings.url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError("backend.upstream.url must be an http:// or https:// URL")
        self._served_model = served_model
        self._model = settings.upstream_model or served_model
        self._read_timeout = settings.read_timeout_s
        self._connect_timeout = settings.connect_timeout_s
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        basic = base64.b64encode(f"{url.username}:{url.password}".encode()).decode() if url.userinfo else ""
        self._secrets = [s for s in (key, basic, url.password) if len(s) >= 4]
        headers = {"accept": "application/json", **(extra_headers or {})}
        auth: httpx.Auth | None = None
        if key:
            headers["authorization"] = f"Bearer {key}"
        elif url.userinfo:
            auth = httpx.BasicAuth(url.username, url.password)
        self._base = base = str(url.copy_with(userinfo=b"")).rstrip("/")  # safe to log
        self._urls = {"chat": f"{base}/chat/completions", "completion": f"{base}/completions"}
        self._client = httpx.AsyncClient(
            auth=auth,
            headers=headers,
            timeout=httpx.Timeout(
                connect=settings.connect_timeout_s,
                read=settings.read_timeout_s,
                write=settings.read_timeout_s,
                pool=settings.connect_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=settings.max_connections, max_keepalive_connections=settings.max_connections
            ),
            http1=True,
            http2=False,
            follow_redirects=False,
        )

    async def start(self) -> None:
        """Probe ``GET {url}/models`` once so that a wrong URL or key shows in the log at start-up.
        Only warns: the gateway still starts, as the upstream may come up later."""
        try:
            resp = await self._client.get(f"{self._base}/models", timeout=self._connect_timeout)
            problem = None if resp.status_code < 300 else f"HTTP {resp.status_code}"
        except httpx.HTTPError as e:
            problem = type(e).__name__
        if problem is not None:
            log.warning("model upstream %s does not answer GET /models (%s)", self._base, problem)

    async def aclose(self) -> None:
        await self._client.aclose()

    def model_ids(self) -> list[str]:
        return [self._served_model]

    # -- requests ---------------------------------------------------------------------------------

    def _body(self, req: GenerationRequest, stream: bool) -> bytes:
        p = req.params
        body = {k: v for k, v in req.extra.items() if k not in _OWNED}
        body.update(model=self._model, stream=stream, n=p.n, max_tokens=p.max_tokens)
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

    async def complete(self, req: GenerationRequest) -> Completion:
        content = self._body(req, stream=False)
        with self._mapped():
            resp = await self._client.post(self._urls[req.kind], content=content, headers=_JSON)
        if resp.status_code >= 300:
            raise self._status_error(resp)
        try:
            return self._completion(orjson.loads(resp.content), req)
        except (orjson.JSONDecodeError, _Invalid, KeyError, TypeError, AttributeError) as e:
            raise BackendError(INVALID_RESPONSE) from e

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        request = self._client.build_request(
            "POST", self._urls[req.kind], content=self._body(req, stream=True), headers=_SSE
        )
        with self._mapped():
            resp = await self._client.send(request, stream=True)
        try:
            if resp.status_code >= 300:
                with self._mapped():
                    await resp.aread()
                raise self._status_error(resp)
            parser, tally, done = SSEParser(), _StreamTally(req), False
            body = resp.aiter_bytes()
            with self._mapped():
                async for raw in body:
                    for payload in parser.feed(raw):
                        if payload == DONE:
                            done = True
                            break
                        for chunk in tally.chunks(payload):
                            yield chunk
                    if done:
                        break
            if not done and (parser.pending or len(tally.finished) < req.params.n):
                raise BackendError(INVALID_RESPONSE + " (stream ended early)")
            yield tally.final()  # (without [DONE] only when every choice finished: lenient)
            await _drain(body)
        except _UpstreamFailure as e:
            raise BackendError(f"upstream failed mid-stream: {self._redact(str(e))[:300]}") from None
        except (orjson.JSONDecodeError, _Invalid, SSEError, KeyError, TypeError, AttributeError) as e:
            raise BackendError(INVALID_RESPONSE) from e
        finally:
            await resp.aclose()  # unread body: the connection is closed and the upstream stops

    # -- results and errors -----------------------------------------------------------------------

    def _completion(self, data: Any, req: GenerationRequest) -> Completion:
        raw = data["choices"] if isinstance(data, dict) else None
        if not isinstance(raw, list) or not raw:
            raise _Invalid("choices")
        choices: list[Choice] = []
        chars = 0
        for pos, c in enumerate(raw):
            msg = c.get("message")
            src = msg if isinstance(msg, dict) else c
            text = _text(src.get("content", src.get("text")))
            index = c.get("index", pos)
            if type(index) is not int:
                raise _Invalid("index")
            chars += len(text)
            finish = _finish(c.get("finish_reason")) or "stop"
            choices.append(Choice(index=index, text=text, finish_reason=finish, reasoning=_reasoning(src)))
        usage = _usage(data.get("usage"))
        if usage is None:  # approximate (~4 characters per token) when the upstream reports none
            usage = Usage(_prompt_estimate(req), _approx_tokens(chars))
        return Completion(choices=tuple(sorted(choices, key=lambda ch: ch.index)), usage=usage)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _TOKEN_LIKE.sub(r"\1***", text)

    def _status_error(self, resp: httpx.Response) -> AntidistillError:
        status = resp.status_code
        if status in (429, 503):
            retry = resp.headers.get("retry-after")
            return BackendOverloadedError(
                "the model upstream is overloaded; retry later",
                headers={"retry-after": retry} if retry else None,
            )
        if status in (408, 504):
            return BackendTimeoutError("the model upstream timed out")
        if status in (401, 403):  # our credentials, not the client's fault; never echo the upstream text
            return BackendError("the model upstream refused the gateway's credentials", code="upstream_auth")
        if status == 404:
            return BackendError("the model upstream does not serve this model or endpoint")
        if 400 <= status < 500:
            msg, param, code = _error_fields(resp.content)
            if msg is None:
                return InvalidRequestError(f"the model upstream rejected the request (HTTP {status})")
            return InvalidRequestError(self._redact(msg)[:1000], param=param, code=code)
        return BackendError(f"the model upstream failed (HTTP {status})")

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[None]:
        """Translate httpx transport failures into the backend error hierarchy."""
        try:
            yield
        except httpx.PoolTimeout as e:
            raise BackendOverloadedError("too many requests in flight to the model upstream") from e
        except httpx.ConnectTimeout as e:
            raise BackendTimeoutError("the model upstream did not accept a connection in time") from e
        except httpx.TimeoutException as e:
            raise BackendTimeoutError(f"the model upstream sent nothing for {self._read_timeout:g}s") from e
        except httpx.ConnectError as e:
            reason = self._redact(str(e) or type(e).__name__)
            raise BackendError(f"upstream unreachable: {reason}", code="upstream_unavailable") from e
        except httpx.HTTPError as e:  # reset connections, protocol errors, bad encodings
            raise BackendError(INVALID_RESPONSE) from e


_JSON = {"content-type": "application/json"}
_SSE = {"content-type": "application/json", "accept": "text/event-stream"}
