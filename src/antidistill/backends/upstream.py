"""A backend that forwards to any OpenAI-compatible server (vLLM, TGI, Ollama, a hosted API).

One shared ``aiohttp.ClientSession`` (HTTP/1.1 keep-alive pool of ``max_connections``, timeouts from
settings) serves every request; it is opened by ``start()``, or by the first request. Streams are
passed through delta by delta as the upstream sends them; closing the iterator closes the upstream
connection, which makes servers such as vLLM abort the generation. Every failure becomes a
``BackendError`` subclass (or ``InvalidRequestError`` for a request the upstream rejected); messages
never carry the upstream API key, URL credentials or host.

The wire format lives in ``upstream_shape``, the error mapping and redaction in ``upstream_errors``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncGenerator, Mapping

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from antidistill.backends.base import Chunk, Completion, GenerationRequest
from antidistill.backends.sse import DONE, SSEError, SSEParser
from antidistill.backends.upstream_errors import TRANSPORT_ERRORS, Redactor, status_error, transport_error
from antidistill.backends.upstream_shape import (
    INVALID_RESPONSE,
    SHAPE_ERRORS,
    StreamTally,
    UpstreamFailure,
    completion,
    request_body,
)
from antidistill.errors import AntidistillError, BackendError, ConfigError
from antidistill.settings import UpstreamBackendSettings

__all__ = ["INVALID_RESPONSE", "KEEPALIVE_S", "UpstreamBackend"]

log = logging.getLogger("antidistill.backends.upstream")
# idle pooled connections are dropped after this; below the 5 s keep-alive of uvicorn (vLLM) and
# most servers, so the gateway does not reuse a connection the upstream is just closing
KEEPALIVE_S = 4.0
_DRAIN_S = 1.0
_JSON = CIMultiDictProxy(CIMultiDict({"content-type": "application/json"}))
_SSE = CIMultiDictProxy(CIMultiDict({"content-type": "application/json", "accept": "text/event-stream"}))


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
        try:
            url = URL(settings.url)
            ok = url.scheme in ("http", "https") and bool(url.host)
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise ConfigError("backend.upstream.url must be an http:// or https:// URL")
        self._settings = settings
        self._served_model = served_model
        self._model = settings.upstream_model or served_model
        key = settings.api_key.get_secret_value() if settings.api_key else ""
        user, password = url.user or "", url.password or ""
        userinfo = url.user is not None or url.password is not None
        basic = base64.b64encode(f"{user}:{password}".encode()).decode() if userinfo else ""
        self._redact = Redactor((key, basic, password))
        headers = {"accept": "application/json", **{k.lower(): v for k, v in (extra_headers or {}).items()}}
        if key:
            headers["authorization"] = f"Bearer {key}"
        elif userinfo:
            headers["authorization"] = f"Basic {basic}"
        self._headers = headers
        self._base = base = str(url.with_user(None)).rstrip("/")  # safe to log
        self._urls = {"chat": URL(f"{base}/chat/completions"), "completion": URL(f"{base}/completions")}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._inflight = 0  # requests between their start and the release of their connection

    def _client(self) -> aiohttp.ClientSession:
        """The shared session, opened on first use (it must be created inside the event loop)."""
        session = self._session
        if session is None:
            if self._closed:
                raise BackendError("the upstream backend is shut down", code="upstream_unavailable")
            s = self._settings
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=s.max_connections, keepalive_timeout=KEEPALIVE_S),
                headers=self._headers,
                # connect: waiting for a free pooled connection plus opening a new one
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=s.connect_timeout_s,
                    sock_connect=s.connect_timeout_s,
                    sock_read=s.read_timeout_s,
                ),
                cookie_jar=aiohttp.DummyCookieJar(),  # never carry one client's cookies to another
                trust_env=False,
            )
        return session

    async def start(self) -> None:
        """Open the pool and probe ``GET {url}/models`` once so that a wrong URL or key shows in the log
        at start-up. Only warns: the gateway still starts, as the upstream may come up later."""
        self._closed = False
        probe = aiohttp.ClientTimeout(total=self._settings.connect_timeout_s)
        try:
            async with self._client().get(f"{self._base}/models", timeout=probe) as resp:
                await resp.read()
                problem = None if resp.status < 300 else f"HTTP {resp.status}"
        except TRANSPORT_ERRORS as e:
            problem = type(e).__name__
        if problem is not None:
            log.warning("model upstream %s does not answer GET /models (%s)", self._base, problem)

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def model_ids(self) -> list[str]:
        return [self._served_model]

    # -- requests ---------------------------------------------------------------------------------

    async def complete(self, req: GenerationRequest) -> Completion:
        body = request_body(req, self._model, stream=False)
        session = self._client()
        self._inflight += 1
        try:
            async with session.post(self._urls[req.kind], data=body, headers=_JSON) as resp:
                status, content = resp.status, await resp.read()
                if status >= 300:
                    raise status_error(status, resp.headers.get("retry-after"), content, self._redact)
        except TRANSPORT_ERRORS as e:
            raise self._transport_error(e) from e
        finally:
            self._inflight -= 1
        try:
            return completion(orjson.loads(content), req)
        except SHAPE_ERRORS as e:
            raise BackendError(INVALID_RESPONSE) from e

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        body = request_body(req, self._model, stream=True)
        session = self._client()
        self._inflight += 1
        reusable = False
        resp: aiohttp.ClientResponse | None = None
        try:
            resp = await session.post(self._urls[req.kind], data=body, headers=_SSE)
            if resp.status >= 300:
                content = await resp.read()
                raise status_error(resp.status, resp.headers.get("retry-after"), content, self._redact)
            parser, tally, done = SSEParser(), StreamTally(req), False
            async for raw in resp.content.iter_any():
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
            reusable = await _drain(resp.content)
        except TRANSPORT_ERRORS as e:
            raise self._transport_error(e) from e
        except UpstreamFailure as e:
            raise BackendError(f"upstream failed mid-stream: {self._redact(str(e))[:300]}") from None
        except (*SHAPE_ERRORS, SSEError) as e:
            raise BackendError(INVALID_RESPONSE) from e
        finally:
            self._inflight -= 1
            if resp is not None:  # an unread body closes the connection, and the upstream stops
                if reusable:
                    resp.release()
                else:
                    resp.close()

    def _transport_error(self, exc: BaseException) -> AntidistillError:
        pool_full = self._inflight > self._settings.max_connections
        return transport_error(exc, self._settings.read_timeout_s, pool_full)


async def _drain(content: aiohttp.StreamReader) -> bool:
    """Read what follows ``[DONE]`` (normally just the end of the chunked body) so that the connection
    can go back to the pool; True when the body ended within a second."""
    if content.at_eof():
        return True
    try:
        async with asyncio.timeout(_DRAIN_S):
            while await content.readany():
                pass
    except TRANSPORT_ERRORS:
        return False
    return True
