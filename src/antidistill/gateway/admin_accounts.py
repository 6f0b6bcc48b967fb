"""Operators' decisions on an account (admin credential only); the CLI twin is ``antidistill accounts``.

- ``GET /v1/admin/accounts/{account}``: the account (by id or name), its risk state and reasons, its
  active decision, its decision history (newest first) and what the policy does to it now.
- ``POST /v1/admin/accounts/{account}/decision`` with
  ``{"action": "allow"|"block"|"throttle"|"strip_reasoning"|"reverify"|"reset", "reason": str,
  "params": {...}, "by": str}``:
  records the decision by actor ``operator:<by>`` (``by`` defaults to ``admin``); ``throttle`` takes
  ``{"rpm", "tpm", "period_s"}`` params (default: the tier's throttle). 201 with the decision.
- ``DELETE /v1/admin/accounts/{account}/decision?by=NAME``: reverses the active decision (404 if none).

A decision applies to the account's very next request on this replica (its cached entry is
dropped), and within ``policy.cache_ttl_s`` on the others; a block applies on every replica at once
(the account's status is read on every request). See ``antidistill.policy.operator``.
"""

from __future__ import annotations

from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from antidistill.errors import InvalidRequestError
from antidistill.gateway.admin_risk import Handler, decision_json, state_json
from antidistill.gateway.http import JSONResponse, read_json
from antidistill.gateway.runtime import Runtime
from antidistill.policy import Policy
from antidistill.policy import operator as op
from antidistill.store.base import Account

DEFAULT_OPERATOR = "admin"


def account_json(a: Account) -> dict[str, Any]:
    """An account without its metadata (it may hold payment fingerprints and the like)."""
    return {"id": a.id, "name": a.name, "tier": a.tier, "status": a.status, "created_at": a.created_at}


def view_json(v: op.AccountView, policy_enabled: bool = True) -> dict[str, Any]:
    return {
        "account": account_json(v.account),
        "state": None if v.state is None else state_json(v.state),
        "reasons": [] if v.state is None else list(v.state.reasons),
        "active_decision": None if v.active is None else decision_json(v.active),
        "decisions": [decision_json(d) for d in v.history],
        "policy": v.policy.to_json() if policy_enabled else None,
    }


def _policy(rt: Runtime) -> Policy:
    if rt.enforcer is not None:
        return rt.enforcer.policy
    return Policy.load(rt.settings.policy.file)


async def show_account(rt: Runtime, request: Request) -> Response:
    ref = request.path_params["account"]
    policy = _policy(rt)
    v = await anyio.to_thread.run_sync(lambda: op.view(rt.store, policy, ref))
    return JSONResponse(view_json(v, rt.settings.policy.enabled))


async def post_decision(rt: Runtime, request: Request) -> Response:
    ref = request.path_params["account"]
    body = await read_json(request, rt.settings.limits.max_body_bytes)
    if not isinstance(body, dict) or not isinstance(body.get("action"), str):
        raise InvalidRequestError(
            "send {'action': 'allow'|'block'|'throttle'|'strip_reasoning'|'reverify'|'reset', "
            "'reason': str, 'params': {}}",
            param="action",
        )
    unknown = sorted(set(body) - {"action", "reason", "params", "by"})
    if unknown:
        raise InvalidRequestError(f"unknown field {unknown[0]!r:.80}", param=str(unknown[0])[:80])
    reason, by = body.get("reason", ""), body.get("by", DEFAULT_OPERATOR)
    if not isinstance(by, str):
        raise InvalidRequestError("by must be a string (the operator's name)", param="by")
    account, decision = await anyio.to_thread.run_sync(
        lambda: op.decide(rt.store, ref, body["action"], by, reason, body.get("params"))
    )
    await rt.operator_changed(account.id)
    return JSONResponse({"account": account_json(account), "decision": decision_json(decision)}, 201)


async def delete_decision(rt: Runtime, request: Request) -> Response:
    ref = request.path_params["account"]
    by = request.query_params.get("by", DEFAULT_OPERATOR)
    account, reversed_ = await anyio.to_thread.run_sync(lambda: op.reverse(rt.store, ref, by))
    await rt.operator_changed(account.id)
    return JSONResponse({"account": account_json(account), "reversed": decision_json(reversed_)})


ACCOUNT_HANDLERS: list[tuple[str, str, Handler]] = [
    ("/v1/admin/accounts/{account}", "GET", show_account),
    ("/v1/admin/accounts/{account}/decision", "POST", post_decision),
    ("/v1/admin/accounts/{account}/decision", "DELETE", delete_decision),
]
"""(path, method, handler); ``admin.py`` wraps each handler with ``admin_endpoint``."""
