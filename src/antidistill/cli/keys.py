"""``antidistill keys``: accounts and their API keys."""

from __future__ import annotations

import datetime as dt
import json

import typer

from antidistill.cli.common import ConfigOption, DatabaseOption, cli_errors, fail, settings_from
from antidistill.store.base import TIERS, Store
from antidistill.store.epoch import bump_epoch_sync

app = typer.Typer(
    help="Create, list and revoke API keys (and the accounts that own them).", no_args_is_help=True
)


def _open(config: str | None, database_url: str | None) -> Store:
    from antidistill.store import open_store

    settings = settings_from(config, database_url=database_url)
    store = open_store(settings.database_url)
    store.migrate()
    return store


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@app.command("create")
@cli_errors
def create(
    account: str = typer.Argument(..., help="Account name (created if it does not exist)."),
    tier: str = typer.Option("standard", help=f"Account tier: {' | '.join(TIERS)} (used by policies)."),
    meta: list[str] = typer.Option([], "--meta", help="Account metadata as key=value; repeatable."),
    label: str = typer.Option("", help="Free-text label of this key."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    config: str | None = ConfigOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Create an API key (shown once, stored only as a hash)."""
    if tier not in TIERS:
        fail(f"tier must be one of {', '.join(TIERS)}")
    metadata: dict[str, str] = {}
    for item in meta:
        k, sep, v = item.partition("=")
        if not sep or not k:
            fail(f"--meta expects key=value, got {item!r}")
        metadata[k] = v
    store = _open(config, database_url)
    try:
        acc = store.get_account(account) or store.create_account(account, tier, metadata)
        token, key = store.create_api_key(acc.id, label=label)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps({"api_key": token, "key_id": key.id, "account": acc.name, "tier": acc.tier}))
    else:
        typer.echo(f"account: {acc.name} (tier {acc.tier})\nkey id:  {key.id}\napi key: {token}")
        typer.echo("Store the api key now: it is not shown again.", err=True)


@app.command("list")
@cli_errors
def list_keys(
    account: str | None = typer.Option(None, help="Only this account's keys."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
    config: str | None = ConfigOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """List keys (never their secrets)."""
    store = _open(config, database_url)
    try:
        account_id = None
        if account is not None:
            acc = store.get_account(account)
            if acc is None:
                fail(f"no account named {account!r}")
            assert acc is not None
            account_id = acc.id
        names = {a.id: a for a in store.list_accounts(limit=100_000)}
        keys = store.list_api_keys(account_id)
    finally:
        store.close()
    if as_json:
        for k in keys:
            acc_ = names.get(k.account_id)
            typer.echo(
                json.dumps(
                    {
                        "key_id": k.id,
                        "account": acc_.name if acc_ else k.account_id,
                        "tier": acc_.tier if acc_ else None,
                        "created_at": k.created_at,
                        "revoked_at": k.revoked_at,
                        "label": k.label,
                    }
                )
            )
        return
    typer.echo(f"{'KEY ID':<14} {'ACCOUNT':<24} {'TIER':<9} {'CREATED':<21} {'REVOKED':<21} LABEL")
    for k in keys:
        acc_ = names.get(k.account_id)
        typer.echo(
            f"{k.id:<14} {(acc_.name if acc_ else k.account_id)[:24]:<24} {(acc_.tier if acc_ else '?'):<9} "
            f"{_when(k.created_at):<21} {_when(k.revoked_at):<21} {k.label}"
        )


@app.command("revoke")
@cli_errors
def revoke(
    key_id: str = typer.Argument(..., help="Key id (the part after 'ad-' in the api key)."),
    config: str | None = ConfigOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Revoke a key. Takes effect on the next request, on every gateway replica."""
    store = _open(config, database_url)
    try:
        ok = store.revoke_api_key(key_id)
    finally:
        store.close()
    if not ok:
        fail(f"no active key with id {key_id!r}")
    settings = settings_from(config, database_url=database_url)
    bump_epoch_sync(settings.redis_url, settings.limits.shared.key_prefix)
    typer.echo(f"revoked {key_id}")
