"""The command line: version, help, keys create/list/revoke, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from antidistill import __version__
from antidistill.cli.main import app
from antidistill.store import open_store

runner = CliRunner()


def test_version_and_help() -> None:
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = runner.invoke(app, ["serve", "--help"])
    assert r.exit_code == 0
    for opt in ("--config", "--database-url", "--backend", "--upstream-url", "--port", "--max-batch-size"):
        assert opt in r.output


def test_keys_lifecycle(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    r = runner.invoke(
        app,
        ["keys", "create", "acme", "--tier", "trusted", "--meta", "org=Acme", "--json", "--database-url", db],
    )
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout.strip().splitlines()[-1])
    assert created["api_key"].startswith("ad-") and created["tier"] == "trusted"

    store = open_store(db)
    try:
        found = store.authenticate(created["api_key"])
        assert found is not None and found[1].metadata == {"org": "Acme"}
    finally:
        store.close()

    r = runner.invoke(app, ["keys", "list", "--database-url", db])
    assert r.exit_code == 0 and created["key_id"] in r.output and "acme" in r.output
    assert created["api_key"] not in r.output  # the secret is never listed

    r = runner.invoke(app, ["keys", "revoke", created["key_id"], "--database-url", db])
    assert r.exit_code == 0
    store = open_store(db)
    try:
        assert store.authenticate(created["api_key"]) is None
    finally:
        store.close()
    r = runner.invoke(app, ["keys", "revoke", created["key_id"], "--database-url", db])
    assert r.exit_code == 2 and "no active key" in r.output


def test_clear_errors_exit_2(tmp_path: Path) -> None:
    r = runner.invoke(
        app, ["keys", "create", "x", "--tier", "gold", "--database-url", f"sqlite:///{tmp_path}/a.db"]
    )
    assert r.exit_code == 2 and "tier must be one of" in r.output
    r = runner.invoke(app, ["keys", "list", "--database-url", "mysql://nope"])
    assert r.exit_code == 2 and "database_url" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport=1")
    r = runner.invoke(app, ["keys", "list", "--config", str(bad)])
    assert r.exit_code == 2 and "not valid TOML" in r.output
    cfg = tmp_path / "unknown.toml"
    cfg.write_text("[server]\nprot = 1\n")
    r = runner.invoke(app, ["keys", "list", "--config", str(cfg)])
    assert r.exit_code == 2 and "server.prot" in r.output
