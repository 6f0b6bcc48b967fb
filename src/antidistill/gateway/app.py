"""The gateway app factory. Runtime objects are built in the lifespan and kept on ``app.state.rt``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from antidistill.backends.base import Backend
from antidistill.clock import Clock, SystemClock
from antidistill.dashboard import dashboard_routes
from antidistill.errors import AntidistillError, InvalidRequestError, NotFoundError
from antidistill.gateway.admin import ADMIN_ROUTES
from antidistill.gateway.http import JSONResponse, error_response
from antidistill.gateway.metrics import GatewayMetrics
from antidistill.gateway.openai_routes import ROUTES as OPENAI_ROUTES
from antidistill.gateway.overload import OverloadGuard, OverloadMiddleware
from antidistill.gateway.runtime import Runtime, Watermarker
from antidistill.settings import Settings
from antidistill.store.base import Store

if TYPE_CHECKING:
    from antidistill.gateway.auth_cache import AuthCache
    from antidistill.gateway.enforcement import Enforcer

log = logging.getLogger("antidistill.gateway")


async def healthz(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    try:
        await anyio.to_thread.run_sync(rt.store.count_events, "__healthz__")
        store_ok = True
    except Exception:
        store_ok = False
    body: dict[str, Any] = {"status": "ok" if store_ok else "degraded", "backend": rt.backend.name}
    body["store"] = "ok" if store_ok else "unreachable"
    return JSONResponse(body, status_code=200 if store_ok else 503)


async def metrics(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    return Response(rt.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err: AntidistillError = NotFoundError(f"Unknown request URL: {request.method} {request.url.path}.")
    else:
        err = InvalidRequestError(
            str(exc.detail), code="method_not_allowed" if exc.status_code == 405 else None
        )
        err.status = exc.status_code
    return error_response(err)


async def _antidistill_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AntidistillError)
    return error_response(exc)


async def _unhandled(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(AntidistillError("The server had an error while processing your request."))


async def _run_risk_engine(settings: Settings, store: Store, stop: asyncio.Event, app: Starlette) -> None:
    """Single-node risk engine: load (or build once) the calibration, then score new events every
    ``risk.interval_s``. All of it runs in worker threads; requests are served meanwhile."""
    from antidistill.evaluation.replay import engine_from_settings
    from antidistill.risk.worker import RiskWorker

    try:
        engine = await asyncio.to_thread(engine_from_settings, settings.risk)
    except Exception:
        log.exception("risk engine disabled: could not load its calibration")
        return
    worker = RiskWorker(store, engine, batch_size=settings.risk.batch_size)
    app.state.risk_worker = worker
    log.info(
        "risk engine running (embedder=%s, target FPR %g)", settings.risk.embedder, settings.risk.target_fpr
    )
    await worker.run_async(settings.risk.interval_s, stop)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    backend: Backend | None = None,
    clock: Clock | None = None,
    watermarker: Watermarker | None = None,
) -> Starlette:
    """Build the gateway. Pass ``store``/``backend`` to inject them (tests); otherwise they are built
    from settings in the lifespan. Injected objects are started and closed by the lifespan too.
    The policy file is loaded here: a bad one fails at once with a ConfigError."""
    from antidistill.gateway.enforcement import Enforcer
    from antidistill.policy import Policy

    policy = Policy.load(settings.policy.file) if settings.policy.enabled else None
    srv = settings.server
    guard = OverloadGuard(srv.overload_lag_ms / 1000.0, srv.overload_min_inflight)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from antidistill.backends.registry import build_backend
        from antidistill.gateway.canaries import build_canary_server
        from antidistill.gateway.watermarking import build_watermarker
        from antidistill.store import EventWriter, open_store

        st = store if store is not None else open_store(settings.database_url)
        await anyio.to_thread.run_sync(st.migrate)
        writer = EventWriter(st, settings.events)
        writer.start()
        be = backend if backend is not None else build_backend(settings.backend)
        m = GatewayMetrics()
        m.watch_writer(writer)
        m.watch_overload(guard)
        risk_stop = asyncio.Event()
        risk_task: asyncio.Task[None] | None = None
        clk = clock or SystemClock()
        enforcer = None if policy is None else Enforcer.from_settings(settings, st, clk, policy)
        if enforcer is not None:
            m.watch_enforcer(enforcer)
        auth = _auth_cache(settings, st, clk, enforcer)
        if auth is not None:
            m.watch_auth(auth)
        try:
            await be.start()
            wm = watermarker if watermarker is not None else build_watermarker(settings, be, st)
            canaries = await anyio.to_thread.run_sync(build_canary_server, settings)
            app.state.rt = Runtime(
                settings=settings,
                store=st,
                events=writer,
                backend=be,
                metrics=m,
                clock=clk,
                watermarker=wm,
                enforcer=enforcer,
                auth=auth,
                canaries=canaries,
            )
            log.info("gateway ready: backend=%s models=%s store=%s", be.name, be.model_ids(), _safe_url(st))
            if settings.risk.enabled:
                risk_task = asyncio.create_task(_run_risk_engine(settings, st, risk_stop, app))
            guard.start()
            yield
        finally:
            await guard.stop()
            risk_stop.set()
            if risk_task is not None:
                await asyncio.gather(risk_task, return_exceptions=True)
            await be.aclose()
            if enforcer is not None:
                await enforcer.aclose()
            if auth is not None:
                await auth.aclose()
            await anyio.to_thread.run_sync(writer.close)
            st.close()
            log.info("gateway stopped; events flushed")

    return Starlette(
        routes=[
            *OPENAI_ROUTES,
            *ADMIN_ROUTES,
            *dashboard_routes(settings),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
        middleware=[Middleware(OverloadMiddleware, guard=guard)],
        exception_handlers={
            HTTPException: _http_exception,
            AntidistillError: _antidistill_error,
            Exception: _unhandled,
        },
    )


def _auth_cache(
    settings: Settings, store: Store, clock: Clock, enforcer: Enforcer | None
) -> AuthCache | None:
    """The auth cache when it is both useful (a networked store) and safe (Redis carries operators'
    changes to every replica); otherwise None and authentication reads the store each time."""
    from antidistill.gateway.auth_cache import AuthCache
    from antidistill.store.epoch import RedisEpoch

    ttl = settings.server.auth_cache_ttl_s
    if ttl <= 0 or settings.redis_url is None or getattr(store, "inline_reads", False):
        return None
    shared = settings.limits.shared
    epoch = RedisEpoch.from_url(settings.redis_url, shared.key_prefix, timeout_s=shared.redis_timeout_s)
    return AuthCache(
        store,
        epoch,
        clock,
        ttl_s=ttl,
        max_keys=settings.server.auth_cache_max_keys,
        on_change=None if enforcer is None else enforcer.forget_all,
    )


def _safe_url(store: Store) -> str:
    url = getattr(store, "url", "?")
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return str(url)
