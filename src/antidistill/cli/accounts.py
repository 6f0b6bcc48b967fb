"""``antidistill accounts``: show an account's risk and decisions; allow, block, throttle, reset it.

Decisions are stored with the actor ``operator:<--by>`` and applied by running gateways within
``policy.cache_ttl_s`` (a block at once: it also sets the account's status, read on every request).
"""

from __future__ import annotations

import getpass
import json
from typing import Any

import typer

from antidistill.cli.common import ConfigOption, DatabaseOption, cli_errors, settings_from
from antidistill.policy import Policy
from antidistill.policy import operator as op
from antidistill.store.base import Store
from antidistill.store.epoch import bump_epoch_sync

app = typer.Typer(help="Operators' view of an account, and their decisions on it.", no_args_is_help=True)

AccountArg = typer.Argument(..., help="Account id or name.")
ReasonOption = typer.Option("", "--reason", help="Why (stored with the decision).")
ByOption = typer.Option(None, "--by", help="Operator name, recorded as operator:NAME. [default: $USER]")


def _operator(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser() or "cli"
    except Exception:
        return "cli"


def _open(config: str | None, database_url: str | None) -> tuple[Store, Any]:
    from antidistill.store import open_store

    settings = settings_from(config, database_url=database_url)
    store = open_store(settings.database_url)
    store.migrate()
    return store, settings


def _echo(body: dict[str, Any]) -> None:
    typer.echo(json.dumps(body, indent=2, default=str))


@app.command("show")
@cli_errors
def show(
    account: str = AccountArg,
    history: int = typer.Option(op.HISTORY, "--history", min=1, help="Decisions shown, newest first."),
    config: str | None = ConfigOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """The account, its risk state and reasons, active decision, decision history and what the policy
    does to its requests now, as JSON."""
    from antidistill.gateway.admin_accounts import view_json

    store, settings = _open(config, database_url)
    try:
        policy = Policy.load(settings.policy.file)
        _echo(view_json(op.view(store, policy, account, history), settings.policy.enabled))
    finally:
        store.close()


def _decide(
    action: str,
    account: str,
    reason: str,
    by: str | None,
    config: str | None,
    database_url: str | None,
    params: dict[str, Any] | None = None,
) -> None:
    from antidistill.gateway.admin_accounts import account_json
    from antidistill.gateway.admin_risk import decision_json

    store, settings = _open(config, database_url)
    try:
        acc, decision = op.decide(store, account, action, _operator(by), reason, params)
    finally:
        store.close()
    # every replica applies it to the very next request
    bump_epoch_sync(settings.redis_url, settings.limits.shared.key_prefix)
    _echo({"account": account_json(acc), "decision": decision_json(decision)})


def _simple_decision(action: str, doc: str) -> None:
    """Register ``antidistill accounts <action>`` (decisions that take no params)."""

    def command(
        account: str = AccountArg,
        reason: str = ReasonOption,
        by: str | None = ByOption,
        config: str | None = ConfigOption,
        database_url: str | None = DatabaseOption,
    ) -> None:
        _decide(action, account, reason, by, config, database_url)

    command.__doc__ = doc
    app.command(action)(cli_errors(command))


_simple_decision(
    "allow", "Allow: no action on this account, even when the risk engine flags it (until another decision)."
)
_simple_decision(
    "block", "Block: every request gets 403 account_blocked (x-should-retry: false), from the next one on."
)
_simple_decision(
    "reset", "Reset: ignore the findings made so far; the policy applies again to later findings."
)


@app.command("throttle")
@cli_errors
def throttle(
    account: str = AccountArg,
    rpm: int | None = typer.Option(None, "--rpm", min=1, help="Requests per period."),
    tpm: int | None = typer.Option(None, "--tpm", min=1, help="Tokens per period."),
    period: float | None = typer.Option(None, "--period", help="Seconds per period. [default: 60]"),
    reason: str = ReasonOption,
    by: str | None = ByOption,
    config: str | None = ConfigOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Throttle with these limits (default: the tier's throttle in the policy), and nothing else."""
    params = {k: v for k, v in (("rpm", rpm), ("tpm", tpm), ("period_s", period)) if v is not None}
    _decide("throttle", account, reason, by, config, database_url, params)


@app.command("reverse")
@cli_errors
def reverse(
    account: str = AccountArg,
    by: str | None = ByOption,
    config: str | None = ConfigOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Reverse the active decision: the policy applies to the account's risk level again."""
    from antidistill.gateway.admin_accounts import account_json
    from antidistill.gateway.admin_risk import decision_json

    store, settings = _open(config, database_url)
    try:
        acc, reversed_ = op.reverse(store, account, _operator(by))
    finally:
        store.close()
    bump_epoch_sync(settings.redis_url, settings.limits.shared.key_prefix)
    _echo({"account": account_json(acc), "reversed": decision_json(reversed_)})


policy_app = typer.Typer(help="The enforcement policy.", no_args_is_help=True)


@policy_app.command("show")
@cli_errors
def policy_show(
    file: str | None = typer.Option(None, "--file", help="Policy file to check. [default: policy.file]"),
    config: str | None = ConfigOption,
) -> None:
    """Validate the policy (the shipped defaults merged with the file) and print it as JSON."""
    settings = settings_from(config)
    policy = Policy.load(file or settings.policy.file)
    _echo({"source": policy.source, **policy.config.model_dump()})
