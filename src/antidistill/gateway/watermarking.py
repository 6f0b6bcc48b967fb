"""Chooses the watermark of each request: the account's current key, applied at sampling time."""

from __future__ import annotations

import logging

import anyio

from antidistill.backends.base import Backend, GenerationRequest, WatermarkAssignment
from antidistill.gateway.runtime import Watermarker
from antidistill.settings import Settings
from antidistill.store.base import Account, Store
from antidistill.watermark.keys import Keyring
from antidistill.watermark.keystore import KeyDirectory, load_master_secret
from antidistill.watermark.sampler import WatermarkSampler

log = logging.getLogger("antidistill.gateway")


class AccountWatermarker:
    """Marks every answer with its account's key (per-account keys name the harvester)."""

    def __init__(self, directory: KeyDirectory) -> None:
        self.directory = directory

    async def assign(self, account: Account, gen: GenerationRequest) -> WatermarkAssignment | None:
        key = self.directory.peek("account", account.id)
        if key is None:
            key = await anyio.to_thread.run_sync(self.directory.current, "account", account.id)
        return WatermarkSampler.for_key(key).assignment()


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
