"""The risk engine's admin API (admin credential only): who the engine scores as risky, and why.

- ``GET /v1/admin/risk/accounts?flagged=false&limit=50&offset=0``: account risk states, highest
  score first, with ``flagged_total`` (every flagged account, not only this page).
- ``GET /v1/admin/risk/accounts/{account_id}``: one account's risk state, its latest findings (with
  the ids an operator decision can cite), its decisions and its active decision. 404 if the account is
  unknown; ``state`` is null for a known account the engine has not scored yet.
- ``GET /v1/admin/risk/clusters?...``: the same listing for clusters of linked accounts.
- ``GET /v1/admin/risk/status``: whether the in-gateway engine runs, its counters and calibration.

The handlers take ``(runtime, request)``; ``admin.py`` wraps them with ``admin_endpoint`` (credential
check first, errors as OpenAI envelopes). Every store call runs in a worker thread. Replies hold plain
JSON built field by field from the store's dataclasses: account metadata is never returned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from antidistill.errors import InvalidRequestError, NotFoundError
from antidistill.gateway.http import JSONResponse
from antidistill.gateway.runtime import Runtime
from antidistill.risk.types import Finding
from antidistill.store.base import Decision, RiskState

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
DETAIL_FINDINGS = 50  # the latest findings shown for one account
DETAIL_DECISIONS = 50
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})

Handler = Callable[[Runtime, Request], Awaitable[Response]]


# -- serialization ------------------------------------------------------------------------------
def state_json(s: RiskState) -> dict[str, Any]:
    return {
        "subject_kind": s.subject_kind,
        "subject_id": s.subject_id,
        "score": s.score,
        "flagged": s.flagged,
        "reasons": list(s.reasons),
        "features": dict(s.features),
        "cluster": s.cluster,
        "requests_seen": s.requests_seen,
        "ts": s.ts,
        "updated_at": s.updated_at,
        "first_flagged_at": s.first_flagged_at,
        "last_finding_id": s.last_finding_id,
    }


def finding_json(finding_id: int, f: Finding) -> dict[str, Any]:
    return {"id": finding_id, **f.to_json()}


def decision_json(d: Decision) -> dict[str, Any]:
    return {
        "id": d.id,
        "ts": d.ts,
        "subject_kind": d.subject_kind,
        "subject_id": d.subject_id,
        "action": d.action,
        "actor": d.actor,
        "reason": d.reason,
        "finding_id": d.finding_id,
        "params": dict(d.params),
        "active": d.active,
        "reversed_at": d.reversed_at,
        "reversed_by": d.reversed_by,
    }


# -- query parameters ---------------------------------------------------------------------------
def _int_param(request: Request, name: str, default: int, lo: int, hi: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    bounds = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
    try:
        value = int(raw.strip())
    except ValueError:
        raise InvalidRequestError(f"{name} must be an integer {bounds}", param=name) from None
    if value < lo or (hi is not None and value > hi):
        raise InvalidRequestError(f"{name} must be an integer {bounds} (got {value})", param=name)
    return value


def _bool_param(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidRequestError(f"{name} must be true or false", param=name)


# -- handlers -----------------------------------------------------------------------------------
async def _list_subjects(rt: Runtime, request: Request, kind: str) -> Response:
    flagged = _bool_param(request, "flagged", False)
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 0, None)

    def work() -> dict[str, Any]:
        states = rt.store.top_risk(kind, limit=limit, offset=offset, flagged_only=flagged)
        return {
            "object": "list",
            "data": [state_json(s) for s in states],
            "flagged_total": rt.store.count_flagged(kind),
            "limit": limit,
            "offset": offset,
        }

    return JSONResponse(await anyio.to_thread.run_sync(work))


async def list_risk_accounts(rt: Runtime, request: Request) -> Response:
    return await _list_subjects(rt, request, "account")


async def list_risk_clusters(rt: Runtime, request: Request) -> Response:
    return await _list_subjects(rt, request, "cluster")


async def risk_account(rt: Runtime, request: Request) -> Response:
    ref = request.path_params["account_id"]

    def work() -> dict[str, Any] | None:
        account = rt.store.get_account(ref)  # by id or by name, like the CLI
        if account is None:
            return None
        aid = account.id
        state = rt.store.risk_state("account", aid)
        found = rt.store.findings_with_ids("account", aid, DETAIL_FINDINGS)
        decisions = rt.store.decisions_for("account", aid, DETAIL_DECISIONS)
        active = rt.store.active_decision("account", aid)
        return {
            "account": {
                "id": account.id,
                "name": account.name,
                "tier": account.tier,
                "status": account.status,
                "created_at": account.created_at,
            },
            "state": None if state is None else state_json(state),
            "findings": [finding_json(i, f) for i, f in found],
            "decisions": [decision_json(d) for d in decisions],
            "active_decision": None if active is None else decision_json(active),
        }

    body = await anyio.to_thread.run_sync(work)
    if body is None:
        raise NotFoundError(f"no account with id or name {ref!r:.80}", param="account_id")
    return JSONResponse(body)


async def risk_status(rt: Runtime, request: Request) -> Response:
    from antidistill.risk.worker import CURSOR, RiskWorker

    risk = rt.settings.risk
    worker = getattr(request.app.state, "risk_worker", None)
    running = isinstance(worker, RiskWorker)

    def work() -> dict[str, Any]:
        cursor = rt.store.get_cursor(CURSOR)
        return {
            "flagged_accounts": rt.store.count_flagged("account"),
            "flagged_clusters": rt.store.count_flagged("cluster"),
            "cursor_ts": None if cursor is None else cursor[0],
        }

    stored = await anyio.to_thread.run_sync(work)
    body: dict[str, Any] = {
        "enabled": risk.enabled,
        "running": running,
        "embedder": risk.embedder,
        "interval_s": risk.interval_s,
        "batch_size": risk.batch_size,
        "stats": None,
        "calibration": None,
        # what the store holds: also filled by an `antidistill analyze` process on a shared store
        "store": stored,
        "now": rt.clock.now(),
    }
    if isinstance(worker, RiskWorker):
        body["stats"] = asdict(worker.stats)  # a copy: the worker thread keeps counting
        body["lag_s"] = worker.lag_s
        cal = worker.engine.calibration
        if cal is not None:
            body["calibration"] = {
                "threshold": cal.threshold,
                "target_fpr": cal.target_fpr,
                "embedder": cal.embedder,
                "source": "file" if risk.calibration_file else "default",
            }
    return JSONResponse(body)


RISK_HANDLERS: list[tuple[str, Handler]] = [
    ("/v1/admin/risk/accounts", list_risk_accounts),
    ("/v1/admin/risk/accounts/{account_id}", risk_account),
    ("/v1/admin/risk/clusters", list_risk_clusters),
    ("/v1/admin/risk/status", risk_status),
]
"""(path, handler) of every GET route; ``admin.py`` wraps each handler with ``admin_endpoint``."""
