"""Chooses the watermark of each request: the account's current key, applied at sampling time."""

from __future__ import annotations

import logging

import anyio

from antidistill.backends.base import Backend, GenerationRequest, WatermarkAssignment
from antidistill.gateway.runtime import Watermarker
from antidistill.settings import Settings
from antidistill.store.base import Account, Store
from antidistill.watermark.keys import Keyring, WatermarkKey
from antidistill.watermark.keystore import KeyDirectory, load_master_secret
from antidistill.watermark.sampler import CanarySampler, WatermarkSampler

log = logging.getLogger("antidistill.gateway")
CANARY_KEY_SCHEME = "kgw"  # the registry name of the canary scheme (policy: kgw_canary)


class AccountWatermarker:
    """Marks every answer with its account's key (per-account keys name the harvester); under the
    policy's ``watermark_canary`` action, also with the account's KGW canary key (``CanarySampler``).
    Both keys are recorded in the store on first use, so an audit tests them."""

    def __init__(self, directory: KeyDirectory) -> None:
        self.directory = directory

    async def _key(self, account: Account, scheme: str | None = None) -> WatermarkKey:
        key = self.directory.peek("account", account.id, scheme)
        if key is None:
            key = await anyio.to_thread.run_sync(self.directory.current, "account", account.id, scheme)
        return key

    async def assign(
        self, account: Account, gen: GenerationRequest, canary: bool = False
    ) -> WatermarkAssignment | None:
        base = WatermarkSampler.for_key(await self._key(account))
        if not canary:
            return base.assignment()
        return CanarySampler(base, await self._key(account, CANARY_KEY_SCHEME)).assignment()


def build_watermarker(settings: Settings, backend: Backend, store: Store) -> Watermarker | None:
    if not settings.watermark.enabled:
        log.warning("watermarking is disabled (watermark.enabled = false): answers are served unmarked")
        return None
    vocabulary = getattr(backend, "watermark_vocabulary", None)
    info = vocabulary() if callable(vocabulary) else None
    if info is None:
        log.warning(
            "backend %r does not sample through antidistill, so the gateway cannot watermark its answers; "
            "run vLLM with antidistill's logits processor (docs/vllm.md) to mark them at the source",
            backend.name,
        )
        return None
    tokenizer, vocab_size = info
    keyring = Keyring(load_master_secret(settings.watermark), tokenizer, vocab_size)
    return AccountWatermarker(KeyDirectory(keyring, store))
