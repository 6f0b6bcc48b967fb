"""The durable store: accounts, API keys, the event log and the risk engine's findings and
decisions, on SQLite (default) or PostgreSQL.

``open_store(url)`` picks the implementation from the URL scheme through a plain registry
(third parties add schemes with the ``antidistill.stores`` entry-point group);
``EventWriter`` batches the gateway's events into it off the hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

from antidistill.errors import ConfigError
from antidistill.store.base import (
    ACCOUNT_STATUSES,
    DECISION_ACTIONS,
    SUBJECT_KINDS,
    TIERS,
    Account,
    AlreadyExistsError,
    ApiKey,
    Decision,
    Event,
    Finding,
    RejectedDataError,
    RiskState,
    Store,
)
from antidistill.store.sql import SqlStore
from antidistill.store.writer import EventWriter

StoreFactory = Callable[[str], Store]

STORES: dict[str, StoreFactory] = {
    "sqlite": SqlStore,
    "postgres": SqlStore,
    "postgresql": SqlStore,
    "postgresql+psycopg": SqlStore,
}


def _plugin_stores() -> dict[str, StoreFactory]:
    return {ep.name: ep.load() for ep in entry_points(group="antidistill.stores")}


def open_store(url: str) -> Store:
    """The Store for ``url`` (not migrated yet: call ``migrate()``). ConfigError for unknown schemes."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    factory = STORES.get(scheme) or _plugin_stores().get(scheme)
    if factory is None:
        known = ", ".join(sorted({*STORES, *_plugin_stores()}))
        raise ConfigError(f"unknown database URL scheme {scheme!r} in the database URL (known: {known})")
    return factory(url)


__all__ = [
    "ACCOUNT_STATUSES",
    "DECISION_ACTIONS",
    "STORES",
    "SUBJECT_KINDS",
    "TIERS",
    "Account",
    "AlreadyExistsError",
    "ApiKey",
    "Decision",
    "Event",
    "EventWriter",
    "Finding",
    "RejectedDataError",
    "RiskState",
    "SqlStore",
    "Store",
    "open_store",
]
