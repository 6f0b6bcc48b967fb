"""The public OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from antidistill.backends.base import Chunk, Completion, GenerationRequest
from antidistill.errors import (
    AccountBlockedError,
    AntidistillError,
    AuthenticationError,
    BackendError,
    BackendTimeoutError,
    ModelNotFoundError,
)
from antidistill.gateway.canaries import canary_completion, canary_for, canary_stream  # issue 6: canaries
from antidistill.gateway.enforcement import Admission, Enforcer
from antidistill.gateway.http import JSONResponse, bearer_token, client_ip, error_response, read_json
from antidistill.gateway.recorder import ExchangeRecord
from antidistill.gateway.render import DONE_FRAME, ChunkRenderer, completion_body, error_frame
from antidistill.gateway.runtime import Runtime
from antidistill.gateway.schemas import parse_chat, parse_completion
from antidistill.hardening import ReasoningGuard
from antidistill.policy.params import Changes
from antidistill.store.base import Account, ApiKey
from antidistill.watermark.canaries import CanaryChoice

log = logging.getLogger("antidistill.gateway")
T = TypeVar("T")

_PARSERS = {"chat": parse_chat, "completion": parse_completion}
_ID_PREFIX = {"chat": "chatcmpl-", "completion": "cmpl-"}


def _rt(request: Request) -> Runtime:
    rt: Runtime = request.app.state.rt
    return rt


async def authenticate(
    rt: Runtime, request: Request, *, allow_blocked: bool = False
) -> tuple[ApiKey, Account]:
    """The key and account of the request's bearer token; 401 if none, 403 if the account is blocked
    (unless ``allow_blocked``: the caller then refuses it after noting who it was)."""
    token = bearer_token(request)
    if token is None:
        raise AuthenticationError(
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
            code="missing_api_key",
        )
    if rt.auth is not None:  # networked store + Redis: cached, dropped on any operator change
        found = await rt.auth.authenticate(token)
    elif getattr(rt.store, "inline_reads", False):  # embedded SQLite: a ~50 µs indexed read, no thread hop
        found = rt.store.authenticate(token)
    else:
        found = await anyio.to_thread.run_sync(rt.store.authenticate, token)
    if found is None:
        raise AuthenticationError("Incorrect API key provided, or the key was revoked.")
    key, account = found
    if account.status == "blocked" and not allow_blocked:
        raise AccountBlockedError()
    return key, account


async def _until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` but cancel it if the client goes away first (stops generation for it)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise asyncio.CancelledError("client disconnected")
    return task.result()


async def _generate(request: Request, kind: str) -> Response:
    rt = _rt(request)
    t0 = time.perf_counter()
    request_id = _ID_PREFIX[kind] + uuid.uuid4().hex
    rec = ExchangeRecord(
        rt=rt,
        request_id=request_id,
        endpoint=kind,
        t0=t0,
        ts=rt.clock.now(),
        client_ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )
    rt.metrics.inflight.inc()
    admission: Admission | None = None  # a throttled request's reservation, until settled
    try:
        key, account = await authenticate(rt, request, allow_blocked=True)
        rec.account_id, rec.key_id = account.id, key.id  # refusals are logged under the account too
        if account.status == "blocked":  # an operator's block: read on every request, by every replica
            raise AccountBlockedError()
        enforcer = rt.enforcer
        decision = None if enforcer is None else await enforcer.admit(account)  # block, reverify
        body = await read_json(request, rt.settings.limits.max_body_bytes)
        changes: Changes = {}
        if enforcer is not None and decision is not None and decision.caps is not None:
            body, changes = enforcer.cap_params(decision, body)
        parsed, gen = _PARSERS[kind](body, request_id, rt.settings.limits)
        rec.set_request(gen)
        if decision is not None:
            policy_field = Enforcer.event_field(decision, changes)
            if policy_field is not None:
                rec.params["policy"] = policy_field
        if gen.model not in rt.backend.model_ids():
            raise ModelNotFoundError(
                f"The model '{gen.model}' does not exist or you do not have access to it.", param="model"
            )
        if rt.watermarker is not None:
            kgw_canary = decision is not None and decision.watermark_scheme is not None
            gen = replace(gen, watermark=await rt.watermarker.assign(account, gen, kgw_canary))
            rec.set_watermark(gen.watermark)
        if enforcer is not None and decision is not None and decision.throttle is not None:
            admission = await enforcer.reserve(account, decision, gen)  # 429 before any byte
        limit_headers = admission.headers() if admission is not None else {}
        # strip_reasoning: decided here, before the backend is called and before any byte is sent
        guard = None if decision is None or decision.reasoning is None else ReasoningGuard(decision.reasoning)
        canary = canary_for(rt, decision, account.id, gen)  # watermark_canary: a canary sentence or None
        created = int(rt.clock.now())
        rec.stream = parsed.stream
        if parsed.stream:
            include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
            chunks = rt.backend.stream(gen)
            try:  # the first chunk is awaited before any byte is sent, so early failures get a status
                first = await _until_disconnect(request, _first_chunk(rt, chunks))
            except BaseException:
                await chunks.aclose()
                raise
            response = _stream_response(
                gen, rec, chunks, first, created, include_usage, admission, limit_headers, guard, canary
            )
            admission = None  # the stream settles it
            return response
        result: Completion = await _until_disconnect(request, _complete(rt, gen))
        if guard is not None:
            result = guard.complete(result)
            rec.params["reasoning"] = guard.stats.as_dict()
        if canary is not None:
            result = canary_completion(result, canary, rec)
        rec.finish(200, result=result)
        if admission is not None:
            await admission.settle(result.usage.total_tokens)
            admission = None
        headers = {"x-request-id": request_id, **limit_headers}
        return JSONResponse(completion_body(gen, result, created), headers=headers)
    except AntidistillError as err:
        if admission is not None:  # the backend failed: nothing was served, give the budget back
            await admission.cancel()
        rec.finish(err.status, error_code=err.code)
        if err.status >= 500:
            log.warning("request %s failed: %s", request_id, err.message)
        return error_response(err, request_id)
    except asyncio.CancelledError:
        rec.finish(499, error_code="client_disconnected")
        raise
    except Exception:
        log.exception("request %s crashed", request_id)
        if admission is not None:
            await admission.cancel()
        rec.finish(500, error_code="internal_error")
        return error_response(AntidistillError("The server had an error while processing your request."))
    finally:
        rt.metrics.inflight.dec()


async def _complete(rt: Runtime, gen: GenerationRequest) -> Completion:
    try:
        async with asyncio.timeout(rt.settings.limits.request_timeout_s):
            return await rt.backend.complete(gen)
    except TimeoutError:
        raise BackendTimeoutError("the model took too long to answer") from None


async def _first_chunk(rt: Runtime, chunks: AsyncGenerator[Chunk, None]) -> Chunk | None:
    try:
        async with asyncio.timeout(rt.settings.limits.request_timeout_s):
            return await anext(chunks)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise BackendTimeoutError("the model took too long to start answering") from None


def _stream_response(
    gen: GenerationRequest,
    rec: ExchangeRecord,
    chunks: AsyncGenerator[Chunk, None],
    first: Chunk | None,
    created: int,
    include_usage: bool,
    admission: Admission | None = None,
    limit_headers: dict[str, str] | None = None,
    guard: ReasoningGuard | None = None,
    canary: CanaryChoice | None = None,
) -> StreamingResponse:
    renderer = ChunkRenderer(gen, created, include_usage)

    async def rest() -> AsyncGenerator[Chunk, None]:
        if first is not None:
            yield first
            async for chunk in chunks:
                yield chunk

    async def body() -> AsyncIterator[bytes]:
        status, code = 200, None
        try:
            source = rest() if guard is None else guard.stream(rest())
            if canary is not None:
                source = canary_stream(source, canary, rec)
            async with contextlib.aclosing(source) as stream:
                async for chunk in stream:
                    rec.add_chunk(chunk)
                    for frame in renderer.frames(chunk):
                        yield frame
            yield DONE_FRAME
        except AntidistillError as err:
            status, code = err.status, err.code
            yield error_frame(err)
        except (asyncio.CancelledError, GeneratorExit):
            status, code = 499, "client_disconnected"
            raise
        except Exception:
            log.exception("stream %s crashed", gen.request_id)
            status, code = 500, "internal_error"
            yield error_frame(BackendError("The server had an error while streaming the response."))
        finally:
            await chunks.aclose()
            if guard is not None:
                rec.params["reasoning"] = guard.stats.as_dict()
            rec.finish(status, error_code=code)
            # settled with the real usage when complete; otherwise the reserved tokens stay charged
            if admission is not None and status == 200 and rec.usage_total is not None:
                await admission.settle(rec.usage_total)

    headers = {"x-request-id": gen.request_id, "cache-control": "no-cache", "x-accel-buffering": "no"}
    headers.update(limit_headers or {})
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def chat_completions(request: Request) -> Response:
    return await _generate(request, "chat")


async def completions(request: Request) -> Response:
    return await _generate(request, "completion")


async def list_models(request: Request) -> Response:
    rt = _rt(request)
    try:
        await authenticate(rt, request)
    except AntidistillError as err:
        return error_response(err)
    data: list[dict[str, Any]] = [
        {"id": m, "object": "model", "created": 0, "owned_by": "antidistill"} for m in rt.backend.model_ids()
    ]
    return JSONResponse({"object": "list", "data": data})


Handler = Callable[[Request], Awaitable[Response]]
ROUTES = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
]
