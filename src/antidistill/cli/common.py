"""Shared CLI plumbing: settings from --config + env + flags, and the one-line error edge."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from antidistill.errors import AntidistillError
from antidistill.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

ConfigOption = typer.Option(
    None, "--config", "-c", help="TOML settings file (see README). Environment: ANTIDISTILL_* variables."
)
DatabaseOption = typer.Option(
    None,
    "--database-url",
    help="sqlite:///path or postgresql://user@host/db. [default: sqlite:///./data/antidistill.db]",
)


def settings_from(config: str | None, **overrides: Any) -> Settings:
    return load_settings(config, overrides)


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"antidistill: error: {message}", err=True)
    raise typer.Exit(code)


def cli_errors(fn: F) -> F:
    """Translate the error hierarchy into one clear line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AntidistillError as e:
            typer.echo(f"antidistill: error: {e.message}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
