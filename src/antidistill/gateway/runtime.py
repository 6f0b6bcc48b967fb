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
    from antidistill.gateway.enforcement import Enforcer


class EventSink(Protocol):
    def submit(self, event: Event) -> None: ...


class Watermarker(Protocol):
    async def assign(self, account: Account, gen: GenerationRequest) -> WatermarkAssignment | None: ...


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
    extras: dict[str, Any] | None = None
