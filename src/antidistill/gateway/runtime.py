"""The runtime objects of one gateway app, built in its lifespan and kept on ``app.state.rt``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from antidistill.backends.base import Backend, GenerationRequest, WatermarkAssignment
from antidistill.clock import Clock
from antidistill.gateway.metrics import GatewayMetrics
from antidistill.settings import Settings
from antidistill.store.base import Account, Event, Store

if TYPE_CHECKING:
    from antidistill.gateway.auth_cache import AuthCache
    from antidistill.gateway.canaries import CanaryServer
    from antidistill.gateway.enforcement import Enforcer


class EventSink(Protocol):
    def submit(self, event: Event) -> None: ...


class Watermarker(Protocol):
    async def assign(
        self, account: Account, gen: GenerationRequest, canary: bool = False
    ) -> WatermarkAssignment | None: ...


@dataclass
class Runtime:
    settings: Settings
    store: Store
    events: EventSink
    backend: Backend
    metrics: GatewayMetrics
    clock: Clock
    watermarker: Watermarker | None = None
    enforcer: Enforcer | None = None  # None when policy.enabled is false
    auth: AuthCache | None = None  # None: authentication reads the store on every request
    canaries: CanaryServer | None = None  # None: no canary sentences (disabled, or no secret)
    extras: dict[str, Any] | None = None

    async def operator_changed(self, account_id: str | None = None) -> None:
        """After an operator change is committed: apply it to the very next request here, and on
        every replica when they share Redis (gateway/auth_cache.py)."""
        if self.auth is not None:  # drops every cache here (on_change) and tells the other replicas
            await self.auth.announce()
        elif self.enforcer is not None:
            if account_id is not None:
                self.enforcer.forget(account_id)
            else:
                self.enforcer.forget_all()
