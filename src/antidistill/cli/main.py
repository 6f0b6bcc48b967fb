"""The ``antidistill`` command."""

from __future__ import annotations

import typer

from antidistill import __version__
from antidistill.cli import accounts, evaluate, keys, risk, watermark
from antidistill.cli.audit import audit
from antidistill.cli.serve import serve

app = typer.Typer(
    name="antidistill",
    help="Protect an LLM served over an API from distillation: detect, respond, watermark, prove.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"antidistill {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """antidistill command group."""


app.command("serve")(serve)
app.add_typer(keys.app, name="keys")
app.add_typer(accounts.app, name="accounts")
app.add_typer(accounts.policy_app, name="policy")
app.add_typer(watermark.app, name="watermark")
app.command("replay")(risk.replay_cmd)
app.command("analyze")(risk.analyze_cmd)
app.add_typer(risk.app, name="risk")
app.add_typer(evaluate.app, name="eval")
app.command("audit")(audit)


def main() -> None:
    app()
