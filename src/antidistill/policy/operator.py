"""Operators' decisions on an account, shared by the CLI (``antidistill accounts ...``) and the admin
API (``/v1/admin/accounts/{account}/decision``). Synchronous store calls: async callers use a thread.

A decision is stored with the actor ``operator:<name>``, the reason and the account's latest finding
(the evidence the operator saw). It supersedes the account's active decision; an operator decision
is never superseded by the engine (see ``Store.record_engine_decision``).

A block also sets the account's status to ``blocked``, which authentication reads on every request:
so the very next request of that account is refused by every replica, whatever their decision
caches hold. Any other decision, and reversing a block, sets the status back to ``active``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from antidistill.errors import InvalidRequestError, NotFoundError
from antidistill.policy.config import ThrottleConfig
from antidistill.policy.evaluate import OPERATOR_PREFIX, Policy, PolicyDecision
from antidistill.store.base import Account, Decision, RiskState, Store

OPERATOR_DECISIONS: tuple[str, ...] = ("allow", "block", "throttle", "strip_reasoning", "reverify", "reset")
MAX_NAME = 100
HISTORY = 50


def actor_of(name: str) -> str:
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > MAX_NAME or any(c.isspace() for c in name):
        raise InvalidRequestError(
            f"operator name must be 1-{MAX_NAME} characters without spaces (got {name!r:.80})", param="by"
        )
    return OPERATOR_PREFIX + name


def check_params(action: str, params: Any) -> dict[str, Any]:
    """Throttle takes ``rpm``/``tpm``/``period_s`` (all optional: the tier's throttle otherwise);
    the other decisions take none."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidRequestError("params must be a JSON object", param="params")
    if not params:
        return {}
    if action != "throttle":
        raise InvalidRequestError(f"the {action} decision takes no params", param="params")
    try:
        cfg = ThrottleConfig.model_validate(params)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "params"
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise InvalidRequestError(f"invalid throttle params: {where}: {msg}", param="params") from None
    return cfg.model_dump(exclude_none=True)


def find_account(store: Store, ref: str) -> Account:
    account = store.get_account(ref)
    if account is None:
        raise NotFoundError(f"no account with id or name {ref!r:.80}", param="account")
    return account


def _set_status(store: Store, account: Account, status: str) -> Account:
    if account.status == status:
        return account
    return store.update_account(account.id, status=status)


def decide(
    store: Store, ref: str, action: str, by: str, reason: str = "", params: Any = None
) -> tuple[Account, Decision]:
    """Record an operator decision on the account ``ref`` (id or name); see the module docstring."""
    if action not in OPERATOR_DECISIONS:
        raise InvalidRequestError(
            f"action must be one of {', '.join(OPERATOR_DECISIONS)} (got {action!r:.80})", param="action"
        )
    if not isinstance(reason, str):
        raise InvalidRequestError("reason must be a string", param="reason")
    actor = actor_of(by)
    clean = check_params(action, params)
    account = find_account(store, ref)
    state = store.risk_state("account", account.id)
    finding_id = None if state is None else state.last_finding_id
    decision = store.record_decision("account", account.id, action, actor, reason, finding_id, clean)
    account = _set_status(store, account, "blocked" if action == "block" else "active")
    return account, decision


def reverse(store: Store, ref: str, by: str) -> tuple[Account, Decision]:
    """Reverse the account's active decision (it then has none: the policy applies to its risk
    level). NotFoundError when there is none."""
    actor = actor_of(by)
    account = find_account(store, ref)
    active = store.active_decision("account", account.id)
    if active is None or not store.reverse_decision(active.id, actor):
        raise NotFoundError(f"account {account.name!r} has no active decision", param="account")
    if active.action == "block":
        account = _set_status(store, account, "active")
    now = next((d for d in store.decisions_for("account", account.id, HISTORY) if d.id == active.id), None)
    return account, now or dataclasses.replace(active, active=False, reversed_by=actor)


@dataclass(frozen=True)
class AccountView:
    account: Account
    state: RiskState | None
    active: Decision | None
    history: list[Decision]
    policy: PolicyDecision


def view(store: Store, policy: Policy, ref: str, history: int = HISTORY) -> AccountView:
    """An account with its risk state, active decision, decision history (newest first) and what the
    policy does to its requests now."""
    account = find_account(store, ref)
    state = store.risk_state("account", account.id)
    active = store.active_decision("account", account.id)
    decisions = store.decisions_for("account", account.id, history)
    return AccountView(account, state, active, decisions, policy.evaluate(account.tier, state, active))
