"""The admin API (``/admin/*``, ``/v1/admin/risk/*``, ``/v1/admin/accounts/*``): operators'
endpoints, behind their own bearer credential.

Disabled (403 with a clear message) when ``server.admin_token`` is unset. The token is compared in
constant time. Admin routes never return key hashes or watermark secrets.
"""

from __future__ import annotations

import hmac
from dataclasses import asdict
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from antidistill.errors import (
    AntidistillError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from antidistill.gateway.admin_accounts import ACCOUNT_HANDLERS
from antidistill.gateway.admin_risk import RISK_HANDLERS
from antidistill.gateway.admin_watermark import WATERMARK_ROUTES
from antidistill.gateway.http import JSONResponse, bearer_token, error_response, read_json
from antidistill.gateway.runtime import Runtime
from antidistill.store.base import TIERS


def require_admin(request: Request) -> Runtime:
    rt: Runtime = request.app.state.rt
    configured = rt.settings.server.admin_token
    if configured is None:
        raise PermissionDeniedError(
            "the admin API is disabled; set server.admin_token (ANTIDISTILL_SERVER__ADMIN_TOKEN)",
            code="admin_disabled",
        )
    token = bearer_token(request)
    if token is None or not hmac.compare_digest(token.encode(), configured.get_secret_value().encode()):
        raise AuthenticationError("missing or wrong admin credential", code="invalid_admin_token")
    return rt


def admin_endpoint(fn: Any) -> Any:
    """Wrap an admin handler: credential check first, errors as OpenAI envelopes."""

    async def handler(request: Request) -> Response:
        try:
            rt = require_admin(request)
            return await fn(rt, request)
        except AntidistillError as err:
            return error_response(err)

    handler.__name__ = fn.__name__
    return handler


@admin_endpoint
async def list_accounts(rt: Runtime, request: Request) -> Response:
    try:
        limit = min(int(request.query_params.get("limit", "100")), 1000)
        offset = int(request.query_params.get("offset", "0"))
    except ValueError:
        raise InvalidRequestError("limit and offset must be integers", param="limit") from None
    accounts = await anyio.to_thread.run_sync(rt.store.list_accounts, limit, offset)
    return JSONResponse({"object": "list", "data": [asdict(a) for a in accounts]})


@admin_endpoint
async def create_account(rt: Runtime, request: Request) -> Response:
    body = await read_json(request, rt.settings.limits.max_body_bytes)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
        raise InvalidRequestError("send {'name': str, 'tier': str, 'metadata': {}}", param="name")
    tier = body.get("tier", "standard")
    if tier not in TIERS:
        raise InvalidRequestError(f"tier must be one of {', '.join(TIERS)}", param="tier")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidRequestError("metadata must be an object", param="metadata")

    def work() -> dict[str, Any]:
        account = rt.store.create_account(body["name"], tier, metadata)
        token, key = rt.store.create_api_key(account.id, label=str(body.get("label", "")))
        return {"account": asdict(account), "key_id": key.id, "api_key": token}

    return JSONResponse(await anyio.to_thread.run_sync(work), status_code=201)


@admin_endpoint
async def revoke_key(rt: Runtime, request: Request) -> Response:
    key_id = request.path_params["key_id"]
    if not await anyio.to_thread.run_sync(rt.store.revoke_api_key, key_id):
        raise NotFoundError(f"no active key with id {key_id!r}")
    await rt.operator_changed()
    return JSONResponse({"id": key_id, "revoked": True})


ADMIN_ROUTES = [
    Route("/admin/accounts", list_accounts, methods=["GET"]),
    Route("/admin/accounts", create_account, methods=["POST"]),
    Route("/admin/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
    *WATERMARK_ROUTES,
    *(Route(path, admin_endpoint(fn), methods=["GET"]) for path, fn in RISK_HANDLERS),
    *(Route(path, admin_endpoint(fn), methods=[method]) for path, method, fn in ACCOUNT_HANDLERS),
]
